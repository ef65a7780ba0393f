"""Task definitions and data loading for CA-MTL: the GLUE tasks built in, plus the user's own files.

Every split, whatever its source, comes back from `load_split` as a `datasets.Dataset` with the
same three columns:

* ``text_a`` (str): the first (or only) text;
* ``text_b`` (str): the second text of a pair task, ``""`` for single-text tasks. The column is
  always present so that every task has one schema; `tokenize_split` encodes a single text when a
  batch's ``text_b`` are all ``""``.
* ``label``: a ``ClassLabel`` id (int) for classification, a ``float32`` for regression.

Rows are checked while loading (empty text, labels outside the declared set, values that are not
numbers), so a bad file fails before any training, with the file, the row and the allowed values in
the message. Row numbers are 1-based data rows (a header line is not counted).

Sources:

* GLUE (`GLUE_TASKS`, `get_task`): with ``data_dir=None`` the Hub dataset ``nyu-mll/glue``; with a
  ``data_dir`` the official TSV layout of GLUE's ``download_glue_data.py``
  (``<data_dir>/SST-2/train.tsv``, ``dev.tsv``, ...), read with ``csv.QUOTE_NONE`` (fields may start
  with a literal ``"``) and ``utf-8-sig`` (MRPC's byte-order mark); CoLA has no header line. (The
  Hub's MRPC text is SentEval-tokenized, the TSV's is the original text; the labels are the same.)
* User files (`user_task`, `TaskDef.from_dict`): CSV (standard quoting), TSV (read like GLUE: no
  quote processing; also a ``.txt`` file whose first line holds a tab, like SICK's), JSON (an array of
  records or JSON lines) and JSONL. CSV/TSV cells are read as strings, never type-guessed.

All reading goes through ``datasets.load_dataset`` and batched ``Dataset.map`` with module-level
functions, so the Arrow cache and its fingerprints work: a second load or tokenization is read from
the cache.
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import datasets
import pandas
import torch
from datasets import ClassLabel, Features, List, Value
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

Kind = Literal["classification", "regression"]
Split = Literal["train", "validation"]

HUB_GLUE = "nyu-mll/glue"
SPLITS: tuple[str, ...] = ("train", "validation")
KINDS: tuple[str, ...] = ("classification", "regression")
METRICS_FOR_KIND: dict[str, tuple[str, ...]] = {
    "classification": ("mcc", "accuracy", "f1"),
    "regression": ("pearson_spearman",),
}
FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "jsonl")
LABEL_ENCODINGS: tuple[str, ...] = ("auto", "name", "index")
_EXTENSIONS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def _as_str_tuple(values: str | Sequence[Any] | None) -> tuple[str, ...]:
    """A string or a sequence as a tuple of strings."""
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)


def _format_from_extension(path: str) -> str:
    """File format from the extension; a ``.txt`` file is TSV when its first line holds a tab (ValueError listing the
    known formats otherwise)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".txt" and os.path.isfile(path):
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            if "\t" in f.readline():
                return "tsv"
    if ext not in _EXTENSIONS:
        txt = " (a .txt file is read as TSV when its first line holds a tab)" if ext == ".txt" else ""
        raise ValueError(f"Cannot tell the format of {path!r} from its extension{txt}; pass format= one of "
                         f"{list(FORMATS)}.")
    return _EXTENSIONS[ext]


def _find_file(path: str | os.PathLike, folders: Sequence[str | os.PathLike], what: str) -> str:
    """``path`` in the first of ``folders`` that holds it; FileNotFoundError naming every place tried."""
    tried = [os.path.abspath(os.path.join(os.fspath(folder), os.fspath(path))) for folder in folders]
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist: looked for "
                                + " and ".join(repr(p) for p in dict.fromkeys(tried)) + ".")
    return found


def _strip(value: Any) -> Any:
    """Strip surrounding whitespace from strings; other values unchanged."""
    return value.strip() if isinstance(value, str) else value


