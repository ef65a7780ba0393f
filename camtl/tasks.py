"""Task definitions for CA-MTL: what each task is (`TaskDef`), the built-in tasks and where their data comes from.

Sources:

* GLUE (`GLUE_TASKS`): with ``data_dir=None`` the Hub dataset ``nyu-mll/glue``; with a ``data_dir`` the official
  TSV layout of GLUE's ``download_glue_data.py`` (``<data_dir>/SST-2/train.tsv``, ``dev.tsv``, ...), read with
  ``csv.QUOTE_NONE`` (fields may start with a literal ``"``) and ``utf-8-sig`` (MRPC's byte-order mark); CoLA has no
  header line. (The Hub's MRPC text is SentEval-tokenized, the TSV's is the original text; the labels are the same.)
* Auxiliary sets (`EXTRA_TASKS`): SICK (entailment and relatedness), SNLI, TREC, MR, SUBJ, CR, MPQA, SuperGLUE's
  CB, BoolQ and WiC, AG News and QNLI's dev file, read from ``data.extra_dir`` (``../shared/data/extra``) as they are
  distributed. A set without a split of its own is deduplicated and split once, seeded and stratified
  (`readers.held_out_split`); each task's ``source.note`` says which file trains and which evaluates, and why.
* User files (`user_task`, `TaskDef.from_dict`): CSV, TSV, JSON and JSONL (`camtl.readers`).

The rules of a task's fields (name, kind, labels, text fields, label range, metric) have one home,
`modeling_camtl.check_task_fields`, which the model config applies to the specs it stores. Reading, checking and
tokenising rows is `camtl.readers`; `load_split` joins the two.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import datasets

from modeling_camtl import METRICS_FOR_KIND, TASK_KINDS, check_task_fields

from .readers import (
    FORMATS,
    LABEL_ENCODINGS,
    MULTI_LABEL_SEPARATOR,
    READERS,
    Rows,
    as_index,
    as_str_tuple,
    check_columns,
    find_file,
    format_from_extension,
    held_out_split,
    read_file,
    read_table,
    strip_text,
    take_rows,
    to_examples,
)

Kind = Literal["classification", "regression", "multi_label"]
Split = Literal["train", "validation"]

HUB_GLUE = "nyu-mll/glue"
SPLITS: tuple[str, ...] = ("train", "validation")
KINDS: tuple[str, ...] = TASK_KINDS
#: The seed of every held-out split of an auxiliary set without a split of its own.
HELD_OUT_SEED = 42


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
        object.__setattr__(self, "text_columns", as_str_tuple(self.text_columns))
        fmt = self.format if self.format is not None else format_from_extension(self.train_file)
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"Unknown file format {self.format!r}; valid formats: {list(FORMATS)}.")
        object.__setattr__(self, "format", fmt)
        if self.label_encoding not in LABEL_ENCODINGS:
            raise ValueError(f"Unknown label_encoding {self.label_encoding!r}; valid: {list(LABEL_ENCODINGS)}.")

    def file_for(self, split: str) -> str:
        """The file that holds ``split`` (ValueError when no validation file was declared)."""
        if split == "train":
            return self.train_file
        if self.validation_file is None:
            raise ValueError("No validation_file was declared for this task; declare one to evaluate it.")
        return self.validation_file


@dataclass(frozen=True, kw_only=True)
class BuiltinSource:
    """Where a built-in auxiliary task lives: files under ``data.extra_dir`` (``root="extra"``) or under the GLUE
    folder ``data.data_dir`` (``root="glue"``), read by ``readers.READERS[reader]``.

    ``train``/``validation`` are the reader's arguments after the folder. A set without a split of its own has
    ``validation=None`` and ``held_out`` rows: the train arguments' rows are deduplicated and split once by
    `readers.held_out_split` with ``seed`` (stratified), the rest trains. ``note`` says where the choice came from.
    """

    reader: str
    train: tuple
    validation: tuple | None = None
    held_out: int | None = None
    seed: int = HELD_OUT_SEED
    root: Literal["extra", "glue"] = "extra"
    note: str = ""

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ValueError(f"Unknown reader {self.reader!r}; valid readers: {sorted(READERS)}.")
        if (self.validation is None) == (self.held_out is None):
            raise ValueError("A built-in source has either a validation file or a held_out count, not both.")

    def file_for(self, split: str) -> str:
        """The file (or first file) a split is read from, for messages."""
        args = self.train if split == "train" or self.validation is None else self.validation
        first = args[0]
        return first[0][0] if isinstance(first, tuple) else f"SNLI/*.{first}" if self.reader == "snli" else first


@dataclass(frozen=True, kw_only=True)
class TaskDef:
    """One task: what the model must know (`to_spec`) plus where its data comes from (``source``).

    Attributes:
        name: the task's id (``"sst2"``, ``"my-task"``), also the name of its head; the rules of every field
            are `modeling_camtl.check_task_fields`' (the model config checks a saved task with the same function).
        kind: ``"classification"``, ``"regression"`` or ``"multi_label"`` (several labels per text, a sigmoid each).
        labels: label names in id order; ``()`` for regression, and for a classification file task whose labels
            are to be inferred from its train file (see `resolve_labels`); a multi_label task declares them.
        text_fields: names of the 1 or 2 inputs (``("premise", "hypothesis")``).
        metric: the main metric, one of ``METRICS_FOR_KIND[kind]``.
        label_range: ``(lo, hi)`` of a regression target (STS-B: ``(0, 5)``), checked on load.
        source: a `GlueSource`, a `BuiltinSource` (the auxiliary sets) or a `FileSource`.
    """

    name: str
    kind: Kind
    labels: tuple[str, ...] = ()
    text_fields: tuple[str, ...]
    metric: str
    label_range: tuple[float, float] | None = None
    source: GlueSource | BuiltinSource | FileSource = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", as_str_tuple(self.labels))
        object.__setattr__(self, "text_fields", as_str_tuple(self.text_fields))
        inferred = self.kind == "classification" and not self.labels and isinstance(self.source, FileSource)
        if self.kind == "classification" and not self.labels and not inferred:
            raise ValueError(f"Task {self.name!r}: a classification task needs its label names.")
        if self.kind == "multi_label":
            if not self.labels:
                raise ValueError(
                    f"Task {self.name!r}: a multi_label task needs its label names (labels: [...]); "
                    "they are not inferred from the data."
                )
            bad = [name for name in self.labels if MULTI_LABEL_SEPARATOR in name or name != name.strip()]
            if bad:
                raise ValueError(
                    f"Task {self.name!r}: multi-label names may not contain {MULTI_LABEL_SEPARATOR!r} "
                    f"(it separates a row's labels) nor surrounding spaces: {bad}."
                )
        fields = check_task_fields(
            self.name, self.kind, None if inferred else self.labels, self.text_fields, self.label_range, self.metric
        )  # the one home of the rules (the model config's)
        if fields["label_range"] is not None:
            object.__setattr__(self, "label_range", tuple(fields["label_range"]))
        if isinstance(self.source, FileSource) and len(self.source.text_columns) != len(self.text_fields):
            raise ValueError(
                f"Task {self.name!r}: {len(self.source.text_columns)} text_columns "
                f"{list(self.source.text_columns)} for {len(self.text_fields)} text_fields {list(self.text_fields)}."
            )

    @property
    def is_pair(self) -> bool:
        """Whether the task reads two texts."""
        return len(self.text_fields) == 2

    @property
    def num_labels(self) -> int:
        """Output size of the task's head: the number of labels, or 1 for regression."""
        return len(self.labels) if self.kind != "regression" else 1

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

        ``{"name": "rte"}`` gives the built-in task (GLUE or auxiliary, `BUILTIN_TASKS`). Any other dict is a file task
        with the keyword arguments of `user_task` (``train_file``, ``text_columns``, ``label_column`` are
        required). A relative file path is looked up in each of ``search_dirs`` in turn (``train.py``: the data
        folder, then the working directory); FileNotFoundError naming every place tried when none holds it.
        """
        d = dict(d)
        if "name" not in d:
            raise ValueError(f"A task needs a 'name'; got keys {sorted(d)}.")
        if set(d) == {"name"}:
            return get_task(d["name"])
        if _builtin_key(d["name"]) in BUILTIN_TASKS:
            raise ValueError(
                f"{d['name']!r} is a built-in task: give only its name, or another name for a file task; "
                f"got keys {sorted(d)}."
            )
        unknown = sorted(set(d) - _USER_TASK_KEYS)
        if unknown:
            raise ValueError(f"Task {d['name']!r}: unknown keys {unknown}; valid keys: {sorted(_USER_TASK_KEYS)}.")
        if "train_file" not in d:
            raise ValueError(
                f"Task {d['name']!r} is not a built-in task ({sorted(BUILTIN_TASKS)}) and declares no 'train_file'; "
                "a file task needs train_file, text_columns and label_column."
            )
        if search_dirs is not None:
            for key in ("train_file", "validation_file"):
                if d.get(key) is not None and not os.path.isabs(d[key]):
                    d[key] = find_file(d[key], search_dirs, f"Task {d['name']!r}: {key}")
        return user_task(**d)


_USER_TASK_KEYS = frozenset(
    {
        "name",
        "kind",
        "labels",
        "text_fields",
        "metric",
        "label_range",
        "train_file",
        "validation_file",
        "format",
        "text_columns",
        "label_column",
        "label_encoding",
    }
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
    the train file lacks. A ``multi_label`` task declares its labels; each row's cell holds its label
    names separated by ``MULTI_LABEL_SEPARATOR`` (``"sport|weather"``, ``""`` for none) or, in JSON, a
    list of names (`readers.multi_hot`). ``metric`` defaults to accuracy (classification),
    pearson_spearman (regression) or f1_micro (multi_label); ``text_fields`` default to the column names.
    """
    columns = as_str_tuple(text_columns)
    source = FileSource(
        train_file=train_file,
        validation_file=validation_file,
        format=format,
        text_columns=columns,
        label_column=label_column,
        label_encoding=label_encoding,
    )
    if metric is None:
        metric = {"regression": "pearson_spearman", "multi_label": "f1_micro"}.get(kind, "accuracy")
    return TaskDef(
        name=name,
        kind=kind,
        labels=tuple(labels or ()),
        text_fields=as_str_tuple(text_fields) if text_fields is not None else columns,
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
        _glue(
            "cola",
            ["unacceptable", "acceptable"],
            ["sentence"],
            "mcc",
            folder="CoLA",
            column_names=("source", "label", "orig_label", "sentence"),
            text_columns=("sentence",),
            label_column="label",
        ),
        _glue(
            "sst2",
            ["negative", "positive"],
            ["sentence"],
            "accuracy",
            folder="SST-2",
            text_columns=("sentence",),
            label_column="label",
        ),
        _glue(
            "mrpc",
            ["not_equivalent", "equivalent"],
            ["sentence1", "sentence2"],
            "f1",
            folder="MRPC",
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
        ),
        _glue(
            "stsb",
            [],
            ["sentence1", "sentence2"],
            "pearson_spearman",
            folder="STS-B",
            text_columns=("sentence1", "sentence2"),
            label_column="score",
        ),
        _glue(
            "rte",
            ["entailment", "not_entailment"],
            ["sentence1", "sentence2"],
            "accuracy",
            folder="RTE",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            label_encoding="name",
        ),
        _glue(
            "wnli",
            ["not_entailment", "entailment"],
            ["sentence1", "sentence2"],
            "accuracy",
            folder="WNLI",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
        ),
        _glue(
            "qnli",
            ["entailment", "not_entailment"],
            ["question", "sentence"],
            "accuracy",
            folder="QNLI",
            text_columns=("question", "sentence"),
            label_column="label",
            label_encoding="name",
        ),
        _glue(
            "mnli",
            ["entailment", "neutral", "contradiction"],
            ["premise", "hypothesis"],
            "accuracy",
            folder="MNLI",
            text_columns=("sentence1", "sentence2"),
            label_column="gold_label",
            label_encoding="name",
            validation_file="dev_matched.tsv",
            hub_validation_split="validation_matched",
        ),
        _glue(
            "qqp",
            ["not_duplicate", "duplicate"],
            ["question1", "question2"],
            "f1",
            folder="QQP",
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
        ),
    )
}


