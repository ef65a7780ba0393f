"""Unit tests of the CA-MTL model on tiny configs (hidden 32, 2 layers, vocab 99), in the spirit of transformers'
ModelTester. Tests against the real MiniLM checkpoint are in test_modeling_minilm.py."""

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

from modeling_camtl import CAMTL_PRESETS, CaMtlConfig, CaMtlForMultiTask, CaMtlModel, is_camtl_parameter

TASKS = [
    {"name": "sst2", "kind": "classification", "labels": ["negative", "positive"], "text_fields": ["sentence"]},
    {
        "name": "stsb",
        "kind": "regression",
        "labels": [],
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0, 5],
    },
    {
        "name": "mnli",
        "kind": "classification",
        "labels": ["entailment", "neutral", "contradiction"],
        "text_fields": ["premise", "hypothesis"],
    },
]

#: The authors' architecture on the tiny config (span 8: inputs of 10-13 tokens reuse the blocks).
AUTHORS = {**CAMTL_PRESETS["authors"], "conditional_attention_span": 8}


def tiny_config(**overrides) -> CaMtlConfig:
    kwargs = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        tasks=TASKS,
        task_embedding_dim=8,
        adapter_size=6,
        conditional_attention_blocks=2,
        conditional_attention_span=8,
    )
    kwargs.update(overrides)
    return CaMtlConfig(**kwargs)