def _as_index(value: Any) -> int | None:
    """An integer label index from an int, an integral float or a digit string; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string; else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _root_cause(e: BaseException) -> str:
    """The innermost cause of a chained exception, as ``Type: message``."""
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------------------------------------
# Task definitions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GlueSource:
    """Where a built-in GLUE task lives: a ``nyu-mll/glue`` config and the official TSV layout.

    ``text_columns``/``label_column`` name the local TSV columns (``column_names`` gives the names of
    a header-less file such as CoLA's). ``label_encoding`` says how a raw TSV label becomes an id:
    ``"index"`` (the cell is the id, ``"0"``/``"1"``) or ``"name"`` (the cell is the label name,
    ``"entailment"``). On the Hub the text columns are the task's ``text_fields`` and ``label`` is
    already an id.
    """

    hub_config: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    label_encoding: Literal["index", "name"] = "index"
    train_file: str = "train.tsv"
    validation_file: str = "dev.tsv"
    hub_validation_split: str = "validation"
    column_names: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class FileSource:
    """A user task's files: ``train_file`` (and optionally ``validation_file``) in one ``format``.

    ``format`` is one of `FORMATS`; when None it comes from the train file's extension.
    ``label_encoding`` maps a raw label to an id: ``"name"`` (the value is a label name),
    ``"index"`` (an integer id), or ``"auto"`` (a name first, else an integer index).
    """

    train_file: str
    text_columns: tuple[str, ...]
    label_column: str
    validation_file: str | None = None
    format: str | None = None
    label_encoding: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_file", os.fspath(self.train_file))
        if self.validation_file is not None:
            object.__setattr__(self, "validation_file", os.fspath(self.validation_file))
        object.__setattr__(self, "text_columns", _as_str_tuple(self.text_columns))
        fmt = self.format if self.format is not None else _format_from_extension(self.train_file)
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"Unknown file format {self.format!r}; valid formats: {list(FORMATS)}.")
        object.__setattr__(self, "format", fmt)
        if self.label_encoding not in LABEL_ENCODINGS:
            raise ValueError(
                f"Unknown label_encoding {self.label_encoding!r}; valid: {list(LABEL_ENCODINGS)}."
            )

    def file_for(self, split: str) -> str:
        """The file that holds ``split`` (ValueError when no validation file was declared)."""
        if split == "train":
            return self.train_file
        if self.validation_file is None:
            raise ValueError("No validation_file was declared for this task; declare one to evaluate it.")
        return self.validation_file


@dataclass(frozen=True, kw_only=True)
class TaskDef:
    """One task: what the model must know (`to_spec`) plus where its data comes from (``source``).

    Attributes:
        name: lowercase id (``"sst2"``, ``"my-task"``), also the name of the task's head.
        kind: ``"classification"`` or ``"regression"``.
        labels: label names in id order; ``()`` for regression, and for a file task whose labels
            are to be inferred from its train file (see `resolve_labels`).
        text_fields: names of the 1 or 2 inputs (``("premise", "hypothesis")``).
        metric: the GLUE main metric, one of `METRICS_FOR_KIND` for the kind.
        label_range: ``(lo, hi)`` of a regression target (STS-B: ``(0, 5)``), checked on load.
        source: a `GlueSource` or a `FileSource`.
    """

    name: str
    kind: Kind
    labels: tuple[str, ...] = ()
    text_fields: tuple[str, ...]
    metric: str
    label_range: tuple[float, float] | None = None
    source: GlueSource | FileSource = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _as_str_tuple(self.labels))
        object.__setattr__(self, "text_fields", _as_str_tuple(self.text_fields))
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"Invalid task name {self.name!r}: use lowercase letters, digits, '_' or '-' (e.g. 'sst2')."
            )
        if self.kind not in KINDS:
            raise ValueError(f"Task {self.name!r}: unknown kind {self.kind!r}; valid kinds: {list(KINDS)}.")
        if len(self.text_fields) not in (1, 2):
            raise ValueError(f"Task {self.name!r}: text_fields must name 1 or 2 inputs, got {list(self.text_fields)}.")
        if self.metric not in METRICS_FOR_KIND[self.kind]:
            raise ValueError(
                f"Task {self.name!r}: metric {self.metric!r} does not fit a {self.kind} task; "
                f"valid: {list(METRICS_FOR_KIND[self.kind])}."
            )
        if self.kind == "classification":
            self._check_labels()
        else:
            self._check_regression()
        if isinstance(self.source, FileSource) and len(self.source.text_columns) != len(self.text_fields):
            raise ValueError(
                f"Task {self.name!r}: {len(self.source.text_columns)} text_columns "
                f"{list(self.source.text_columns)} for {len(self.text_fields)} text_fields {list(self.text_fields)}."
            )

    def _check_labels(self) -> None:
        if self.label_range is not None:
            raise ValueError(f"Task {self.name!r}: label_range is for regression tasks only.")
        if not self.labels and not isinstance(self.source, FileSource):
            raise ValueError(f"Task {self.name!r}: a classification task needs its label names.")
        if self.labels and len(self.labels) < 2:
            raise ValueError(
                f"Task {self.name!r}: a classification task needs at least 2 labels, got {list(self.labels)}."
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"Task {self.name!r}: duplicate label names in {list(self.labels)}.")

    def _check_regression(self) -> None:
        if self.labels:
            raise ValueError(f"Task {self.name!r}: a regression task has no labels, got {list(self.labels)}.")
        if self.label_range is None:
            return
        lo, hi = (float(v) for v in self.label_range)
        if not lo < hi:
            raise ValueError(
                f"Task {self.name!r}: label_range must be [lo, hi] with lo < hi, got {list(self.label_range)}."
            )
        object.__setattr__(self, "label_range", (lo, hi))

    @property
    def is_pair(self) -> bool:
        """Whether the task reads two texts."""
        return len(self.text_fields) == 2

    @property
    def num_labels(self) -> int:
        """Output size of the task's head: the number of classes, or 1 for regression."""
        return len(self.labels) if self.kind == "classification" else 1

    def to_spec(self) -> dict[str, Any]:
        """The plain, JSON-ready dict the model config stores for this task."""
        spec: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "labels": list(self.labels),
            "text_fields": list(self.text_fields),
        }
        if self.kind == "regression":
            spec["label_range"] = list(self.label_range) if self.label_range is not None else None
        return spec

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], search_dirs: Sequence[str | os.PathLike] | None = None) -> TaskDef:
        """Build a task from a plain dict (a YAML/JSON config entry).

        ``{"name": "rte"}`` gives the built-in GLUE task. Any other dict is a file task with the
        keyword arguments of `user_task` (``train_file``, ``text_columns``, ``label_column`` are
        required). A relative file path is looked up in each of ``search_dirs`` in turn (``train.py``: the data
        folder, then the working directory); FileNotFoundError naming every place tried when none holds it.
        """
        d = dict(d)
        if "name" not in d:
            raise ValueError(f"A task needs a 'name'; got keys {sorted(d)}.")
        if set(d) == {"name"}:
            return get_task(d["name"])
        if str(d["name"]).lower().replace("-", "") in GLUE_TASKS:
            raise ValueError(
                f"{d['name']!r} is a built-in GLUE task: give only its name, or another name for a file task; "
                f"got keys {sorted(d)}."
            )
        unknown = sorted(set(d) - _USER_TASK_KEYS)
        if unknown:
            raise ValueError(f"Task {d['name']!r}: unknown keys {unknown}; valid keys: {sorted(_USER_TASK_KEYS)}.")
        if "train_file" not in d:
            raise ValueError(
                f"Task {d['name']!r} is not a GLUE task ({sorted(GLUE_TASKS)}) and declares no 'train_file'; "
                "a file task needs train_file, text_columns and label_column."
            )
        if search_dirs is not None:
            for key in ("train_file", "validation_file"):
                if d.get(key) is not None and not os.path.isabs(d[key]):
                    d[key] = _find_file(d[key], search_dirs, f"Task {d['name']!r}: {key}")
        return user_task(**d)