def _extra(
    name: str,
    labels: Sequence[str],
    text_fields: Sequence[str],
    metric: str = "accuracy",
    label_range: tuple[float, float] | None = None,
    **source: Any,
) -> TaskDef:
    """Shorthand for one built-in auxiliary task."""
    return TaskDef(
        name=name,
        kind="regression" if label_range else "classification",
        labels=tuple(labels),
        text_fields=tuple(text_fields),
        metric=metric,
        label_range=label_range,
        source=BuiltinSource(**source),
    )


def _lines(folder: str, *files: tuple[str, str]) -> tuple:
    """Reader arguments of a one-file-per-label set in cp1252 (MR, SUBJ, CR, MPQA)."""
    return (tuple((f"{folder}/{path}", label) for path, label in files), "cp1252")


_NLI = ("entailment", "neutral", "contradiction")
#: The auxiliary tasks: the usable sets of ``../shared/data/extra`` and QNLI's dev file, each read as distributed.
#: Counts, held-out splits and the leakage filter's drops: BENCHMARKS.md ("Task scaling"). SuperGLUE's RTE is not
#: here: its val file is GLUE's RTE dev set, which must never train.
EXTRA_TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        _extra(
            "sick_e",
            _NLI,
            ["premise", "hypothesis"],
            reader="sick",
            train=("SICK/SICK_train.txt", "entailment"),
            validation=("SICK/SICK_test_annotated.txt", "entailment"),
            note="SICK's train file trains, its test file (CRLF line ends) evaluates; the trial file is unused",
        ),
        _extra(
            "sick_r",
            [],
            ["sentence1", "sentence2"],
            "pearson_spearman",
            (1.0, 5.0),
            reader="sick",
            train=("SICK/SICK_train.txt", "relatedness"),
            validation=("SICK/SICK_test_annotated.txt", "relatedness"),
            note="relatedness 1-5; SICK's train file trains, its test file evaluates",
        ),
        _extra(
            "snli",
            _NLI,
            ["premise", "hypothesis"],
            reader="snli",
            train=("test",),
            validation=("dev",),
            note="only SNLI's dev and test files are here (no train split): the test file trains and the dev "
            "file evaluates, so the usual evaluation split stays unseen",
        ),
        _extra(
            "trec",
            ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
            ["question"],
            reader="trec",
            train=("TREC/train_5500.label",),
            validation=("TREC/TREC_10.label",),
            note="6 coarse classes; train_5500 trains, TREC_10 evaluates (ISO-8859-1)",
        ),
        _extra(
            "mr",
            ["negative", "positive"],
            ["sentence"],
            reader="lines",
            train=_lines("MR", ("rt-polarity.neg", "negative"), ("rt-polarity.pos", "positive")),
            held_out=1000,
            note="no official split: deduplicated, 1,000 rows held out (stratified)",
        ),
        _extra(
            "subj",
            ["objective", "subjective"],
            ["sentence"],
            reader="lines",
            train=_lines("SUBJ", ("subj.objective", "objective"), ("subj.subjective", "subjective")),
            held_out=1000,
            note="no official split: deduplicated, 1,000 rows held out (stratified)",
        ),
        _extra(
            "cr",
            ["negative", "positive"],
            ["sentence"],
            reader="lines",
            train=_lines("CR", ("custrev.neg", "negative"), ("custrev.pos", "positive")),
            held_out=400,
            note="no official split: empty lines and duplicates dropped, 400 rows held out (stratified)",
        ),
        _extra(
            "mpqa",
            ["negative", "positive"],
            ["phrase"],
            reader="lines",
            train=_lines("MPQA", ("mpqa.neg", "negative"), ("mpqa.pos", "positive")),
            held_out=1000,
            note="no official split: duplicate phrases kept once, phrases with both labels dropped, 1,000 "
            "held out (stratified)",
        ),
        _extra(
            "cb",
            ["entailment", "contradiction", "neutral"],
            ["premise", "hypothesis"],
            reader="jsonl",
            train=("SuperGLUE/CB/train.jsonl", "premise", "hypothesis", "label"),
            validation=("SuperGLUE/CB/val.jsonl", "premise", "hypothesis", "label"),
            note="SuperGLUE CB: the full train file (250) trains, val (56) evaluates",
        ),
        _extra(
            "boolq",
            ["false", "true"],
            ["question", "passage"],
            reader="jsonl",
            train=("SuperGLUE/BoolQ/val.jsonl", "question", "passage", "label"),
            held_out=1000,
            note="only 32 FewGLUE train rows here: SuperGLUE's val file (3,270) is split, 1,000 held out",
        ),
        _extra(
            "wic",
            ["false", "true"],
            ["sentence1", "sentence2"],
            reader="jsonl",
            train=("SuperGLUE/WiC/val.jsonl", "sentence1", "sentence2", "label", "word"),
            held_out=200,
            note="only 32 FewGLUE train rows here: SuperGLUE's val file (638) is split, 200 held out; the target "
            "word comes first in the first text ('word: sentence1')",
        ),
        _extra(
            "ag_news",
            ["world", "sports", "business", "sci_tech"],
            ["text"],
            reader="ag_news",
            train=("AGNews/test.csv", ("world", "sports", "business", "sci_tech")),
            held_out=1000,
            note="only AG News' test file (7,600) is here: split, 1,000 held out; title and description as one text",
        ),
        _extra(
            "qnli_dev",
            ["entailment", "not_entailment"],
            ["question", "sentence"],
            reader="glue_tsv",
            root="glue",
            train=("QNLI/dev.tsv", "question", "sentence", "label"),
            held_out=1000,
            note="QNLI's train file is not available offline: its dev file (5,463) is split, 1,000 held out "
            "(QNLI is then no GLUE evaluation target)",
        ),
    )
}
#: Every built-in task by name.
BUILTIN_TASKS: dict[str, TaskDef] = {**GLUE_TASKS, **EXTRA_TASKS}


