"""The optimisation toolbox (camtl/optimisation.py): loss weightings and gradient aggregation.

* a task absent from a batch keeps its weight and its state (uncertainty's log-variance, even under AdamW's
  momentum and weight decay; DWA's averages); random weights are a function of (seed, batch);
* equal weighting is the model's loss itself; uncertainty weighting at its start equals it;
* short real runs (a tiny 2-layer BERT, real GLUE rows) with each option, and an interrupted uncertainty-weighted
  run resumed from its checkpoint ends exactly as the uninterrupted one (log-variances included).
"""

import shlex
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train
from camtl import trainer
from camtl.optimisation import (
    DynamicWeightAverage,
    RandomWeighting,
    UncertaintyWeighting,
    make_loss_weighting,
    weighted_batch_loss,
)
from tests.camtl_fixtures import tiny_checkpoint

PRESENT_ALL = torch.tensor([True, True, True])
WITHOUT_2 = torch.tensor([True, True, False])


def _loss(weighting, present, task_losses):
    w, r = weighting.weights(present)
    return (w * task_losses)[present].sum() / present.sum() + r


def test_uncertainty_absent_task_keeps_its_log_variance_under_adamw():
    weighting = UncertaintyWeighting([True] * 3)
    # weight decay on, to show that the absent task is skipped altogether, not merely given a zero gradient
    optimizer = torch.optim.AdamW(weighting.parameters(), lr=0.1, weight_decay=0.1)
    losses = torch.tensor([1.5, 2.0, 3.0])
    _loss(weighting, PRESENT_ALL, losses).backward()
    optimizer.step()
    optimizer.zero_grad()
    before = [p.detach().clone() for p in weighting.log_vars]
    assert all(b != 0 for b in before)  # all three moved at the first step; Adam now has momentum for each
    _loss(weighting, WITHOUT_2, losses).backward()
    assert weighting.log_vars[2].grad is None
    optimizer.step()
    assert torch.equal(weighting.log_vars[2].detach(), before[2])
    assert weighting.log_vars[0] != before[0] and weighting.log_vars[1] != before[1]
    w, _ = weighting.weights(PRESENT_ALL)
    assert w[2].item() == pytest.approx(float(torch.exp(-before[2])))


def test_uncertainty_gradient_is_kendalls():
    weighting = UncertaintyWeighting([True] * 2)
    with torch.no_grad():
        weighting.log_vars[0].fill_(0.5)
    losses = torch.tensor([2.0, 3.0])
    _loss(weighting, torch.tensor([True, True]), losses).backward()
    # d/ds (exp(-s) L + s) / 2 = (1 - exp(-s) L) / 2
    assert weighting.log_vars[0].grad == pytest.approx((1 - torch.exp(torch.tensor(-0.5)) * 2.0) / 2)
    assert weighting.log_vars[1].grad == pytest.approx((1 - 3.0) / 2)


def test_dwa_by_hand_and_an_absent_task_keeps_its_averages():
    dwa = DynamicWeightAverage([True] * 3, temperature=2.0, period=2)
    nan = float("nan")
    for losses in (
        [1.0, 2.0, 4.0],
        [1.0, 2.0, 4.0],  # period 1: averages 1, 2, 4
        [0.5, 2.0, nan],
        [0.5, 2.0, nan],
    ):  # period 2: task 2 absent
        assert torch.equal(dwa.weights(PRESENT_ALL)[0], torch.ones(3))  # ratios unknown until two periods
        dwa.observe(torch.tensor(losses))
    assert dwa.averages[1, 2] == 4.0 and torch.isnan(dwa.averages[0, 2])  # task 2's period-1 average, kept
    assert dwa.averages[:, 0].tolist() == [1.0, 0.5]
    w, r = dwa.weights(PRESENT_ALL)
    ratios = torch.tensor([0.5 / 1.0, 2.0 / 2.0, 1.0])  # task 2: still unknown, 1
    assert torch.allclose(w, 3 * torch.softmax(ratios / 2.0, 0)) and r == 0
    assert w.sum() == pytest.approx(3.0)
    w_without, _ = dwa.weights(WITHOUT_2)
    assert torch.equal(w_without, w)  # an absent task does not change the others' weights either