_USER_TASK_KEYS = frozenset(
    {"name", "kind", "labels", "text_fields", "metric", "label_range", "train_file", "validation_file",
     "format", "text_columns", "label_column", "label_encoding"}
)


def user_task(
    name: str,
    *,
    train_file: str | os.PathLike,
    text_columns: str | Sequence[str],
    label_column: str,
    validation_file: str | os.PathLike | None = None,
    kind: Kind = "classification",
    labels: Sequence[Any] | None = None,
    metric: str | None = None,
    label_range: Sequence[float] | None = None,
    format: str | None = None,
    label_encoding: str = "auto",
    text_fields: Sequence[str] | None = None,
) -> TaskDef:
    """Define a task read from the user's CSV/TSV/JSON/JSONL files.

    Classification labels are either declared (``labels=["neg", "pos"]``; raw values are matched
    by name, then, with ``label_encoding="auto"``, by integer index) or left out, in which case
    `load_split` infers them from the train file: the sorted unique values (numerically when
    they are all integers), as strings. Declare them when the validation file could hold a value
    the train file lacks. ``metric`` defaults to accuracy (classification) or
    pearson_spearman (regression); ``text_fields`` default to the column names.
    """
    columns = _as_str_tuple(text_columns)
    source = FileSource(
        train_file=train_file,
        validation_file=validation_file,
        format=format,
        text_columns=columns,
        label_column=label_column,
        label_encoding=label_encoding,
    )
    if metric is None:
        metric = "pearson_spearman" if kind == "regression" else "accuracy"
    return TaskDef(
        name=name,
        kind=kind,
        labels=tuple(labels or ()),
        text_fields=_as_str_tuple(text_fields) if text_fields is not None else columns,
        metric=metric,
        label_range=tuple(label_range) if label_range is not None else None,
        source=source,
    )


