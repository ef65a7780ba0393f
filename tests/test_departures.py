"""Our departures from the paper and the authors' code (README, "Departures from the paper and the authors' code"):
each switch's two sides, identity at initialisation where the design allows it, the block-diagonal bias against
naive references, the task embedding's gradient, and old checkpoints loading unchanged. Tiny configs (hidden 32)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from camtl.sampling import score_sources
from modeling_camtl import CAMTL_PRESETS, CaMtlConfig, CaMtlForMultiTask
from tests.test_modeling import AUTHORS, TASKS, make_inputs, make_labels, randomize_conditioning, tiny_config
from tests.test_sampling import (
    EntropySampler,
    tiny,  # noqa: F401  (a fixture: the tiny model, data and collator of the scorer tests)
)

FIXTURE = Path(__file__).parent / "fixtures" / "camtl_2c9ef38"
KNOBS = dict(task_embedding_dim=8, adapter_size=6, conditional_attention_blocks=2, conditional_attention_span=8)
#: Each switch on the authors' side alone, for the identity-at-init check (the replacing adapter is not identity).
AUTHORS_SWITCHES = [
    {"conditional_attention_layers": "all"},
    {"conditional_attention_layers": "all", "frozen_attention_generators": True},
    {"conditional_attention_blocks": None},
    {"conditional_attention_film": "shared"},
    {"task_embedding_dim": None},
    {"task_transform": "linear"},
    {"alignment_input": "raw"},
    {"conditional_layer_norm_gain": "film"},
    {"preset": "authors", "adapter_style": "residual", "adapter_size": 6, "reinit_adapter_layers": False},
]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny random BERT checkpoint (hidden 32, 2 layers) and the BertModel itself."""
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    ).eval()
    folder = tmp_path_factory.mktemp("bert")
    bert.save_pretrained(folder)
    return str(folder), bert


def from_bert(folder, **overrides):
    return CaMtlForMultiTask.from_bert(folder, tasks=TASKS, load_tokenizer=False, **{**KNOBS, **overrides})