def _builtin_key(name: Any) -> str:
    """The key of a built-in task: lowercase, GLUE's folder spellings accepted (``"SST-2"``, ``"STS-B"``)."""
    key = str(name).lower()
    return key.replace("-", "") if key.replace("-", "") in GLUE_TASKS else key


def get_task(name: str) -> TaskDef:
    """The built-in task ``name`` (GLUE, or an auxiliary set of `EXTRA_TASKS`); GLUE folder spellings accepted."""
    key = _builtin_key(name)
    if key not in BUILTIN_TASKS:
        raise ValueError(
            f"Unknown task {name!r}; known GLUE tasks: {sorted(GLUE_TASKS)}, auxiliary tasks: "
            f"{sorted(EXTRA_TASKS)} (or define a file task)."
        )
    return BUILTIN_TASKS[key]


def resolve_labels(task: TaskDef) -> TaskDef:
    """Return ``task`` with its label names filled in from its train file when none were declared.

    The names are the sorted unique values of the label column (numerically sorted when they are
    all integers), as strings, and are then matched by name only. Call it before building the model
    config, so that `TaskDef.to_spec` carries the labels.
    """
    if task.kind != "classification" or task.labels or not isinstance(task.source, FileSource):
        return task
    src = task.source
    ds = read_file(src.train_file, src.format)
    check_columns(ds.column_names, [src.label_column], src.train_file)
    values = [strip_text(v) for v in ds.unique(src.label_column)]
    if any(v is None or v == "" for v in values):
        raise ValueError(f"{src.train_file}: column {src.label_column!r} has empty labels; every row needs one.")
    ints = [as_index(v) for v in values]
    ordered = sorted(values, key=as_index) if None not in ints else sorted(values, key=str)
    names = tuple(str(v) for v in ordered)
    if len(names) < 2:
        raise ValueError(
            f"{src.train_file}: only one label value {list(names)} in column {src.label_column!r}; "
            "a classification task needs at least 2."
        )
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
    extra_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Load one split of a task as a Dataset with columns ``text_a``, ``text_b``, ``label``.

    Args:
        task: a `TaskDef` (or a GLUE task name).
        split: ``"train"`` or ``"validation"`` (GLUE's ``dev.tsv``; MNLI's ``dev_matched.tsv``).
        data_dir: for GLUE tasks, a folder in the official layout (``<data_dir>/RTE/train.tsv``);
            None reads the Hub dataset ``nyu-mll/glue``. Also where ``qnli_dev`` finds ``QNLI/dev.tsv``.
            Ignored by file tasks, whose paths are their own.
        max_rows: keep at most this many rows: the first ones, or with ``seed`` a seeded random
            sample. Every row of the file is still checked.
        seed: with ``max_rows``: None (default) keeps the first rows; an int shuffles with it first.
        extra_dir: the folder of the auxiliary sets (``../shared/data/extra``), for the tasks of `EXTRA_TASKS`.

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
    elif isinstance(task.source, BuiltinSource):
        root = _builtin_root(task, data_dir, extra_dir)
        origin = f"{task.name} {split} ({os.path.join(root, task.source.file_for(split))})"
        raw = datasets.Dataset.from_dict(builtin_rows(task.source, split, root))
        text_columns, label_column, encoding = ("text_a", "text_b")[: len(task.text_fields)], "label", "name"
    else:
        task = resolve_labels(task)
        src = task.source
        origin = src.file_for(split)
        raw = read_file(origin, src.format)
        text_columns, label_column, encoding = src.text_columns, src.label_column, src.label_encoding
    check_columns(raw.column_names, [*text_columns, label_column], origin)
    ds = to_examples(raw, task, text_columns, label_column, encoding, origin)
    return take_rows(ds, max_rows, seed)


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
    raw = read_table(path, "tsv", column_names=src.column_names)
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