def _glue(name: str, labels: Sequence[str], text_fields: Sequence[str], metric: str, **source: Any) -> TaskDef:
    """Shorthand for one built-in GLUE definition."""
    kind = "regression" if metric == "pearson_spearman" else "classification"
    return TaskDef(
        name=name,
        kind=kind,
        labels=tuple(labels),
        text_fields=tuple(text_fields),
        metric=metric,
        label_range=(0.0, 5.0) if kind == "regression" else None,
        source=GlueSource(hub_config=name, **source),
    )


#: The GLUE tasks, label names in the order of ``nyu-mll/glue`` (so Hub ids and TSV ids agree).
GLUE_TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        _glue("cola", ["unacceptable", "acceptable"], ["sentence"], "mcc", folder="CoLA",
              column_names=("source", "label", "orig_label", "sentence"),
              text_columns=("sentence",), label_column="label"),
        _glue("sst2", ["negative", "positive"], ["sentence"], "accuracy", folder="SST-2",
              text_columns=("sentence",), label_column="label"),
        _glue("mrpc", ["not_equivalent", "equivalent"], ["sentence1", "sentence2"], "f1", folder="MRPC",
              text_columns=("#1 String", "#2 String"), label_column="Quality"),
        _glue("stsb", [], ["sentence1", "sentence2"], "pearson_spearman", folder="STS-B",
              text_columns=("sentence1", "sentence2"), label_column="score"),
        _glue("rte", ["entailment", "not_entailment"], ["sentence1", "sentence2"], "accuracy", folder="RTE",
              text_columns=("sentence1", "sentence2"), label_column="label", label_encoding="name"),
        _glue("wnli", ["not_entailment", "entailment"], ["sentence1", "sentence2"], "accuracy", folder="WNLI",
              text_columns=("sentence1", "sentence2"), label_column="label"),
        _glue("qnli", ["entailment", "not_entailment"], ["question", "sentence"], "accuracy", folder="QNLI",
              text_columns=("question", "sentence"), label_column="label", label_encoding="name"),
        _glue("mnli", ["entailment", "neutral", "contradiction"], ["premise", "hypothesis"], "accuracy",
              folder="MNLI", text_columns=("sentence1", "sentence2"), label_column="gold_label",
              label_encoding="name", validation_file="dev_matched.tsv", hub_validation_split="validation_matched"),
        _glue("qqp", ["not_duplicate", "duplicate"], ["question1", "question2"], "f1", folder="QQP",
              text_columns=("question1", "question2"), label_column="is_duplicate"),
    )
}


def get_task(name: str) -> TaskDef:
    """The built-in GLUE task ``name``; folder spellings (``"SST-2"``, ``"STS-B"``) are accepted."""
    key = str(name).lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"Unknown task {name!r}; known GLUE tasks: {sorted(GLUE_TASKS)} (or define a file task).")
    return GLUE_TASKS[key]