def test_dwa_weights_span_the_trained_tasks_only():
    dwa = DynamicWeightAverage([True, False, True], period=1)
    w, _ = dwa.weights(torch.tensor([True, False, True]))
    assert w.tolist() == [1.0, 0.0, 1.0]


def test_random_weights_are_a_function_of_seed_and_batch_over_the_present_tasks():
    a, b = RandomWeighting([True] * 3, seed=7), RandomWeighting([True] * 3, seed=7)
    first, _ = a.weights(WITHOUT_2)
    assert torch.equal(first, b.weights(WITHOUT_2)[0])  # two processes draw the same
    assert first[2] == 0 and first[:2].sum() == pytest.approx(2.0)
    a.observe(torch.tensor([1.0, 1.0, float("nan")]))
    assert not torch.equal(a.weights(WITHOUT_2)[0], first)  # a new draw each batch
    assert not torch.equal(RandomWeighting([True] * 3, seed=8).weights(WITHOUT_2)[0], first)


def test_unknown_weighting_names_the_choices():
    with pytest.raises(ValueError, match=r"valid weightings: \['equal', 'uncertainty', 'dwa', 'random'\]"):
        make_loss_weighting("famo", [True])


# ----- on the model ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer

    from modeling_camtl import CaMtlForMultiTask

    model = CaMtlForMultiTask.from_pretrained(tiny_checkpoint()).eval()  # no dropout: two forwards are equal
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint())
    enc = tok(["a fine film", "dull", "it rains", "the cat sat", "no", "yes it is"], padding=True, return_tensors="pt")
    batch = {
        **enc,
        "task_ids": torch.tensor([0, 0, 2, 2, 2, 1]),
        "labels": torch.tensor([1.0, 0.0, 3.5, 1.0, 0.2, 1.0]),
    }
    return model, batch


def _fake_run(model, batch, weighting):
    num_tasks = len(model.config.tasks)
    return SimpleNamespace(
        accelerator=SimpleNamespace(
            num_processes=1, backward=lambda loss: loss.backward(), device="cpu", unwrap_model=lambda m: m
        ),
        model=model,
        tasks=model.config.tasks,
        batches=SimpleNamespace(task_counts=torch.bincount(batch["task_ids"], minlength=num_tasks)),
        weighting=weighting,
        aggregator=None,
    )


def test_equal_is_the_models_loss_exactly_and_uncertainty_starts_there(tiny):
    model, batch = tiny
    trained = [True] * len(model.config.tasks)
    want = model(**batch).loss
    loss, _ = trainer._forward_backward(_fake_run(model, batch, make_loss_weighting("equal", trained)), batch)
    assert torch.equal(loss, want)
    want_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    loss, _ = trainer._forward_backward(_fake_run(model, batch, make_loss_weighting("uncertainty", trained)), batch)
    got_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    assert len(got_grads) == len(want_grads)
    assert all(torch.allclose(g, w, atol=1e-7, rtol=1e-5) for g, w in zip(got_grads, want_grads))


def test_weighted_batch_loss_by_hand():
    per_example = torch.tensor([1.0, 3.0, 2.0])
    task_ids = torch.tensor([0, 0, 1])
    counts = torch.tensor([2, 1, 0])
    loss = weighted_batch_loss(per_example, task_ids, counts, 1, torch.tensor([2.0, 0.5, 9.0]), torch.tensor(0.25))
    assert loss.item() == pytest.approx((2.0 * 2.0 + 0.5 * 2.0) / 2 + 0.25)


# ----- real runs ------------------------------------------------------------------------------------------------------
def tiny_run_args(glue_dir, out, *extra):
    """A 2-layer 32-wide BERT on 24 real rows of three GLUE tasks: a few steps of 6 rows."""
    return [
        "--output_dir",
        str(out),
        "--model.base_model",
        str(tiny_checkpoint().parent / "bert"),
        "--data.data_dir",
        str(glue_dir),
        "--data.tasks",
        "[cola, stsb, rte]",
        "--data.max_train_rows",
        "24",
        "--data.max_eval_rows",
        "8",
        "--data.max_length",
        "32",
        "--train.batch_size",
        "6",
        "--train.eval_batch_size",
        "16",
        "--train.learning_rate",
        "1e-3",
        "--train.max_steps",
        "4",
        "--train.eval_every",
        "0",
        "--train.save_every",
        "2",
        "--train.log_every",
        "1",
        "--train.report_to",
        "none",
        "--train.mixed_precision",
        "no",
        *extra,
    ]


