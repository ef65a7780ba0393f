"""The built-in auxiliary tasks (camtl.tasks.EXTRA_TASKS) on the real files of ../shared/data/extra, and the one home
of the task-spec rules (modeling_camtl.check_task_fields)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from camtl.readers import held_out_split, read_text_lines, text_key
from camtl.tasks import EXTRA_TASKS, GLUE_TASKS, TaskDef, get_task, load_split, split_counts, user_task
from modeling_camtl import CaMtlConfig, check_task_fields

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXTRA, GLUE = DATA / "extra", DATA / "glue"

#: (train rows, evaluation rows, label counts of the evaluation split) as read from the files (the issue's counts).
EXPECTED = {
    "sick_e": (4500, 4927, {"neutral": 2793, "entailment": 1414, "contradiction": 720}),
    "sick_r": (4500, 4927, None),
    "snli": (9824, 9842, {"entailment": 3329, "contradiction": 3278, "neutral": 3235}),
    "trec": (5452, 500, {"DESC": 138, "ENTY": 94, "ABBR": 9, "HUM": 65, "NUM": 113, "LOC": 81}),
    "mr": (9660, 1000, {"negative": 500, "positive": 500}),
    "subj": (8998, 1000, {"objective": 500, "subjective": 500}),
    "cr": (3362, 400, {"negative": 145, "positive": 255}),
    "mpqa": (7127, 1000, None),
    "cb": (250, 56, {"contradiction": 28, "entailment": 23, "neutral": 5}),
    "boolq": (2269, 1000, None),
    "wic": (438, 200, {"false": 100, "true": 100}),
    "ag_news": (6599, 1000, {"world": 250, "sports": 250, "business": 250, "sci_tech": 250}),
    "qnli_dev": (4463, 1000, None),
}


def load(name: str, split: str):
    return load_split(get_task(name), split, data_dir=GLUE, extra_dir=EXTRA)


@pytest.mark.parametrize("name", sorted(EXTRA_TASKS))
def test_each_builtin_task_reads_its_files(name: str) -> None:
    task = get_task(name)
    train, evaluation = load(name, "train"), load(name, "validation")
    n_train, n_eval, eval_labels = EXPECTED[name]
    assert (len(train), len(evaluation)) == (n_train, n_eval)
    for ds in (train, evaluation):
        assert ds.column_names == ["text_a", "text_b", "label"]
        assert all(t.strip() for t in ds["text_a"])
        assert all(ds["text_b"]) if task.is_pair else not any(ds["text_b"])
    if task.kind == "regression":
        assert 1.0 <= min(evaluation["label"]) < 1.5 and max(evaluation["label"]) == 5.0
        return
    names = evaluation.features["label"].names
    assert names == list(task.labels)
    assert set(train["label"]) == set(range(len(names)))  # every class trains
    if eval_labels is not None:
        assert dict(Counter(names[i] for i in evaluation["label"])) == eval_labels


def test_first_rows_are_mapped_right() -> None:
    sick = load("sick_e", "train")[0]
    assert sick["text_a"].startswith("A group of kids is playing in a yard")
    assert sick["label"] == 1  # NEUTRAL
    assert load("sick_r", "train")[0]["label"] == pytest.approx(4.5)
    test = load("sick_r", "validation")  # the test file's CRLF line ends: no "\r" left in a text or a label
    assert test[0]["text_a"] == "There is no boy playing outdoors and there is no man smiling"
    assert not any("\r" in t for t in list(test["text_a"]) + list(test["text_b"]))
    snli = load("snli", "validation")[0]
    assert snli["text_a"] == "Two women are embracing while holding to go packages ."
    assert snli["label"] == 1  # labels.dev starts with "neutral"
    trec = load("trec", "train")[0]
    assert trec["text_a"] == "How did serfdom develop in and then leave Russia ?" and trec["label"] == 1  # DESC
    wic = load("wic", "train")
    assert all(": " in t for t in wic["text_a"])  # the target word first


def test_cp1252_byte_0x85_is_no_line_break() -> None:
    """MR's files hold byte 0x85: an ellipsis in cp1252, NEL in latin-1, where str.splitlines() cuts the line."""
    path = EXTRA / "MR" / "rt-polarity.pos"
    assert path.read_bytes().count(b"\x85") == 13
    lines = read_text_lines(str(path), "cp1252")
    assert len(lines) == 5331
    assert sum(line.count("\u2026") for line in lines) == 13
    assert len(path.read_bytes().decode("latin-1").splitlines()) == 5331 + 13  # the pitfall this reader avoids