def resolve_labels(task: TaskDef) -> TaskDef:
    """Return ``task`` with its label names filled in from its train file when none were declared.

    The names are the sorted unique values of the label column (numerically sorted when they are
    all integers), as strings, and are then matched by name only. Call it before building the model
    config, so that `TaskDef.to_spec` carries the labels.
    """
    if task.kind != "classification" or task.labels or not isinstance(task.source, FileSource):
        return task
    src = task.source
    ds = _read_file(src.train_file, src.format)
    _check_columns(ds.column_names, [src.label_column], src.train_file)
    values = [_strip(v) for v in ds.unique(src.label_column)]
    if any(v is None or v == "" for v in values):
        raise ValueError(f"{src.train_file}: column {src.label_column!r} has empty labels; every row needs one.")
    ints = [_as_index(v) for v in values]
    ordered = sorted(values, key=_as_index) if None not in ints else sorted(values, key=str)
    names = tuple(str(v) for v in ordered)
    if len(names) < 2:
        raise ValueError(f"{src.train_file}: only one label value {list(names)} in column {src.label_column!r}; "
                         "a classification task needs at least 2.")
    # inferred names are the raw values themselves: match by name only, never by index
    return replace(task, labels=names, source=replace(src, label_encoding="name"))


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_split(
    task: TaskDef | str,
    split: Split,
    data_dir: str | os.PathLike | None = None,
    max_rows: int | None = None,
    seed: int | None = None,
) -> datasets.Dataset:
    """Load one split of a task as a Dataset with columns ``text_a``, ``text_b``, ``label``.

    Args:
        task: a `TaskDef` (or a GLUE task name).
        split: ``"train"`` or ``"validation"`` (GLUE's ``dev.tsv``; MNLI's ``dev_matched.tsv``).
        data_dir: for GLUE tasks, a folder in the official layout (``<data_dir>/RTE/train.tsv``);
            None reads the Hub dataset ``nyu-mll/glue``. Ignored by file tasks, whose paths are
            their own.
        max_rows: keep at most this many rows: the first ones, or with ``seed`` a seeded random
            sample. Every row of the file is still checked.
        seed: with ``max_rows``: None (default) keeps the first rows; an int shuffles with it first.

    Raises:
        ValueError: unknown split or task, missing column, unreadable file, empty text, bad label.
        FileNotFoundError: a missing data folder or file (the message gives the expected layout).
    """
    if isinstance(task, str):
        task = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits: {list(SPLITS)}.")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}.")
    if isinstance(task.source, GlueSource):
        raw, origin, text_columns, label_column, encoding = _load_glue_raw(task, task.source, split, data_dir)
    else:
        task = resolve_labels(task)
        src = task.source
        origin = src.file_for(split)
        raw = _read_file(origin, src.format)
        text_columns, label_column, encoding = src.text_columns, src.label_column, src.label_encoding
    _check_columns(raw.column_names, [*text_columns, label_column], origin)
    ds = _to_examples(raw, task, text_columns, label_column, encoding, origin)
    return _take(ds, max_rows, seed)


def _load_glue_raw(
    task: TaskDef, src: GlueSource, split: str, data_dir: str | os.PathLike | None
) -> tuple[datasets.Dataset, str, tuple[str, ...], str, str]:
    """Read a GLUE split from the Hub or the local TSV layout: (raw dataset, origin, columns, encoding)."""
    if data_dir is None:
        hub_split = "train" if split == "train" else src.hub_validation_split
        try:
            raw = datasets.load_dataset(HUB_GLUE, src.hub_config, split=hub_split)
        except (ConnectionError, OSError) as e:
            raise ConnectionError(
                f"Could not load {HUB_GLUE} ({src.hub_config}, {hub_split}) from the Hub: {e}. Offline? Pass "
                f"data_dir=<folder with the GLUE TSV layout, e.g. {src.folder}/{src.train_file}>."
            ) from e
        return raw, f"{HUB_GLUE}/{src.hub_config}[{hub_split}]", task.text_fields, "label", "index"
    path = _glue_path(task, src, split, os.fspath(data_dir))
    raw = _read_table(path, "tsv", column_names=src.column_names)
    return raw, path, src.text_columns, src.label_column, src.label_encoding