def run(args):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return train.train(train.parse_config(args, exit_on_error=False), command_line="train.py " + shlex.join(args))


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa", "random"])
def test_each_weighting_trains(glue_dir, tmp_path, weighting):
    results = run(
        tiny_run_args(
            glue_dir,
            tmp_path / weighting,
            "--train.loss_weighting",
            weighting,
            "--train.dwa_period",
            "2",
            "--sampling.strategy",
            "proportional",
        )
    )
    assert results["steps"] == 4
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in results["loss_history"])


def test_uncertainty_weighting_resumes_exactly_with_its_log_variances(glue_dir, tmp_path):
    extra = ("--train.loss_weighting", "uncertainty", "--sampling.strategy", "proportional")
    whole = run(tiny_run_args(glue_dir, tmp_path / "whole", *extra))
    stopped = run(tiny_run_args(glue_dir, tmp_path / "cut", *extra, "--train.max_steps_this_run", "2"))
    assert stopped["interrupted"] and stopped["step"] == 2
    saved = torch.load(tmp_path / "cut" / "checkpoints" / "checkpoint-2" / "custom_checkpoint_1.pkl", weights_only=True)
    assert any(torch.as_tensor(v).ne(0).any() for k, v in saved.items() if k.startswith("log_vars."))  # trained
    resumed = run(tiny_run_args(glue_dir, tmp_path / "cut", *extra, "--resume_from_checkpoint", "latest"))
    assert resumed["resumed_exactly"] is True
    assert [e["loss"] for e in resumed["loss_history"]] == [e["loss"] for e in whole["loss_history"]]
    last = torch.load(tmp_path / "cut" / "checkpoints" / "checkpoint-4" / "custom_checkpoint_1.pkl", weights_only=True)
    want = torch.load(
        tmp_path / "whole" / "checkpoints" / "checkpoint-4" / "custom_checkpoint_1.pkl", weights_only=True
    )
    assert all(torch.equal(torch.as_tensor(last[k]), torch.as_tensor(want[k])) for k in want)


# ----- gradient aggregation -------------------------------------------------------------------------------------------
#: two conflicting gradients (g1 . g2 = -1 < 0)
G1, G2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
#: PCGrad (Yu et al. 2020, Algorithm 1) by hand: each gradient minus its projection on the other, then summed:
#: g1 - (g1.g2 / |g2|^2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5); g2 - (g2.g1 / |g1|^2) g1 = (-1, 1) + (1, 0) = (0, 1)
PCGRAD_BY_HAND = torch.tensor([0.5, 1.5])


class _Toy(torch.nn.Module):
    """Row i's loss is ``theta . x_i + phi``: the per-task gradients of theta are the rows' x."""

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(2))
        self.phi = torch.nn.Parameter(torch.zeros(()))


def _toy_backward(aggregation, x, task_ids, counts, world=1):
    from camtl.optimisation import aggregated_backward, make_aggregator

    model = _Toy()
    per_example = x @ model.theta + model.phi  # (b,)
    accelerator = SimpleNamespace(num_processes=world, gradient_accumulation_steps=1)
    loss = aggregated_backward(
        model,
        per_example,
        task_ids,
        counts,
        torch.ones(len(counts)),
        torch.zeros(()),
        accelerator,
        make_aggregator(aggregation),
        ["theta"],
        [],
        seed=0,
        draw=0,
    )
    return model, loss


