"""Parameter-efficient mode, adapter checkpoints, adding/removing tasks without forgetting, and LoRA through peft."""

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from camtl.adapters import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, load_adapter, save_adapter
from modeling_camtl import CaMtlForMultiTask
from tests.test_modeling import TASKS, make_inputs, make_labels, randomize_conditioning

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
KNOBS = dict(task_embedding_dim=8, adapter_size=6, conditional_attention_blocks=2, conditional_attention_span=8)


def save_tiny_bert(folder, seed=0, **overrides):
    torch.manual_seed(seed)
    BertModel(BertConfig(**{**TINY, **overrides})).save_pretrained(folder)
    return str(folder)


def train_steps(model, steps=5, lr=1e-2, task_ids=None, weight_decay=0.0):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    inputs = make_inputs(task_ids=task_ids)
    labels = make_labels(inputs["task_ids"])
    losses = []
    for _ in range(steps):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.fixture
def base(tmp_path):
    return save_tiny_bert(tmp_path / "base")


def test_frozen_backbone_training_touches_only_adapter_parameters(base):
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    counts = model.set_trainable("adapters")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model, losses = train_steps(model)
    assert losses[-1] < losses[0]
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        is_adapter = "camtl_" in name or name.startswith("heads.")
        if not is_adapter:
            assert not changed, f"backbone parameter {name} moved"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "camtl_" in n)
    assert counts["trainable"] == sum(
        p.numel() for n, p in model.named_parameters() if "camtl_" in n or n.startswith("heads.")
    )


def test_adapter_save_load_equality_and_size(base, tmp_path):
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    model.set_trainable("adapters")
    model, _ = train_steps(model)
    inputs = make_inputs()
    with torch.no_grad():
        expected = model(**inputs).logits
    folder = save_adapter(model, tmp_path / "adapter", base_model=base)
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    assert config["base_model_name_or_path"] == base
    assert all("camtl_" in n or n.startswith("heads.") for n in config["parameters"])
    reloaded = load_adapter(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=0, rtol=0)
    model.save_pretrained(tmp_path / "full")
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert (folder / ADAPTER_WEIGHTS_NAME).stat().st_size < full_size / 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 48}, "hidden_size: adapter expects 32, base has 48"),
        ({"vocab_size": 120}, "vocab_size: adapter expects 99, base has 120"),
    ],
)
def test_mismatched_base_is_refused(base, tmp_path, overrides, message):
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    model.set_trainable("adapters")
    folder = save_adapter(model, tmp_path / "adapter", base_model=base)
    other = save_tiny_bert(tmp_path / "other", **overrides)
    with pytest.raises(ValueError, match=message):
        load_adapter(folder, base_model=other)


def test_base_with_other_weights_is_refused(base, tmp_path):
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    model.set_trainable("adapters")
    folder = save_adapter(model, tmp_path / "adapter", base_model=base)
    other = save_tiny_bert(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="other weights"):
        load_adapter(folder, base_model=other)
    assert load_adapter(folder, base_model=other, check_fingerprint=False) is not None


def test_corrupt_adapter_is_refused(base, tmp_path):
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    model.set_trainable("adapters")
    folder = save_adapter(model, tmp_path / "adapter", base_model=base)
    (folder / ADAPTER_WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"Damaged or incomplete weights file: {folder / ADAPTER_WEIGHTS_NAME} "):
        load_adapter(folder)
    (folder / ADAPTER_CONFIG_NAME).write_text("{broken")
    with pytest.raises(ValueError, match="Corrupt adapter config"):
        load_adapter(folder)
    with pytest.raises(FileNotFoundError, match="No CA-MTL adapter"):
        load_adapter(tmp_path / "nowhere")


def test_truncated_base_model_is_named(base, tmp_path):
    """A base whose model.safetensors was cut short (an interrupted download): the error names that file."""
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    model.set_trainable("adapters")
    folder = save_adapter(model, tmp_path / "adapter", base_model=base)
    weights = Path(base) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(
        ValueError,
        match=r"Damaged or incomplete weights file: \S+/base/model\.safetensors \(.*"
        r"incomplete metadata.*\)\. It was probably cut short",
    ) as error:
        load_adapter(folder)
    assert str(weights) in str(error.value)