def _glue_path(task: TaskDef, src: GlueSource, split: str, data_dir: str) -> str:
    """Path of a GLUE split in ``data_dir``; FileNotFoundError that spells out the expected layout."""
    file_name = src.train_file if split == "train" else src.validation_file
    path = os.path.join(data_dir, src.folder, file_name)
    if os.path.isfile(path):
        return path
    layout = f"<data_dir>/{src.folder}/{{{src.train_file},{src.validation_file}}}"
    if not os.path.isdir(data_dir):
        problem = f"data_dir {data_dir!r} does not exist"
    elif not os.path.isdir(os.path.join(data_dir, src.folder)):
        problem = f"folder {os.path.join(data_dir, src.folder)!r} does not exist"
    else:
        problem = f"file {path!r} does not exist"
    raise FileNotFoundError(
        f"GLUE task {task.name!r}, split {split!r}: {problem}. Expected the official GLUE layout {layout} "
        f"(the output of download_glue_data.py), or data_dir=None to read {HUB_GLUE} from the Hub."
    )


def _read_file(path: str, fmt: str) -> datasets.Dataset:
    """Read a user file (FileNotFoundError naming it when missing)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Data file {path!r} does not exist (expected a {fmt.upper()} file).")
    return _read_table(path, fmt)


def _read_table(path: str, fmt: str, column_names: Sequence[str] | None = None) -> datasets.Dataset:
    """Read a csv/tsv/json/jsonl file with ``load_dataset``; CSV/TSV cells all as strings.

    TSV is read like GLUE (``csv.QUOTE_NONE``), CSV with standard quoting; both ``utf-8-sig``.
    ``column_names`` names the columns of a file without a header line.
    """
    if fmt in ("csv", "tsv"):
        delimiter, quoting = (",", csv.QUOTE_MINIMAL) if fmt == "csv" else ("\t", csv.QUOTE_NONE)
        names = list(column_names) if column_names is not None else _read_header(path, delimiter, quoting)
        kwargs: dict[str, Any] = dict(
            delimiter=delimiter,
            quoting=quoting,
            encoding="utf-8-sig",
            na_filter=False,  # keep "", "NA", "null" as text
            index_col=False,  # never take surplus fields of the first row as an index
            features=Features({name: Value("string") for name in names}),
        )
        if column_names is not None:
            kwargs["column_names"] = names
        builder = "csv"
    else:
        builder, kwargs = "json", {}
    try:
        with warnings.catch_warnings():
            # pandas only warns when a row has more fields than the header and drops them: fail instead
            warnings.simplefilter("error", pandas.errors.ParserWarning)
            return datasets.load_dataset(builder, data_files={"train": path}, split="train", **kwargs)
    except Exception as e:  # pandas/pyarrow/datasets errors all mean the same thing here
        if _holds_no_rows(path, fmt, header=column_names is None):
            what = "a header line but no data rows" if fmt in ("csv", "tsv") and column_names is None else "no rows"
            raise ValueError(f"Could not read {path!r}: it has {what}; every split needs at least one example.") from e
        hint = ""
        if fmt in ("csv", "tsv"):
            hint = " Every row needs as many fields as the header" + (
                "; TSV is read without quote processing, like GLUE." if fmt == "tsv" else "."
            )
        raise ValueError(f"Could not read {path!r} as {fmt.upper()}: {_root_cause(e).strip()}.{hint}") from e


def _holds_no_rows(path: str, fmt: str, header: bool) -> bool:
    """Whether a data file holds no example: only blank lines after the header line, or an empty JSON array."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        if fmt in ("csv", "tsv", "jsonl"):
            lines = iter(f)
            if header and fmt != "jsonl":
                next(lines, None)
            return not any(line.strip() for line in lines)
        text = f.read().strip()
    return text in ("", "[]") or re.fullmatch(r"\[\s*\]", text) is not None