def test_pcgrad_step_on_two_conflicting_gradients_is_the_published_projection():
    model, loss = _toy_backward("pcgrad", torch.stack([G1, G2]), torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert torch.allclose(model.theta.grad, PCGRAD_BY_HAND)
    assert model.phi.grad.item() == pytest.approx(1.0)  # not aggregated: the gradient of the mean of the two losses
    assert loss.item() == 0.0


def test_per_task_gradients_are_the_task_means_of_a_mixed_batch():
    # task 0 has two rows (mean gradient G1), task 1 one (G2): the split by task gives PCGrad the same matrix
    x = torch.stack([G1 + torch.tensor([0.5, 0.0]), G1 - torch.tensor([0.5, 0.0]), G2])
    model, _ = _toy_backward("pcgrad", x, torch.tensor([0, 0, 1]), torch.tensor([2, 1]))
    assert torch.allclose(model.theta.grad, PCGRAD_BY_HAND)


@pytest.mark.parametrize("aggregation", ["pcgrad", "cagrad", "upgrad", "mgda", "imtl_g"])
def test_no_conflict_no_change_of_direction(aggregation):
    # two equal gradients: every aggregator keeps their direction
    model, _ = _toy_backward(aggregation, torch.stack([G1, G1]), torch.tensor([0, 1]), torch.tensor([1, 1]))
    grad = model.theta.grad
    assert grad[0] > 0 and grad[1].abs() < 1e-4 * grad[0]


def test_aggregation_needs_a_mixed_sampler_and_names_the_choices():
    from camtl.config import RunConfig, validate_optimisation

    cfg = RunConfig()
    cfg.train.gradient_aggregation = "pcgrad"
    with pytest.raises(ValueError, match="use sampling.strategy mixed"):
        validate_optimisation(cfg)
    cfg.sampling.strategy = "mixed"
    validate_optimisation(cfg)
    cfg.train.gradient_aggregation = "nash"
    with pytest.raises(ValueError, match=r"valid: \['none', 'pcgrad', 'cagrad', 'upgrad', 'mgda', 'imtl_g'\]"):
        validate_optimisation(cfg)


def test_mixed_sampler_holds_every_task_in_every_batch():
    from camtl.sampling import MixedSampler, make_sampler

    sampler = make_sampler("mixed", [100, 10, 5], 8, seed=3)
    counts = []
    for _ in range(200):
        sampler.next_batch()
        counts.append(sampler.last_task_counts.copy())
    counts = torch.from_numpy(np.array(counts))
    assert (counts >= 1).all() and (counts.sum(1) == 8).all()
    # the 5 rows beyond the floor go by task size: task 0's share ~ 1 + 5 * 100 / 115
    assert counts[:, 0].float().mean().item() == pytest.approx(1 + 5 * 100 / 115, abs=0.2)
    with pytest.raises(ValueError, match="min_rows_per_task"):
        MixedSampler([1, 1, 1], 2)


def test_aggregation_params_subsets(tiny):
    from camtl.optimisation import aggregation_parameters

    model, _ = tiny
    shared = aggregation_parameters(model, "shared")
    top = aggregation_parameters(model, "conditioning_and_top")
    assert shared and set(top) < set(shared)
    assert not any(n.startswith("heads.") or "camtl_task.embedding" in n for n in shared)
    assert any("camtl_" in n for n in top) and any(".pooler." in n for n in top)
    assert not any("encoder.layer.0.attention.self.query" in n for n in top)


@pytest.mark.parametrize("aggregation", ["pcgrad", "cagrad", "upgrad", "mgda", "imtl_g"])
def test_each_aggregation_trains(glue_dir, tmp_path, aggregation):
    results = run(
        tiny_run_args(
            glue_dir,
            tmp_path / aggregation,
            "--train.gradient_aggregation",
            aggregation,
            "--sampling.strategy",
            "mixed",
            "--train.max_steps",
            "3",
            "--train.save_every",
            "0",
            *(("--train.aggregation_params", "conditioning_and_top") if aggregation == "upgrad" else ()),
        )
    )
    assert results["steps"] == 3 and results["sampling"] == {"strategy": "mixed", "min_rows_per_task": 1}
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in results["loss_history"])
    assert all(len(e["tasks"]) == 3 for e in results["loss_history"])  # every task in every step


def test_benchmark_ratios_are_paired_by_round():
    from benchmarks.optimisation import paired_ratios

    # round 2 is slow for both: paired ratios stay 2, unpaired medians would not see it as noise
    times = {"default": [1.0, 3.0, 1.0], "pcgrad": [2.0, 6.0, 2.0]}
    assert paired_ratios(times, "default") == {"default": 1.0, "pcgrad": 2.0}