def test_add_task_keeps_old_tasks_bit_identical_through_training(base, tmp_path):
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    randomize_conditioning(model)
    model.eval()
    old_inputs = make_inputs()
    with torch.no_grad():
        before = model(**old_inputs).logits
    new_id = model.add_task({"name": "trec", "kind": "classification", "labels": list("abcdef")}, init_from="mean")
    assert new_id == 3 and model.config.task_names[-1] == "trec"
    with torch.no_grad():
        assert torch.equal(model(**old_inputs).logits[:, :3], before)
    model.set_trainable("tasks", tasks=["trec"])
    new_task_ids = torch.full((6,), new_id)
    embedding_before = model.bert.camtl_task.embedding.table().detach().clone()
    model, losses = train_steps(model, steps=8, task_ids=new_task_ids)
    assert losses[-1] < losses[0]
    with torch.no_grad():
        assert torch.equal(model(**old_inputs).logits[:, :3], before)
    embedding = model.bert.camtl_task.embedding.table()  # the trained row is held apart (a Parameter of its own)
    assert torch.equal(embedding[:3], embedding_before[:3]) and not torch.equal(embedding[3], embedding_before[3])
    # the grown model saves and reloads with its four tasks
    model.save_pretrained(tmp_path / "grown")
    again = CaMtlForMultiTask.from_pretrained(tmp_path / "grown").eval()
    assert again.config.task_names == ["sst2", "stsb", "mnli", "trec"]
    with torch.no_grad():
        assert torch.equal(again(**old_inputs).logits[:, :3], before)


def test_add_task_initialisation_and_errors():
    from tests.test_modeling import tiny_config

    model = CaMtlForMultiTask(tiny_config())
    table = model.bert.camtl_task.embedding.weight.detach().clone()
    model.add_task({"name": "mnli2", "kind": "classification", "labels": ["e", "n", "c"]}, init_from="mnli")
    assert torch.equal(model.bert.camtl_task.embedding.weight[3], table[2])
    assert torch.equal(model.heads["mnli2"].weight, model.heads["mnli"].weight)
    with pytest.raises(ValueError, match="already exists"):
        model.add_task({"name": "sst2", "labels": ["a", "b"]})
    with pytest.raises(ValueError, match="init_from must be 'mean' or an existing task"):
        model.add_task({"name": "new", "labels": ["a", "b"]}, init_from="cola")


def test_remove_and_rename_tasks(model_with_logits=None):
    from tests.test_modeling import tiny_config

    torch.manual_seed(0)
    model = CaMtlForMultiTask(tiny_config()).eval()
    randomize_conditioning(model)
    inputs = make_inputs(task_ids=torch.tensor([0, 2, 0, 2, 0, 2]))
    with torch.no_grad():
        before = model(**inputs).logits
    model.remove_task("stsb")
    assert model.config.task_names == ["sst2", "mnli"]
    inputs["task_ids"] = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before, atol=0, rtol=0)
    model.rename_task("mnli", "nli")
    assert model.config.task_names == ["sst2", "nli"] and "nli" in model.heads
    with torch.no_grad():
        torch.testing.assert_close(model(**dict(inputs, task_ids=["sst2", "nli"] * 3)).logits, before)
    with pytest.raises(ValueError, match="Unknown task 'stsb'"):
        model.remove_task("stsb")


def test_lora_through_peft_round_trip(base, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(0)
    model = CaMtlForMultiTask.from_bert(base, tasks=TASKS, **KNOBS)
    randomize_conditioning(model)
    model.save_pretrained(tmp_path / "camtl")
    lora = LoraConfig(
        task_type=None,
        r=4,
        lora_alpha=8,
        target_modules=["query", "value"],
        modules_to_save=[f"heads.{name}" for name in model.config.task_names],
    )
    peft_model = get_peft_model(model, lora)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "heads." in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-1)
    inputs = make_inputs()
    labels = make_labels(inputs["task_ids"])
    peft_model.train()
    losses = []
    for _ in range(10):
        loss = peft_model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        # task_ids reach the model: the same text under another task gives other outputs
        swapped = peft_model(**dict(inputs, task_ids=torch.zeros(6, dtype=torch.long))).logits
    assert not torch.allclose(expected[1:3, :1], swapped[1:3, :1])
    peft_model.save_pretrained(tmp_path / "lora")
    base_again = CaMtlForMultiTask.from_pretrained(tmp_path / "camtl")
    reloaded = PeftModel.from_pretrained(base_again, tmp_path / "lora").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-6, rtol=0)