def _read_header(path: str, delimiter: str, quoting: int) -> list[str]:
    """Column names from the first line of a CSV/TSV file."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=delimiter, quoting=quoting), None)
    except UnicodeDecodeError as e:
        raise ValueError(f"Could not read {path!r}: not UTF-8 text ({e}).") from e
    if not header or not any(h.strip() for h in header):
        raise ValueError(f"Could not read {path!r}: the file is empty or has no header line.")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise ValueError(f"Could not read {path!r}: duplicate column names {duplicates} in the header {header}.")
    return header


def _check_columns(available: Sequence[str], needed: Sequence[str], origin: str) -> None:
    """ValueError naming the missing columns and the columns the file has."""
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing}; the file's columns are {list(available)}.")


def _to_examples(
    raw: datasets.Dataset,
    task: TaskDef,
    text_columns: Sequence[str],
    label_column: str,
    label_encoding: str,
    origin: str,
) -> datasets.Dataset:
    """Map raw columns to ``text_a``/``text_b``/``label``, checking every row (cached batched map)."""
    label_feature = ClassLabel(names=list(task.labels)) if task.kind == "classification" else Value("float32")
    features = Features({"text_a": Value("string"), "text_b": Value("string"), "label": label_feature})
    return raw.map(
        _convert_batch,
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        features=features,
        fn_kwargs=dict(
            text_columns=tuple(text_columns),
            label_column=label_column,
            kind=task.kind,
            labels=task.labels,
            label_encoding=label_encoding,
            label_range=task.label_range,
            origin=origin,
        ),
        desc=f"Checking {task.name}",
    )


def _convert_batch(
    batch: dict[str, list],
    indices: list[int],
    *,
    text_columns: tuple[str, ...],
    label_column: str,
    kind: str,
    labels: tuple[str, ...],
    label_encoding: str,
    label_range: tuple[float, float] | None,
    origin: str,
) -> dict[str, list]:
    """One batch of raw rows -> ``text_a``, ``text_b``, ``label``; ValueError on the first bad row."""
    texts = [_texts(batch[c], c, indices, origin) for c in text_columns]
    text_b = texts[1] if len(texts) == 2 else [""] * len(indices)
    raw_labels = batch[label_column]
    if kind == "classification":
        label = _label_ids(raw_labels, labels, label_encoding, indices, origin)
    else:
        label = _float_labels(raw_labels, label_range, indices, origin)
    return {"text_a": texts[0], "text_b": text_b, "label": label}


def _texts(values: list, column: str, indices: list[int], origin: str) -> list[str]:
    """Cells of a text column as strings; ValueError on the first empty one."""
    texts = ["" if v is None else v if isinstance(v, str) else str(v) for v in values]
    empty = next((k for k, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise ValueError(
            f"{origin}: row {indices[empty] + 1}: empty text in column {column!r}; every example needs text."
        )
    return texts


def _label_ids(values: list, labels: tuple[str, ...], encoding: str, indices: list[int], origin: str) -> list[int]:
    """Raw labels -> ids by name and/or integer index; ValueError naming the first bad value."""
    by_name = {name: i for i, name in enumerate(labels)} if encoding in ("name", "auto") else {}
    use_index = encoding in ("index", "auto")
    ids = [_label_id(v, by_name, len(labels), use_index) for v in values]
    bad = next((k for k, i in enumerate(ids) if i is None), None)
    if bad is not None:
        allowed = f"one of {list(labels)}" if by_name else ""
        if use_index:
            allowed += (" or " if allowed else "") + f"an integer index 0..{len(labels) - 1} into {list(labels)}"
        raise ValueError(f"{origin}: row {indices[bad] + 1}: label {values[bad]!r} is not {allowed}.")
    return ids  # type: ignore[return-value]


def _label_id(value: Any, by_name: Mapping[str, int], num_labels: int, use_index: bool) -> int | None:
    """The id of one raw label, or None when it is not a known name / valid index."""
    key = _strip(value)
    if key is not None and str(key) in by_name:
        return by_name[str(key)]
    if use_index:
        index = _as_index(key)
        if index is not None and 0 <= index < num_labels:
            return index
    return None


def _float_labels(
    values: list, label_range: tuple[float, float] | None, indices: list[int], origin: str
) -> list[float]:
    """Raw regression targets -> floats; ValueError on the first non-number or out-of-range value."""
    out = [_as_float(v) for v in values]
    for k, x in enumerate(out):
        if x is None:
            raise ValueError(f"{origin}: row {indices[k] + 1}: label {values[k]!r} is not a number (regression task).")
        if label_range is not None and not label_range[0] <= x <= label_range[1]:
            raise ValueError(
                f"{origin}: row {indices[k] + 1}: label {values[k]!r} is outside the declared range "
                f"{list(label_range)}."
            )
    return out  # type: ignore[return-value]


def _take(ds: datasets.Dataset, max_rows: int | None, seed: int | None) -> datasets.Dataset:
    """The first ``max_rows`` rows, or (with ``seed``) a seeded random sample of them."""
    if max_rows is None:
        return ds
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    return ds.select(range(min(max_rows, len(ds))))


# ----------------------------------------------------------------------------------------------
# Tokenization and batching
# ----------------------------------------------------------------------------------------------

MODEL_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")


def tokenize_split(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, task_id: int
) -> datasets.Dataset:
    """Tokenize a `load_split` dataset for one task (truncation to ``max_length``, no padding).

    Returns columns ``input_ids``, ``attention_mask``, ``token_type_ids`` (lists of varying length),
    ``labels`` (the ``label`` column, same feature) and ``task_ids`` (``task_id`` on every row).
    Pairs are encoded as ``[CLS] a [SEP] b [SEP]``, with ``longest_first`` truncation.
    """
    if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 0:
        raise ValueError(f"task_id must be a non-negative int (the task's index), got {task_id!r}.")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length!r}.")
    _check_columns(ds.column_names, ["text_a", "label"], "tokenize_split input")
    features = Features(
        {
            "input_ids": List(Value("int32")),
            "attention_mask": List(Value("int8")),
            "token_type_ids": List(Value("int8")),
            "labels": ds.features["label"],  # ClassLabel or float32, kept
            "task_ids": Value("int64"),
        }
    )
    return ds.map(
        _tokenize_batch,
        batched=True,
        remove_columns=ds.column_names,
        features=features,
        fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length, task_id=task_id),
        desc="Tokenizing",
    )


def _tokenize_batch(
    batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase, max_length: int, task_id: int
) -> dict[str, list]:
    """Encode one batch: single texts when every ``text_b`` is empty, pairs when none is."""
    text_b = batch.get("text_b") or [""] * len(batch["text_a"])
    has_b = [bool(t) for t in text_b]
    if all(has_b):
        enc = tokenizer(batch["text_a"], text_b, truncation=True, max_length=max_length, return_token_type_ids=True)
    elif not any(has_b):
        enc = tokenizer(batch["text_a"], truncation=True, max_length=max_length, return_token_type_ids=True)
    else:
        raise ValueError("A batch mixes empty and non-empty text_b: a task is either single-text or pairs.")
    n = len(batch["text_a"])
    return {**{k: enc[k] for k in MODEL_INPUTS}, "labels": batch["label"], "task_ids": [task_id] * n}


@dataclass
class MultiTaskCollator:
    """Pad a list of `tokenize_split` rows (from any mix of tasks) to the longest one in the batch.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids``, ``task_ids`` as LongTensors and
    ``labels`` as a float32 tensor of shape (B,): classification ids are exact as floats (below
    2**24), and the model casts them back to long for its classification heads. ``labels`` is left
    out when no row has one (prediction).
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        self._pad = DataCollatorWithPadding(
            self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self._pad([{k: f[k] for k in MODEL_INPUTS if k in f} for f in features]))  # (B, T) each
        batch["task_ids"] = torch.tensor([int(f["task_ids"]) for f in features], dtype=torch.long)  # (B,)
        with_labels = ["labels" in f and f["labels"] is not None for f in features]
        if any(with_labels):
            if not all(with_labels):
                raise ValueError("Some rows of the batch have labels and some do not.")
            batch["labels"] = torch.tensor([float(f["labels"]) for f in features], dtype=torch.float32)  # (B,)
        return batch


__all__ = [
    "FileSource",
    "GLUE_TASKS",
    "GlueSource",
    "MultiTaskCollator",
    "TaskDef",
    "get_task",
    "load_split",
    "resolve_labels",
    "tokenize_split",
    "user_task",
]