def _builtin_root(task: TaskDef, data_dir: str | os.PathLike | None, extra_dir: str | os.PathLike | None) -> str:
    """The folder a built-in auxiliary task reads from; ValueError naming the setting when it is not given."""
    if task.source.root == "glue":
        if data_dir is None:
            raise ValueError(
                f"Task {task.name!r} reads {task.source.file_for('train')} from a local GLUE folder: "
                "set data.data_dir (e.g. ../shared/data/glue)."
            )
        return os.fspath(data_dir)
    if extra_dir is None:
        raise ValueError(
            f"Task {task.name!r} reads {task.source.file_for('train')} from the auxiliary sets: set "
            "data.extra_dir (e.g. ../shared/data/extra)."
        )
    return os.fspath(extra_dir)


@functools.lru_cache(maxsize=64)
def _builtin_splits(src: BuiltinSource, root: str) -> tuple[Rows, Rows, dict[str, int]]:
    """(train rows, evaluation rows, counts) of a built-in auxiliary source read from ``root`` (cached)."""
    read = READERS[src.reader]
    train = read(os.path.abspath(root), *src.train)
    if src.validation is not None:
        validation = read(os.path.abspath(root), *src.validation)
        return train, validation, {"train": len(train["label"]), "evaluation": len(validation["label"])}
    return held_out_split(train, src.held_out, src.seed)