def randomize_conditioning(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> None:
    """Give every CA-MTL parameter (zero at init) random values, so tests exercise the conditioning."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "camtl_" in name:
                param.add_(torch.randn(param.shape, generator=gen) * std)


def make_inputs(batch=6, seq_len=10, vocab=99, seed=0, task_ids=None):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, vocab, (batch, seq_len), generator=gen)
    lengths = torch.randint(3, seq_len + 1, (batch,), generator=gen)
    lengths[0] = seq_len
    attention_mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    input_ids = input_ids * attention_mask
    token_type_ids = ((torch.arange(seq_len)[None, :] >= lengths[:, None] // 2) & attention_mask.bool()).long()
    if task_ids is None:
        task_ids = torch.arange(batch) % len(TASKS)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "task_ids": task_ids,
    }


def make_labels(task_ids):
    labels = torch.zeros(task_ids.shape[0])
    for i, t in enumerate(task_ids.tolist()):
        labels[i] = [1.0, 3.5, 2.0, 4.0][t]  # the fourth is a task added in a test
    return labels


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = CaMtlForMultiTask(tiny_config()).eval()
    randomize_conditioning(m)
    return m


def test_output_shapes(model):
    inputs = make_inputs()
    out = model(**inputs, labels=make_labels(inputs["task_ids"]))
    assert out.logits.shape == (6, 3)
    assert out.entropy.shape == (6,)
    assert out.task_losses.shape == (3,)
    assert out.loss.shape == ()
    # columns past a row's own label count hold the dtype's minimum (finite); regression rows keep column 0 only
    sizes = torch.tensor([2, 1, 3])[inputs["task_ids"]]
    assert torch.isfinite(out.logits).all()
    own = out.logits > torch.finfo(out.logits.dtype).min
    assert torch.equal(own.sum(1), sizes)
    assert ((out.entropy >= 0) & (out.entropy <= 1)).all()
    enc = CaMtlModel(tiny_config()).eval()
    hidden = enc(**inputs)
    assert hidden.last_hidden_state.shape == (6, 10, 32)
    assert hidden.pooler_output.shape == (6, 32)


def test_mixed_batch_equals_per_task_batches(model):
    inputs = make_inputs(batch=9, task_ids=torch.tensor([0, 1, 2, 2, 1, 0, 0, 2, 1]))
    with torch.no_grad():
        mixed = model(**inputs)
        for task in range(3):
            rows = (inputs["task_ids"] == task).nonzero().squeeze(1)
            sub = {k: v[rows] for k, v in inputs.items()}
            # each task alone, cut to its own longest row: dynamic padding must not change anything
            keep = int(sub["attention_mask"].sum(1).max())
            sub = {k: (v[:, :keep] if v.dim() == 2 else v) for k, v in sub.items()}
            alone = model(**sub)
            torch.testing.assert_close(alone.logits, mixed.logits[rows], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(alone.entropy, mixed.entropy[rows], atol=1e-5, rtol=1e-5)


def test_conditioning_changes_outputs_per_task(model):
    inputs = make_inputs(batch=2, task_ids=torch.tensor([0, 0]))
    with torch.no_grad():
        a = model.bert(**inputs).last_hidden_state
        inputs["task_ids"] = torch.tensor([2, 2])
        b = model.bert(**inputs).last_hidden_state
    assert (a - b).abs().max() > 1e-3


def test_identity_at_init_against_bert(tmp_path):
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    bert = BertModel(bert_config).eval()
    bert.save_pretrained(tmp_path)
    model = CaMtlForMultiTask.from_bert(
        str(tmp_path),
        tasks=TASKS,
        task_embedding_dim=8,
        adapter_size=6,
        conditional_attention_blocks=2,
        conditional_attention_span=8,
    ).eval()
    inputs = make_inputs()
    with torch.no_grad():
        ref = bert(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        out = model.bert(**inputs)
    assert (out.last_hidden_state - ref.last_hidden_state).abs().max() <= 1e-5
    assert (out.pooler_output - ref.pooler_output).abs().max() <= 1e-5


def test_missing_keys_are_exactly_the_new_parameters(tmp_path):
    bert_config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(bert_config).save_pretrained(tmp_path)
    model, info = CaMtlForMultiTask.from_bert(str(tmp_path), tasks=TASKS, output_loading_info=True)
    new = {n for n, _ in model.named_parameters() if is_camtl_parameter(n)}
    assert set(info["missing_keys"]) == new
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    # and every BERT parameter was loaded
    reference = BertModel.from_pretrained(str(tmp_path)).state_dict()
    for name, value in reference.items():
        torch.testing.assert_close(model.state_dict()["bert." + name], value, atol=0, rtol=0)


def test_from_bert_is_quiet_about_the_new_parameters_and_names_missing_bert_ones(tmp_path, capfd, caplog):
    """transformers' load report lists every CA-MTL parameter as "newly initialized": expected, so not shown. A
    parameter BERT should have but the checkpoint lacks is named in a warning."""
    from safetensors.torch import load_file, save_file

    bert_config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(bert_config).save_pretrained(tmp_path)
    capfd.readouterr()
    CaMtlForMultiTask.from_bert(str(tmp_path), tasks=TASKS)
    printed = capfd.readouterr()
    assert "newly initialized" not in printed.err + printed.out and "MISSING" not in printed.err + printed.out
    assert not [r for r in caplog.records if r.levelname == "WARNING"]

    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.0.output.dense.bias"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    CaMtlForMultiTask.from_bert(str(tmp_path), tasks=TASKS)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{tmp_path} lacks BERT parameters ['bert.encoder.layer.0.output.dense.bias']: they are initialised at random"
    ]


@pytest.mark.parametrize("overrides", [{}, AUTHORS], ids=["ours", "authors"])
def test_initialization_catches_forgotten_parameters(overrides):
    """transformers' check: with every init std set to ~0, each parameter's mean must be exactly 0 or 1."""
    config = tiny_config(**overrides)
    for key in list(config.to_dict()):
        if "_range" in key or "_std" in key:
            setattr(config, key, 1e-10)
    model = CaMtlForMultiTask(config)
    for name, param in model.named_parameters():
        mean = ((param.data.mean() * 1e9).round() / 1e9).item()
        assert mean in (0.0, 1.0), f"{name} was not initialised by _init_weights (mean {mean})"


@pytest.mark.parametrize("std, expected", [(None, 0.02), (0.5, 0.5), (0.0, 0.0)])
def test_task_embedding_init_std_takes_effect(std, expected):
    """The task embedding starts at N(0, task_embedding_init_std), initializer_range when unset (the setting was
    once ignored)."""
    torch.manual_seed(0)
    model = CaMtlForMultiTask(
        tiny_config(tasks=[{**TASKS[0], "name": f"t{i}"} for i in range(40)], task_embedding_init_std=std)
    )
    table = model.get_base_model().camtl_task.embedding.weight  # (40, C)
    assert model.config.initializer_range == 0.02
    assert table.std().item() == pytest.approx(expected, rel=0.1, abs=1e-12)


def test_generators_start_at_zero():
    model = CaMtlForMultiTask(tiny_config())
    for name, param in model.named_parameters():
        if "generator" in name or "camtl_block_bias.blocks" in name or "camtl_adapter.up" in name:
            assert torch.count_nonzero(param) == 0, name


def test_save_load_equality(model, tmp_path):
    inputs = make_inputs()
    with torch.no_grad():
        before = model(**inputs).logits
    model.save_pretrained(tmp_path)
    reloaded = CaMtlForMultiTask.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = reloaded(**inputs).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert reloaded.config.task_names == ["sst2", "stsb", "mnli"]
    config_json = (tmp_path / "config.json").read_text()
    assert '"AutoModel": "modeling_camtl.CaMtlModel"' in config_json
    assert '"AutoModelForSequenceClassification": "modeling_camtl.CaMtlForMultiTask"' in config_json
    assert (tmp_path / "modeling_camtl.py").exists() and (tmp_path / "configuration_camtl.py").exists()


def test_task_order_survives_sorted_config(tmp_path):
    tasks = [dict(TASKS[2]), dict(TASKS[0], name="zeta"), dict(TASKS[1], name="alpha")]
    config = tiny_config(tasks=tasks)
    config.save_pretrained(tmp_path)
    again = CaMtlConfig.from_pretrained(tmp_path)
    assert again.task_names == ["mnli", "zeta", "alpha"]


def test_determinism_in_eval_mode(model):
    inputs = make_inputs()
    with torch.no_grad():
        a, b = model(**inputs), model(**inputs)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("overrides", [{}, AUTHORS], ids=["ours", "authors"])
def test_sdpa_and_eager_agree(overrides):
    torch.manual_seed(0)
    sdpa = CaMtlForMultiTask(tiny_config(**overrides)).eval()
    randomize_conditioning(sdpa, std=0.5)
    eager = copy.deepcopy(sdpa)
    eager.config._attn_implementation = "eager"
    sdpa.config._attn_implementation = "sdpa"
    inputs = make_inputs(seq_len=13)  # past the span: blocks repeat
    with torch.no_grad():
        torch.testing.assert_close(eager(**inputs).logits, sdpa(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_block_bias_is_block_diagonal_and_length_consistent(model):
    bias_module = model.bert.encoder.layer[1].attention.self.camtl_block_bias
    cond = torch.randn(2, 8)
    full = bias_module(cond, 20)  # (B, T, T), block size 4, blocks repeat every 8 positions
    short = bias_module(cond, 7)
    torch.testing.assert_close(full[:, :7, :7], short)
    size = bias_module.block_size
    blocks = torch.arange(20) // size
    off_diagonal = blocks[:, None] != blocks[None, :]
    assert torch.count_nonzero(full[:, off_diagonal]) == 0
    assert torch.count_nonzero(full[:, ~off_diagonal]) > 0


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = CaMtlForMultiTask(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    randomize_conditioning(model)
    inputs = make_inputs()
    labels = make_labels(inputs["task_ids"])
    model.train()
    model(**inputs, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.bert.encoder.layer)
    model(**inputs, labels=labels).loss.backward()
    for name, grad in plain.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-6, rtol=1e-5)


def test_loss_is_mean_over_present_tasks(model):
    inputs = make_inputs(batch=4, task_ids=torch.tensor([0, 0, 0, 1]))
    labels = torch.tensor([1.0, 0.0, 1.0, 2.5])
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    logits = out.logits
    ce = torch.nn.functional.cross_entropy(logits[:3, :2], labels[:3].long())
    mse = (logits[3, 0] - 2.5) ** 2
    torch.testing.assert_close(out.loss, (ce + mse) / 2)
    assert torch.isnan(out.task_losses[2])
    torch.testing.assert_close(out.task_losses[:2], torch.stack([ce, mse]))


def test_normalised_entropy_values(model):
    """Uniform predictions score 1, and the value is the entropy over the row's own labels only."""
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.zero_()
            head.bias.zero_()
        model.heads["stsb"].bias.fill_(2.5)  # middle of [0, 5]
        out = model(**make_inputs())
    torch.testing.assert_close(out.entropy, torch.ones(6), atol=1e-4, rtol=0)


def test_task_names_are_accepted(model):
    inputs = make_inputs(batch=3)
    inputs_named = dict(inputs, task_ids=["sst2", "stsb", "mnli"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs_named).logits, model(**inputs).logits)


@pytest.mark.parametrize(
    "task_ids, message",
    [
        (torch.tensor([0, 1, 7, 0, 1, 2]), "Unknown task id"),
        (torch.tensor([0, 1, -1, 0, 1, 2]), "Unknown task id"),
        (torch.tensor([[0, 1, 2, 0, 1, 2]]), "shape"),
        (torch.tensor([0, 1]), "shape"),
        (torch.zeros(6), "integer tensor"),
        (["sst2", "cola", "mnli", "sst2", "stsb", "mnli"], "Unknown task 'cola'"),
        (None, "task_ids is required"),
    ],
)
def test_bad_task_ids_name_the_valid_tasks(model, task_ids, message):
    inputs = make_inputs()
    inputs["task_ids"] = task_ids
    with pytest.raises(ValueError, match=message) as err:
        model(**inputs)
    if "Unknown" in message or "required" in message:
        assert "0=sst2, 1=stsb, 2=mnli" in str(err.value)


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.tensor([2.0, 1.0, 0.0, 0.0, 1.0, 0.0]), "Label 2.0 at row 0 is invalid for task 'sst2'"),
        (torch.tensor([0.5, 1.0, 0.0, 0.0, 1.0, 0.0]), "Label 0.5 at row 0"),
        (torch.tensor([0.0, 1.0, 3.0, 0.0, 1.0, 0.0]), "task 'mnli': expected class ids 0..2"),
        (torch.tensor([0.0, float("nan"), 0.0, 0.0, 1.0, 0.0]), "task 'stsb': expected a finite number"),
        (torch.tensor([0.0, 1.0]), "labels must have shape"),
    ],
)
def test_bad_labels_are_refused(model, labels, message):
    with pytest.raises(ValueError, match=message):
        model(**make_inputs(), labels=labels)