# ----- old checkpoints ------------------------------------------------------------------------------------------------
def test_checkpoint_saved_before_the_switches_loads_and_computes_the_same():
    """A tiny model saved by commit 2c9ef38 (today's config keys, random conditioning) loads with no missing or
    unexpected weights and reproduces the outputs it gave then (fixture made with that commit's code)."""
    saved = json.loads((FIXTURE / "config.json").read_text())
    assert "adapter_style" not in saved and "task_transform" not in saved  # written before the new fields existed
    model, info = CaMtlForMultiTask.from_pretrained(FIXTURE, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = json.loads((FIXTURE / "expected.json").read_text())
    inputs = {k: torch.tensor(v) for k, v in expected["inputs"].items()}
    with torch.no_grad():
        out = model.eval()(**inputs, output_hidden_states=True)
    # then, the columns past a task's labels were -inf; now the dtype's lowest finite value (issue 26)
    expected_logits = torch.tensor(expected["logits"]).nan_to_num(neginf=torch.finfo(torch.float32).min)
    torch.testing.assert_close(out.logits, expected_logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.entropy, torch.tensor(expected["entropy"]), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.hidden_states[-1], torch.tensor(expected["last_hidden_state"]), atol=1e-6, rtol=1e-6)


def test_defaults_are_ours():
    config = tiny_config()
    assert config.conditional_attention_layer_ids == config.conditional_layer_ids == [1]
    assert (
        config.task_transform,
        config.alignment_input,
        config.conditional_attention_film,
        config.conditional_layer_norm_gain,
        config.adapter_style,
    ) == ("residual_mlp", "transformed", "per_block", "scale", "residual")
    assert not config.reinit_adapter_layers and not config.frozen_attention_generators
    assert CaMtlConfig().task_embedding_dim == 64 and CaMtlConfig().adapter_size == 64
    assert CaMtlConfig().conditional_attention_blocks == 4


# ----- the block-diagonal bias against naive references ---------------------------------------------------------------
def reference_bias(module, cond, seq_len, mask=None):
    """``M(c)`` built block by block with ``torch.block_diag``: diagonal block ``k`` is learned block ``k mod N``
    modulated per column by its own FiLM (``per_block``) or the shared one (``shared``)."""
    num_blocks, size = module.num_blocks, module.block_size
    film = module.generator(cond).view(cond.shape[0], 2, -1)  # (B, 2, N*S or S)
    out = []
    for b in range(cond.shape[0]):
        blocks = []
        for k in range(-(-seq_len // size)):
            n = k % num_blocks
            cols = slice(0, size) if module.shared_film else slice(n * size, (n + 1) * size)
            gamma, beta = film[b, 0, cols], film[b, 1, cols]
            blocks.append(module.blocks[n] * (1 + gamma) + beta)
        full = torch.block_diag(*blocks)[:seq_len, :seq_len]
        out.append(full if mask is None else full + mask[b])
    return torch.stack(out)


@pytest.mark.parametrize("film", ["per_block", "shared"])
@pytest.mark.parametrize("blocks, span", [(1, 8), (2, 8), (3, 8), (4, 10)])
@pytest.mark.parametrize("seq_len", [1, 5, 8, 13, 23])
@pytest.mark.parametrize("padded", [False, True])
def test_block_bias_equals_block_diag_reference(film, blocks, span, seq_len, padded):
    model = CaMtlForMultiTask(
        tiny_config(
            conditional_attention_blocks=blocks, conditional_attention_span=span, conditional_attention_film=film
        )
    )
    randomize_conditioning(model, std=0.5, seed=blocks * 100 + seq_len)
    module = model.bert.encoder.layer[1].attention.self.camtl_block_bias
    cond = torch.randn(3, 8, generator=torch.Generator().manual_seed(seq_len))
    mask = None
    if padded:
        lengths = torch.tensor([seq_len, max(1, seq_len - 2), max(1, seq_len // 2)])
        mask = ((torch.arange(seq_len)[None, :] >= lengths[:, None]).float() * torch.finfo(torch.float32).min)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(module(cond, seq_len, mask), reference_bias(module, cond, seq_len, mask))


@pytest.mark.parametrize("max_len, blocks", [(8, 2), (8, 3), (12, 5), (9, 4)])
def test_shared_block_bias_equals_the_authors_formula(max_len, blocks):
    """The authors' CBDA on inputs padded to ``max_len = span``: ``X = (1 + gamma) * W + beta`` with ``W`` of shape
    (max_len, ceil(max_len / N)), cut into N row chunks, ``block_diag`` of the chunks, columns cut to ``max_len``."""
    model = CaMtlForMultiTask(
        tiny_config(
            conditional_attention_blocks=blocks, conditional_attention_span=max_len, conditional_attention_film="shared"
        )
    )
    randomize_conditioning(model, std=0.5)
    module = model.bert.encoder.layer[1].attention.self.camtl_block_bias
    cond = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        weight = module.blocks.reshape(-1, module.block_size)[:max_len]  # (L, S): their random_weight_matrix
        gamma, beta = module.generator(cond).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, S) each
        modulated = (1 + gamma) * weight + beta  # (B, L, S)
        theirs = torch.stack([torch.block_diag(*x.chunk(blocks, 0))[:, :max_len] for x in modulated])
        torch.testing.assert_close(module(cond, max_len), theirs)


def test_authors_block_count_is_hidden_over_span():
    config = tiny_config(conditional_attention_blocks=None, conditional_attention_span=8)
    assert config.conditional_attention_blocks == 32 // 8 and config.attention_block_size == 2
    wide_span = tiny_config(conditional_attention_blocks=None, conditional_attention_span=128)
    assert wide_span.conditional_attention_blocks == 1  # 32 // 128 = 0: at least one block
    shared = CaMtlForMultiTask(tiny_config(conditional_attention_film="shared"))
    per_block = CaMtlForMultiTask(tiny_config())
    assert shared.bert.encoder.layer[1].attention.self.camtl_block_bias.generator.weight.shape == (2 * 4, 8)
    assert per_block.bert.encoder.layer[1].attention.self.camtl_block_bias.generator.weight.shape == (2 * 8, 8)


# ----- identity at initialisation, switch by switch ------------------------------------------------------------------
@pytest.mark.parametrize("switch", AUTHORS_SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_authors_switches_keep_identity_at_init(bert_folder, switch):
    folder, bert = bert_folder
    model = from_bert(folder, **switch).eval()
    inputs = make_inputs()
    with torch.no_grad():
        ref = bert(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        out = model.bert(**inputs)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)


def test_authors_preset_is_identity_below_the_rebuilt_top_layer(bert_folder):
    """The whole preset: every layer below the adapter layer computes BERT's; the top layer, rebuilt from scratch
    with the replacing adapter, does not (that design cannot start as the identity)."""
    folder, bert = bert_folder
    model = CaMtlForMultiTask.from_bert(
        folder, tasks=TASKS, load_tokenizer=False, preset="authors", conditional_attention_span=8
    ).eval()
    config = model.config
    assert (config.task_embedding_dim, config.adapter_size, config.conditional_attention_blocks) == (32, 10, 4)
    for key, value in CAMTL_PRESETS["authors"].items():
        if value is not None:
            assert getattr(config, key) == value, key
    inputs = make_inputs()
    with torch.no_grad():
        ref = bert(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"], output_hidden_states=True)
        out = model.bert(**inputs, output_hidden_states=True)
    for mine, theirs in zip(out.hidden_states[:-1], ref.hidden_states[:-1]):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    assert (out.last_hidden_state - ref.last_hidden_state).abs().max() > 1e-2  # far above the 1e-5 of identity
    with pytest.raises(ValueError, match=r"Unknown CA-MTL preset 'paper'; valid presets: \['ours', 'authors'\]"):
        CaMtlForMultiTask.from_bert(folder, tasks=TASKS, load_tokenizer=False, preset="paper")


# ----- each switch does what it says ---------------------------------------------------------------------------------
def test_conditional_attention_in_every_layer_and_the_authors_freezing_rule():
    names = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    ours = CaMtlForMultiTask(tiny_config(num_hidden_layers=4))
    assert [layer.attention.self.camtl_block_bias is not None for layer in ours.bert.encoder.layer] == [0, 0, 1, 1]
    everywhere = CaMtlForMultiTask(tiny_config(num_hidden_layers=4, conditional_attention_layers="all"))
    assert all(layer.attention.self.camtl_block_bias is not None for layer in everywhere.bert.encoder.layer)
    assert everywhere.bert.encoder.layer[0].attention.output.camtl_layer_norm is None  # CLN stays in the upper half
    everywhere.set_trainable("paper")
    assert {
        "bert.encoder.layer.0.attention.self.camtl_block_bias.blocks",
        "bert.encoder.layer.0.attention.self.camtl_block_bias.generator.weight",
    } <= names(everywhere)
    assert "bert.encoder.layer.0.attention.self.query.weight" not in names(everywhere)
    authors = CaMtlForMultiTask(
        tiny_config(num_hidden_layers=4, conditional_attention_layers="all", frozen_attention_generators=True)
    )
    authors.set_trainable("paper")
    trainable = names(authors)
    assert "bert.encoder.layer.1.attention.self.camtl_block_bias.blocks" in trainable
    assert "bert.encoder.layer.1.attention.self.camtl_block_bias.generator.weight" not in trainable
    assert "bert.encoder.layer.2.attention.self.camtl_block_bias.generator.weight" in trainable
    authors.set_trainable("adapters")  # the rule is the paper mode's freezing; adapters mode trains every module
    assert "bert.encoder.layer.1.attention.self.camtl_block_bias.generator.weight" in names(authors)
    with pytest.raises(ValueError, match="conditional_attention_layers must be a list of layer indices, 'all'"):
        tiny_config(conditional_attention_layers="most")
    with pytest.raises(ValueError, match=r"conditional_attention_layers must be distinct layer indices in \[0, 1\]"):
        tiny_config(conditional_attention_layers=[0, 2])


def test_task_transform_and_alignment_input():
    linear = CaMtlForMultiTask(tiny_config(task_transform="linear"))
    encoder = linear.bert.camtl_task
    assert hasattr(encoder, "transform") and not hasattr(encoder, "dense_in")
    z, c = encoder(torch.tensor([0, 2]))
    torch.testing.assert_close(c, F.linear(z, encoder.transform.weight, encoder.transform.bias))
    inputs = make_inputs()
    for alignment_input, changes in (("raw", False), ("transformed", True)):
        torch.manual_seed(0)
        model = CaMtlForMultiTask(tiny_config(task_transform="linear", alignment_input=alignment_input)).eval()
        randomize_conditioning(model)
        with torch.no_grad():
            before = model.bert(**inputs, output_hidden_states=True).hidden_states[0]  # the aligned embeddings
            model.bert.camtl_task.transform.weight.mul_(3.0)
            after = model.bert(**inputs, output_hidden_states=True).hidden_states[0]
        assert (not torch.equal(before, after)) == changes, alignment_input
    assert CaMtlConfig(task_embedding_dim=None, hidden_size=48, num_attention_heads=4).task_embedding_dim == 48
    with pytest.raises(ValueError, match=r"task_transform must be one of \['residual_mlp', 'linear'\]"):
        tiny_config(task_transform="mlp")


@pytest.mark.parametrize("gain", ["scale", "film"])
def test_conditional_layer_norm_gain(gain):
    model = CaMtlForMultiTask(tiny_config(conditional_layer_norm_gain=gain))
    randomize_conditioning(model, std=0.5)
    output = model.bert.encoder.layer[1].output
    cln, layer_norm = output.camtl_layer_norm, output.LayerNorm
    with torch.no_grad():
        layer_norm.weight.uniform_(0.5, 1.5)
        layer_norm.bias.uniform_(-0.5, 0.5)
        x, cond = torch.randn(3, 5, 32), torch.randn(3, 8)
        film = cln.generator(cond)[:, None, :]  # (B, 1, H) or (B, 1, 2H)
        normed = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12)
        if gain == "film":
            new_gain = layer_norm.weight * (1 + film[..., :32]) + film[..., 32:]
        else:
            new_gain = layer_norm.weight * (1 + film)
        torch.testing.assert_close(cln(x, layer_norm, cond), normed * new_gain + layer_norm.bias, atol=1e-5, rtol=1e-5)
    assert cln.generator.weight.shape == ((64 if gain == "film" else 32), 8)


def test_replacing_adapter_computes_the_authors_top_layer():
    """``adapter_style="replace"``: ``CLN_a(up(down(FiLM_{Tc}(y))) + h)`` on the layer output ``y = CLN(FFN + h)``."""
    model = CaMtlForMultiTask(tiny_config(adapter_style="replace", adapter_size=None)).eval()
    output = model.bert.encoder.layer[1].output
    adapter = output.camtl_adapter
    assert adapter.down.out_features == 32 // 3  # the authors' hidden/3
    assert adapter.LayerNorm.weight.eq(1).all() and adapter.LayerNorm.bias.eq(0).all()  # a new layer norm
    randomize_conditioning(model, std=0.3)
    intermediate, attention_output, cond = torch.randn(2, 5, 37), torch.randn(2, 5, 32), torch.randn(2, 8)
    with torch.no_grad():
        y = output.camtl_layer_norm(output.dense(intermediate) + attention_output, output.LayerNorm, cond)
        gamma, beta = adapter.film.generator(adapter.task_transform(cond))[:, None].chunk(2, dim=-1)
        bottleneck = adapter.up(adapter.down(y * (1 + gamma) + beta))  # linear: no activation in between
        expected = adapter.conditional_layer_norm(bottleneck + attention_output, adapter.LayerNorm, cond)
        torch.testing.assert_close(output(intermediate, attention_output, cond), expected)
    ours = CaMtlForMultiTask(tiny_config()).bert.encoder.layer[1].output.camtl_adapter
    assert not hasattr(ours, "LayerNorm") and ours.up.weight.eq(0).all()
    names = [n for n, _ in model.named_parameters() if ".camtl_adapter." in n]
    assert names and all("camtl_" in n for n in names)


def test_reinit_adapter_layers_rebuilds_the_top_layer_only(bert_folder, tmp_path):
    folder, bert = bert_folder
    model = from_bert(folder, reinit_adapter_layers=True)
    mine, theirs = model.bert.state_dict(), bert.state_dict()
    assert torch.equal(
        mine["encoder.layer.0.attention.self.query.weight"], theirs["encoder.layer.0.attention.self.query.weight"]
    )
    assert not torch.equal(
        mine["encoder.layer.1.attention.self.query.weight"], theirs["encoder.layer.1.attention.self.query.weight"]
    )
    assert mine["encoder.layer.1.output.LayerNorm.weight"].eq(1).all()
    assert abs(mine["encoder.layer.1.intermediate.dense.weight"].std().item() - 0.02) < 0.005
    assert mine["encoder.layer.1.output.camtl_adapter.up.weight"].eq(0).all()  # CA-MTL's modules keep their init
    model.save_pretrained(tmp_path)  # a checkpoint keeps its trained top layer: only from_bert re-initialises
    again = CaMtlForMultiTask.from_pretrained(tmp_path)
    assert torch.equal(
        again.bert.encoder.layer[1].attention.self.query.weight, model.bert.encoder.layer[1].attention.self.query.weight
    )


def test_save_adapter_refuses_a_frozen_rebuilt_layer(bert_folder, tmp_path):
    from camtl.adapters import save_adapter

    folder, _ = bert_folder
    model = from_bert(folder, reinit_adapter_layers=True)
    model.set_trainable("adapters")
    with pytest.raises(ValueError, match=r"re-initialised \(reinit_adapter_layers\).*save_pretrained"):
        save_adapter(model, tmp_path / "a", base_model=folder)
    model.set_trainable("paper")  # the rebuilt layer trains, so its weights go into the adapter file
    assert (save_adapter(model, tmp_path / "b", base_model=folder) / "camtl_adapter.safetensors").is_file()


# ----- the task embedding's gradient ----------------------------------------------------------------------------------
@pytest.mark.parametrize("transform", ["residual_mlp", "linear"])
def test_task_embedding_learns_from_the_second_step(bert_folder, transform):
    """From the identity init the first step's gradient to the task embedding and its transform is exactly zero (no
    output depends on them while every generator is zero); the first step moves the generators, and from the
    second step on they get a gradient."""
    folder, _ = bert_folder
    torch.manual_seed(0)
    model = from_bert(folder, task_transform=transform)
    model.set_trainable("paper")
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs = make_inputs()
    labels = make_labels(inputs["task_ids"])
    task_params = {n: p for n, p in model.named_parameters() if n.startswith("bert.camtl_task.")}
    assert len(task_params) == (5 if transform == "residual_mlp" else 3)  # embedding, then 2 or 1 Linear(s)
    model(**inputs, labels=labels).loss.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for p in task_params.values())
    optimizer.step()
    optimizer.zero_grad()
    model(**inputs, labels=labels).loss.backward()
    for name, param in task_params.items():
        if name.endswith("weight"):
            assert torch.count_nonzero(param.grad) > 0, name


def test_continual_learning_refuses_an_untrained_conditioning(bert_folder):
    """``set_trainable("tasks")`` on a model whose generators are all zero would train the heads only: refused."""
    folder, _ = bert_folder
    model = from_bert(folder)
    model.add_task({"name": "trec", "kind": "classification", "labels": list("abcdef")})
    with pytest.raises(ValueError, match="every conditioning generator of this model is zero"):
        model.set_trainable("tasks", tasks=["trec"])
    randomize_conditioning(model)  # a trained model: its generators moved
    counts = model.set_trainable("tasks", tasks=["trec"])
    assert counts["trainable"] == 8 + 6 * 33
    plain = from_bert(
        folder,
        conditional_alignment=False,
        conditional_attention=False,
        conditional_layer_norm=False,
        conditional_adapter=False,
    )  # no conditioning at all: the embedding is unused, heads may train
    plain.add_task({"name": "trec", "kind": "classification", "labels": list("abcdef")})
    assert plain.set_trainable("tasks", tasks=["trec"])["trainable"] == 8 + 6 * 33


# ----- MT-Uncertainty: the borrowed scores, the scoring mode, the epoch ----------------------------------------------
GLUE5 = ["cola", "sst2", "mrpc", "stsb", "rte"]
GLUE5_REGRESSION = [False, False, False, True, False]


def test_regression_tasks_borrow_mrpc_scores_by_default():
    assert score_sources(GLUE5_REGRESSION, GLUE5).tolist() == [0, 1, 2, 2, 4]  # stsb <- mrpc
    assert score_sources(GLUE5_REGRESSION, GLUE5, "sst2").tolist() == [0, 1, 2, 1, 4]  # the authors' code
    no_mrpc = ["cola", "stsb", "rte", "sick_r"]
    # without mrpc: the k-th regression task borrows from the (k mod C)-th classification task
    assert score_sources([False, True, False, True], no_mrpc).tolist() == [0, 0, 2, 2]
    assert score_sources([False, True, False, True], no_mrpc, "rte").tolist() == [0, 2, 2, 2]
    assert score_sources([True, True], ["stsb", "sick_r"]).tolist() == [0, 1]  # nothing to borrow from
    with pytest.raises(ValueError, match=r"'stsb' is not a classification task .*\['cola', 'sst2', 'mrpc', 'rte'\]"):
        score_sources(GLUE5_REGRESSION, GLUE5, "stsb")
    sampler = EntropySampler([8] * 5, 5, regression_tasks=GLUE5_REGRESSION, task_names=GLUE5)
    assert sampler.score_source.tolist() == [0, 1, 2, 2, 4]
    own = EntropySampler([8] * 5, 5, regression_tasks=GLUE5_REGRESSION, task_names=GLUE5, regression_scores="own")
    assert own.score_source.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="needs regression_scores='borrow'"):
        EntropySampler(
            [8] * 5,
            5,
            regression_tasks=GLUE5_REGRESSION,
            task_names=GLUE5,
            regression_scores="own",
            regression_score_source="mrpc",
        )


def test_epoch_length_rules():
    sampler = EntropySampler([100, 30, 7], 10)
    assert sampler.epoch_batches("sum") == 10 + 3 + 1
    assert sampler.epoch_batches("tasks_x_largest") == 3 * 10
    with pytest.raises(ValueError, match=r"valid rules: \['sum', 'tasks_x_largest'\]"):
        sampler.epoch_batches("max")


def test_scoring_mode_train_keeps_dropout_on(tiny):  # noqa: F811  (the imported fixture, requested by name)
    from accelerate import Accelerator

    from camtl.trainer import EntropyScorer, MultiTaskBatches

    model, sets, collator = tiny
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for module in dropouts:
        module.p = 0.5
    try:
        sampler = EntropySampler([10, 10], 4, seed=0)
        batches = MultiTaskBatches(sampler, sets, collator)
        candidates = sampler.candidates()
        accelerator = Accelerator(cpu=True)
        model.eval()
        evaluated = EntropyScorer(accelerator, model, batches, batch_size=8)
        np.testing.assert_array_equal(evaluated(candidates), evaluated(candidates))  # eval mode: deterministic
        trained = EntropyScorer(accelerator, model, batches, batch_size=8, mode="train")
        torch.manual_seed(0)
        first = trained(candidates)
        assert not model.training  # the caller's mode is restored
        assert not np.allclose(first, trained(candidates))  # dropout on: two scorings differ
        assert not np.allclose(first, evaluated(candidates))
    finally:
        for module in dropouts:
            module.p = 0.0


# ----- train.py: the preset and the sampling switches from the command line ------------------------------------------
def test_train_runs_the_authors_architecture_and_sampling(glue_dir, tmp_path):
    """Two steps on real rows with every switch on the authors' side: the preset reaches the model, the scoring mode
    and the borrowed scores reach the results, and the epoch is tasks x the largest task's batches."""
    from tests.test_train import run, tiny_args

    out = tmp_path / "authors"
    args = tiny_args(
        glue_dir,
        out,
        "--model.camtl",
        "{preset: authors}",
        "--sampling.score_mode",
        "train",
        "--sampling.regression_score_source",
        "rte",
        "--train.epoch_length",
        "tasks_x_largest",
        "--train.max_steps",
        "2",
        "--train.eval_every",
        "0",
        "--train.save_every",
        "0",
        "--data.max_train_rows",
        "40",
    )
    results = run(args)
    config = CaMtlConfig.from_pretrained(out)
    assert (config.adapter_style, config.task_transform, config.conditional_attention_layers) == (
        "replace",
        "linear",
        "all",
    )
    assert (config.task_embedding_dim, config.adapter_size, config.conditional_attention_blocks) == (384, 128, 3)
    assert results["sampling"]["score_mode"] == "train" and results["sampling"]["score_sources"] == {"stsb": "rte"}
    assert results["steps_per_epoch"] == 3 * 5  # 3 tasks x ceil(40 / 8); the sum rule gives the same here
    assert results["steps"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--model.camtl", "{preset: paper}"],
            r"Unknown model.camtl preset 'paper'; valid presets: \['ours', 'authors'\]",
        ),
        (["--model.camtl", "{adapter_style: serial}"], r"adapter_style must be one of \['residual', 'replace'\]"),
        (["--sampling.regression_score_source", "sst2"], r"'sst2' is not a classification task of this run.*'cola'"),
        (["--sampling.score_mode", "dropout"], "score_mode"),
        (["--sampling.allocation", "tasks"], r"allocation(.|\n)*'entropy', 'proportional'(.|\n)*tasks"),
        (["--train.epoch_length", "max"], "epoch_length"),
    ],
)
def test_bad_switch_values_are_refused_before_training(glue_dir, tmp_path, extra, message):
    import argparse

    import train
    from tests.test_train import run, tiny_args

    with pytest.raises((train.RunSetupError, argparse.ArgumentError), match=message):  # parser or setup, no training
        run(tiny_args(glue_dir, tmp_path / "bad", *extra))
    assert not (tmp_path / "bad" / "results.json").exists()


def test_authors_architecture_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = CaMtlForMultiTask(tiny_config(**AUTHORS)).eval()
    randomize_conditioning(model, std=0.5)
    inputs = make_inputs(seq_len=13)
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    reloaded, info = CaMtlForMultiTask.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.config.conditional_attention_layers == "all" and reloaded.config.adapter_style == "replace"
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, expected, atol=1e-5, rtol=0)


def test_a_run_saved_before_the_new_fields_is_still_the_same_run():
    """A training_config.yaml written before ``score_mode``, ``regression_score_source`` and ``epoch_length`` existed
    matches today's defaults (so the run resumes), and differs when one of them is set otherwise."""
    from camtl.config import RunConfig, config_differences, config_to_dict

    saved = config_to_dict(RunConfig())
    for section, key in (
        ("sampling", "score_mode"),
        ("sampling", "regression_score_source"),
        ("train", "epoch_length"),
    ):
        del saved[section][key]
    assert config_differences(saved, config_to_dict(RunConfig())) == []
    changed = RunConfig()
    changed.sampling.score_mode = "train"
    assert config_differences(saved, config_to_dict(changed)) == [
        "sampling.score_mode: '<absent>' (saved) != 'train' (now)"
    ]


def test_an_uncertainty_run_saved_before_allocation_existed_resumes_with_the_entropy_allocation_only():
    """Runs written before ``sampling.allocation`` used the paper's entropy allocation: resuming one of them with
    today's default (proportional) is a difference; with ``entropy`` it is the same run. Other strategies ignore it."""
    from camtl.config import RunConfig, config_differences, config_to_dict

    saved = config_to_dict(RunConfig())
    del saved["sampling"]["allocation"]
    assert saved["sampling"]["strategy"] == "uncertainty"
    assert config_differences(saved, config_to_dict(RunConfig())) == [
        "sampling.allocation: 'entropy' (saved) != 'proportional' (now)"
    ]
    entropy = RunConfig()
    entropy.sampling.allocation = "entropy"
    assert config_differences(saved, config_to_dict(entropy)) == []
    saved["sampling"]["strategy"] = "proportional"
    proportional = RunConfig()
    proportional.sampling.strategy = "proportional"
    assert config_differences(saved, config_to_dict(proportional)) == []