def builtin_rows(src: BuiltinSource, split: str, root: str | os.PathLike) -> Rows:
    """The raw rows (``text_a``, ``text_b``, ``label``) of one split of a built-in auxiliary source."""
    train, validation, _ = _builtin_splits(src, os.fspath(root))
    return {k: list(v) for k, v in (train if split == "train" else validation).items()}


def split_counts(
    task: TaskDef | str, data_dir: str | os.PathLike | None = None, extra_dir: str | os.PathLike | None = None
) -> dict[str, int]:
    """Rows of a built-in auxiliary task's train and evaluation splits, and for a held-out split the rows read,
    duplicates, conflicting labels and empty texts dropped (`readers.held_out_split`)."""
    task = get_task(task) if isinstance(task, str) else task
    if not isinstance(task.source, BuiltinSource):
        raise ValueError(f"Task {task.name!r} is not a built-in auxiliary task ({sorted(EXTRA_TASKS)}).")
    return dict(_builtin_splits(task.source, _builtin_root(task, data_dir, extra_dir))[2])


__all__ = [
    "BUILTIN_TASKS",
    "EXTRA_TASKS",
    "GLUE_TASKS",
    "METRICS_FOR_KIND",
    "BuiltinSource",
    "FileSource",
    "GlueSource",
    "TaskDef",
    "get_task",
    "load_split",
    "resolve_labels",
    "split_counts",
    "user_task",
]