def test_too_long_input_is_refused(model):
    inputs = make_inputs(batch=1, seq_len=65, task_ids=torch.tensor([0]))
    with pytest.raises(ValueError, match="longer than the model's limit of 64 positions"):
        model(**inputs)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"tasks": [{"name": "a", "kind": "ranking", "labels": ["x", "y"]}]}, "kind"),
        ({"tasks": [{"name": "a.b", "labels": ["x", "y"]}]}, "name"),
        ({"tasks": [{"name": "a", "labels": ["x"]}]}, "labels"),
        ({"tasks": [{"name": "a", "labels": ["x", "y"]}, {"name": "a", "labels": ["x", "y"]}]}, "duplicate"),
        ({"tasks": [{"name": "a", "labels": ["x", "y"], "text_fields": ["a", "b", "c"]}]}, "text_fields"),
        ({"tasks": [{"name": "a", "kind": "regression", "label_range": [5, 0]}]}, "label_range"),
        ({"tasks": [{"name": "a", "labels": ["x", "y"], "colour": "red"}]}, "unknown field"),
        ({"conditional_layers": [0, 5]}, "conditional_layers"),
        ({"adapter_layers": [2]}, "adapter_layers"),
        ({"num_frozen_layers": 3}, "num_frozen_layers"),
        ({"adapter_size": 0}, "adapter_size"),
        ({"conditional_attention_blocks": 0}, "conditional_attention_blocks"),
        ({"hidden_size": 30}, "num_attention_heads"),
        ({"pooling": "max"}, "pooling"),
        ({"generator_init_std": -1.0}, "generator_init_std"),
    ],
)
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_the_knob_list_is_every_config_field_beyond_bert():
    """CAMTL_KNOBS is derived from the config class: every field but BERT's architecture and the tasks, each saved in
    config.json, each overridable (a knob set to a non-default value comes back from the saved dict)."""
    from modeling_camtl import BERT_FIELDS, CAMTL_KNOBS

    config = tiny_config()
    saved = config.to_dict()
    assert set(CAMTL_KNOBS).isdisjoint(BERT_FIELDS) and "tasks" not in CAMTL_KNOBS
    assert {"adapter_size", "pooling", "classifier_dropout", "task_adapter_size"} <= set(CAMTL_KNOBS)
    assert all(name in saved for name in (*CAMTL_KNOBS, *BERT_FIELDS))
    changed = CaMtlConfig(**{**saved, "pooling": "mean", "adapter_size": 5})
    assert (changed.pooling, changed.adapter_size) == ("mean", 5)