def test_held_out_splits_are_deduplicated_stratified_and_seeded() -> None:
    counts = split_counts("mpqa", GLUE, EXTRA)
    assert counts == {
        "rows": 10603,
        "duplicates": 2061,
        "conflicting": 415,
        "empty": 0,
        "train": 7127,
        "evaluation": 1000,
    }
    train, held = load("mpqa", "train"), load("mpqa", "validation")
    keys = lambda ds: {text_key(t) for t in ds["text_a"]}  # noqa: E731
    assert not keys(train) & keys(held)  # no phrase on both sides
    assert len(keys(train)) == len(train)  # each phrase once
    # stratified: the held-out part has the label shares of the deduplicated rows
    share = sum(train["label"]) + sum(held["label"])
    assert abs(sum(held["label"]) / 1000 - share / (len(train) + 1000)) < 0.001
    # seeded: the same split every time, another seed another split
    rows = {"text_a": ["a", "b", "c", "d", "e", "f", "g", "h"], "text_b": [""] * 8, "label": ["x", "y"] * 4}
    first = held_out_split(rows, 4, seed=42)[1]
    assert first == held_out_split(rows, 4, seed=42)[1]
    assert Counter(first["label"]) == {"x": 2, "y": 2}
    assert any(held_out_split(rows, 4, seed=s)[1] != first for s in range(1, 5))
    with pytest.raises(ValueError, match="held_out must be in"):
        held_out_split(rows, 8, seed=42)


def test_superglue_rte_never_a_task() -> None:
    """SuperGLUE's RTE val file is GLUE's RTE dev set: it must never train, so it is no built-in task."""
    assert not any("RTE" in str(t.source.train) for t in EXTRA_TASKS.values())
    assert "rte" in GLUE_TASKS


def test_missing_extra_dir_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.extra_dir"):
        load_split(get_task("mr"), "train")
    with pytest.raises(FileNotFoundError, match="rt-polarity.neg"):
        load_split(get_task("mr"), "train", extra_dir=tmp_path)
    with pytest.raises(ValueError, match="data.data_dir"):
        load_split(get_task("qnli_dev"), "train", extra_dir=EXTRA)
    with pytest.raises(ValueError, match="auxiliary tasks: .*'sick_e'"):
        get_task("sick")
    with pytest.raises(ValueError, match="'snli' is a built-in task"):
        TaskDef.from_dict({"name": "snli", "train_file": "x.csv"})


def test_one_home_for_the_task_spec_rules(tmp_path: Path) -> None:
    """The data side and the model config accept and refuse the same specs with the same messages."""
    assert (
        user_task(
            "My-Task", train_file=tmp_path / "t.csv", text_columns=["text"], label_column="label", labels=["a", "b"]
        ).name
        == "My-Task"
    )  # mixed case: what a saved model config accepts
    bad = [
        ({"name": "bad name"}, "invalid task name"),
        ({"kind": "ranking"}, "unknown kind 'ranking'"),
        ({"labels": ["a"]}, "at least 2 label names"),
        ({"labels": ["a", "a"]}, "duplicate label names"),
        ({"text_fields": ["a", "b", "c"]}, "one text or a pair"),
    ]
    for change, message in bad:
        spec = {"name": "t", "kind": "classification", "labels": ["a", "b"], "text_fields": ["text"], **change}
        with pytest.raises(ValueError, match=message):
            CaMtlConfig(tasks=[spec])
        with pytest.raises(ValueError, match=message):
            user_task(
                spec["name"],
                train_file=tmp_path / "t.csv",
                text_columns=spec["text_fields"],
                label_column="label",
                kind=spec["kind"],
                labels=spec["labels"],
            )
    with pytest.raises(ValueError, match="metric 'mcc' does not fit a regression task"):
        check_task_fields("t", "regression", [], ["a", "b"], metric="mcc")
    for task in EXTRA_TASKS.values():  # every built-in spec is a valid model spec
        assert CaMtlConfig(tasks=[task.to_spec()]).tasks[0]["name"] == task.name


@pytest.mark.parametrize("name", ["qnli_dev", "boolq"])
def test_held_out_groups_keep_shared_texts_on_one_side(name: str) -> None:
    """QNLI's dev file pairs a question with several sentences and BoolQ asks several questions of one passage: rows
    sharing a text go to one side whole."""
    train, held = load(name, "train"), load(name, "validation")
    texts = lambda ds: {text_key(t) for t in list(ds["text_a"]) + list(ds["text_b"])}  # noqa: E731
    assert not texts(train) & texts(held)
    raw_a = [text_key(t) for t in list(train["text_a"]) + list(held["text_a"])]
    raw_b = [text_key(t) for t in list(train["text_b"]) + list(held["text_b"])]
    assert len(set(raw_a)) < len(raw_a) or len(set(raw_b)) < len(raw_b)  # the files do share texts
