"""The serving benchmark's baselines do what they claim: PEFT's mixed-adapter batch gives each row its own task's
adapter, and the five-classifier router sends each row to its task's model; its table reads its results."""

import pytest
import torch
from transformers import BertConfig, BertModel

from benchmarks import serving as bench

TASKS = [
    {"name": "alpha", "kind": "classification", "labels": ["x", "y"]},
    {"name": "beta", "kind": "regression", "labels": []},
    {"name": "gamma", "kind": "classification", "labels": ["x", "y", "z"]},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder)
    return str(folder)


def _batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (6, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[3:, 6:] = 0
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
        "task_ids": torch.tensor([0, 1, 2, 2, 0, 1]),
    }


def test_peft_mixed_adapter_batch_gives_each_row_its_own_adapter(base):
    model = bench.load_peft(base, TASKS)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # trained-looking adapters: each task's differs
    names = [t["name"] for t in TASKS]
    batch = _batch()
    with torch.inference_mode():
        mixed = model(
            **{k: batch[k] for k in bench.camtl_inputs(batch)},
            adapter_names=[names[i] for i in batch["task_ids"].tolist()],
        )
        for row, task_id in enumerate(batch["task_ids"].tolist()):
            model.set_adapter(names[task_id])
            alone = model(**{k: v[row : row + 1] for k, v in bench.camtl_inputs(batch).items()})
            assert torch.allclose(mixed[row], alone[0], atol=1e-5, equal_nan=True)
        model.set_adapter(names[0])
        other = model(**bench.camtl_inputs(batch))
    assert not torch.allclose(mixed[1], other[1])  # row 1 (task beta) did not get adapter alpha


def test_the_five_classifier_router_sends_each_row_to_its_task_model(base):
    models = bench.load_five_berts(base, TASKS)
    seen = {}
    for name, model in models.items():
        model.register_forward_pre_hook(
            lambda m, args, kwargs, name=name: seen.setdefault(name, []).append(kwargs["input_ids"].shape),
            with_kwargs=True,
        )
    with torch.inference_mode():
        bench.five_bert_forward(models, [t["name"] for t in TASKS], _batch())
    assert seen == {"alpha": [(2, 9)], "beta": [(2, 9)], "gamma": [(2, 9)]}
    assert models["beta"].num_labels == 1 and models["gamma"].num_labels == 3


def test_the_table_reads_every_section():
    passes = {bench.BASELINE: {"speedup": 1.0}, "camtl_onnx_int8": {"speedup": 2.9}}
    scores = {
        name: {"tasks": {"mrpc": {"main": 0.85}}, "average": 0.85, "delta_points": {"mrpc": d}}
        for name, d in ((bench.BASELINE, 0.0), ("camtl_onnx_int8", -0.61))
    }
    table = bench.markdown_table(
        {
            "timings": {"batch1": {"passes": passes}, "batch32": {"passes": passes}},
            "pipeline": {b: {"torch": {"requests_per_s": 10.0, "speedup": 1.0}} for b in ("batch1", "batch32")},
            "memory": {"bert_one_task": {"peak_mb": 500.0}, "ratios": {}},
            "scores": scores,
        }
    )
    assert "| camtl_onnx_int8 | 2.90x | 2.90x |" in table and "85.00 (-0.61)" in table
    assert "| five processes of one BERT each | 2500 |" in table