def test_model_without_tasks_is_refused():
    with pytest.raises(ValueError, match="config.tasks is empty"):
        CaMtlForMultiTask(tiny_config(tasks=[]))


def test_trainable_modes():
    model = CaMtlForMultiTask(tiny_config(num_hidden_layers=4))
    paper = model.set_trainable("paper")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("bert.embeddings.") for n in trainable)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.encoder.layer.1.")) for n in trainable)
    assert any(n.startswith("bert.encoder.layer.2.attention.self.query") for n in trainable)
    adapters = model.set_trainable("adapters")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("camtl_" in n or n.startswith("heads.") for n in trainable)
    everything = model.set_trainable("all")
    assert everything["frozen"] == 0
    assert adapters["trainable"] < paper["trainable"] < everything["trainable"]
    with pytest.raises(ValueError, match="valid modes"):
        model.set_trainable("lora")


def test_plain_mtl_has_no_conditioning():
    config = tiny_config(
        conditional_alignment=False,
        conditional_attention=False,
        conditional_layer_norm=False,
        conditional_adapter=False,
    )
    model = CaMtlForMultiTask(config)
    names = [n for n, _ in model.named_parameters() if "camtl_" in n]
    assert all(n.startswith("bert.camtl_task.") for n in names)


def test_return_dict_false_gives_a_tuple_and_unused_arguments_are_refused(model):
    inputs = make_inputs()
    labels = make_labels(inputs["task_ids"])
    out = model(**inputs, labels=labels)
    loss, logits = model(**inputs, labels=labels, return_dict=False)[:2]
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)
    hidden = model.bert(**inputs, return_dict=False)[0]
    assert torch.equal(hidden, model.bert(**inputs).last_hidden_state)
    assert model(**inputs, position_ids=None, head_mask=None).logits.shape == out.logits.shape  # PEFT's Nones
    with pytest.raises(TypeError, match=r"does not use \['position_ids'\]"):
        model(**inputs, position_ids=torch.arange(10)[None])
    with pytest.raises(TypeError, match="task_idz"):
        model.bert(**{k: v for k, v in inputs.items() if k != "task_ids"}, task_idz=inputs["task_ids"])
