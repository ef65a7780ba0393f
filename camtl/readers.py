"""Reading and tokenising for CA-MTL: files to checked examples, examples to model inputs.

Every split, whatever its source, becomes a `datasets.Dataset` with the same three columns (`to_examples`):

* ``text_a`` (str): the first (or only) text;
* ``text_b`` (str): the second text of a pair task, ``""`` for single-text tasks. The column is
  always present so that every task has one schema; `tokenize_split` encodes a single text when a
  batch's ``text_b`` are all ``""``.
* ``label``: a ``ClassLabel`` id (int) for classification, a ``float32`` for regression, a multi-hot list of
  ``float32`` (one 0/1 per label, in the task's label order) for a multi-label task (`multi_hot`).

Rows are checked while loading (empty text, labels outside the declared set, values that are not
numbers), so a bad file fails before any training, with the file, the row and the allowed values in
the message. Row numbers are 1-based data rows (a header line is not counted).

Formats: CSV (standard quoting), TSV (read like GLUE: no quote processing, ``utf-8-sig``; also a
``.txt`` file whose first line holds a tab, like SICK's), JSON (an array of records or JSON lines) and
JSONL, through ``datasets.load_dataset`` with every CSV/TSV cell a string. The built-in auxiliary sets
(``../shared/data/extra``) have their own small readers (`READERS`), each reading its files as they are
distributed (encodings, line ends, label spellings); `held_out_split` makes the seeded, stratified
held-out split of a set that has none. Which task reads what is `camtl.tasks`.

Batched ``Dataset.map`` with module-level functions keeps the Arrow cache and its fingerprints working.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import pandas
import torch
from datasets import ClassLabel, Features, List, Value
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

FORMATS: tuple[str, ...] = ("csv", "tsv", "json", "jsonl")
LABEL_ENCODINGS: tuple[str, ...] = ("auto", "name", "index")
#: What separates a multi-label row's label names in a CSV/TSV cell (``"sport|weather"``; ``""``: no label).
MULTI_LABEL_SEPARATOR = "|"
_EXTENSIONS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def as_str_tuple(values: str | Sequence[Any] | None) -> tuple[str, ...]:
    """A string or a sequence as a tuple of strings."""
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)


def format_from_extension(path: str) -> str:
    """File format from the extension; a ``.txt`` file is TSV when its first line holds a tab (ValueError listing the
    known formats otherwise)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".txt" and os.path.isfile(path):
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            if "\t" in f.readline():
                return "tsv"
    if ext not in _EXTENSIONS:
        txt = " (a .txt file is read as TSV when its first line holds a tab)" if ext == ".txt" else ""
        raise ValueError(
            f"Cannot tell the format of {path!r} from its extension{txt}; pass format= one of {list(FORMATS)}."
        )
    return _EXTENSIONS[ext]


def find_file(path: str | os.PathLike, folders: Sequence[str | os.PathLike], what: str) -> str:
    """``path`` in the first of ``folders`` that holds it; FileNotFoundError naming every place tried."""
    tried = [os.path.abspath(os.path.join(os.fspath(folder), os.fspath(path))) for folder in folders]
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(
            f"{what} {os.fspath(path)!r} does not exist: looked for "
            + " and ".join(repr(p) for p in dict.fromkeys(tried))
            + "."
        )
    return found


def strip_text(value: Any) -> Any:
    """Strip surrounding whitespace from strings; other values unchanged."""
    return value.strip() if isinstance(value, str) else value


def as_index(value: Any) -> int | None:
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
# Reading files and checking rows
# ----------------------------------------------------------------------------------------------


def read_file(path: str, fmt: str) -> datasets.Dataset:
    """Read a user file (FileNotFoundError naming it when missing)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Data file {path!r} does not exist (expected a {fmt.upper()} file).")
    return read_table(path, fmt)


def read_table(path: str, fmt: str, column_names: Sequence[str] | None = None) -> datasets.Dataset:
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


def check_columns(available: Sequence[str], needed: Sequence[str], origin: str) -> None:
    """ValueError naming the missing columns and the columns the file has."""
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {missing}; the file's columns are {list(available)}.")


def to_examples(
    raw: datasets.Dataset,
    task: Any,  # a camtl.tasks.TaskDef: its name, kind, labels and label_range
    text_columns: Sequence[str],
    label_column: str,
    label_encoding: str,
    origin: str,
) -> datasets.Dataset:
    """Map raw columns to ``text_a``/``text_b``/``label``, checking every row (cached batched map)."""
    label_feature = {"classification": ClassLabel(names=list(task.labels)), "multi_label": List(Value("float32"))}.get(
        task.kind, Value("float32")
    )
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
    elif kind == "multi_label":
        label = [multi_hot(v, labels, label_encoding, f"{origin}: row {i + 1}") for v, i in zip(raw_labels, indices)]
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


def multi_hot(value: Any, labels: tuple[str, ...], encoding: str, where: str) -> list[float]:
    """One multi-label cell as a multi-hot list over ``labels``: a string of names separated by
    `MULTI_LABEL_SEPARATOR` (``""`` or None: no label) or a list of names (JSON); with ``label_encoding`` ``auto`` or
    ``index`` a name may also be an integer index. ValueError naming ``where``, the bad name and the valid labels."""
    if value is None:
        names: list = []
    elif isinstance(value, str):
        names = [part.strip() for part in value.split(MULTI_LABEL_SEPARATOR)] if value.strip() else []
    elif isinstance(value, (list, tuple)):
        names = [strip_text(v) for v in value]
    else:
        raise ValueError(
            f"{where}: multi-label cell {value!r} is neither a string of names separated by "
            f"{MULTI_LABEL_SEPARATOR!r} nor a list of names; labels: {list(labels)}."
        )
    by_name = {name: i for i, name in enumerate(labels)} if encoding in ("name", "auto") else {}
    use_index = encoding in ("index", "auto")
    row = [0.0] * len(labels)
    for name in names:
        i = _label_id(name, by_name, len(labels), use_index) if name != "" else None
        if i is None:
            allowed = f"one of {list(labels)}" if by_name else ""
            if use_index:
                allowed += (" or " if allowed else "") + f"an integer index 0..{len(labels) - 1}"
            raise ValueError(
                f"{where}: label {name!r} (in {value!r}) is not {allowed}; separate a row's labels with "
                f"{MULTI_LABEL_SEPARATOR!r}, an empty cell for none."
            )
        row[i] = 1.0
    return row


def _label_id(value: Any, by_name: Mapping[str, int], num_labels: int, use_index: bool) -> int | None:
    """The id of one raw label, or None when it is not a known name / valid index."""
    key = strip_text(value)
    if key is not None and str(key) in by_name:
        return by_name[str(key)]
    if use_index:
        index = as_index(key)
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


def take_rows(ds: datasets.Dataset, max_rows: int | None, seed: int | None) -> datasets.Dataset:
    """The first ``max_rows`` rows, or (with ``seed``) a seeded random sample of them."""
    if max_rows is None:
        return ds
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    return ds.select(range(min(max_rows, len(ds))))


# ----------------------------------------------------------------------------------------------
# The built-in auxiliary sets (../shared/data/extra and QNLI's dev file), read as the files are
# ----------------------------------------------------------------------------------------------

Rows = dict[str, list]  # {"text_a": [...], "text_b": [...], "label": [...]}: raw label names (or numbers as text)


def normalize_text(text: str) -> str:
    """Lowercase, every run of characters other than letters and digits as one space, stripped (its words count the
    length of a text for the leakage filter)."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def text_key(text: str) -> str:
    """`normalize_text` without its spaces: the key under which two texts are "the same", for deduplication and for
    the leakage filter (`camtl.leakage`). Without spaces, tokenised and plain copies of a sentence agree (SST's
    ``does n't`` and MR's ``doesn't`` both give ``doesnt``): 731 of SST-2's 872 dev sentences equal an MR line by this
    key, 680 with the spaces kept."""
    return _NON_WORD.sub("", text.lower())


_NON_WORD = re.compile(r"[\W_]+")


def read_text_lines(path: str, encoding: str) -> list[str]:
    """The non-empty lines of a one-text-per-line file, stripped.

    Lines are split on ``"\\n"`` only: MR's and SUBJ's cp1252 files hold byte 0x85 (an ellipsis in cp1252, NEL in
    latin-1), which `str.splitlines` would take for a line break."""
    with open(path, encoding=encoding, newline="") as f:
        return [line.strip() for line in f.read().split("\n") if line.strip()]


def read_labelled_lines(root: str, files: Sequence[tuple[str, str]], encoding: str) -> Rows:
    """One text per line, one file per label (MR, SUBJ, CR, MPQA): ``files`` = ``[(path, label), ...]``."""
    rows: Rows = {"text_a": [], "text_b": [], "label": []}
    for path, label in files:
        lines = read_text_lines(find_file(path, [root], "Data file"), encoding)
        rows["text_a"] += lines
        rows["text_b"] += [""] * len(lines)
        rows["label"] += [label] * len(lines)
    return rows


def read_sick(root: str, path: str, target: str) -> Rows:
    """A SICK file (tab-separated, header line; the test file has CRLF line ends, which the csv module reads as one):
    the sentence pair and ``target``, ``"entailment"`` (the judgment, lowercased) or ``"relatedness"`` (1-5)."""
    with open(find_file(path, [root], "SICK file"), encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    column = {"entailment": "entailment_judgment", "relatedness": "relatedness_score"}[target]
    return {
        "text_a": [r["sentence_A"] for r in records],
        "text_b": [r["sentence_B"] for r in records],
        "label": [r[column].strip().lower() for r in records],
    }


def read_snli(root: str, split: str) -> Rows:
    """SNLI's line-aligned ``s1.<split>``, ``s2.<split>``, ``labels.<split>`` (tokenised text, as distributed)."""
    columns = [
        read_text_lines(find_file(f"SNLI/{name}.{split}", [root], "SNLI file"), "utf-8")
        for name in ("s1", "s2", "labels")
    ]
    if len({len(c) for c in columns}) != 1:
        raise ValueError(f"SNLI {split}: s1, s2 and labels hold {[len(c) for c in columns]} lines; they must align.")
    return {"text_a": columns[0], "text_b": columns[1], "label": columns[2]}


def read_trec(root: str, path: str) -> Rows:
    """A TREC question file (ISO-8859-1): ``COARSE:fine question`` per line; the label is the coarse class."""
    rows: Rows = {"text_a": [], "text_b": [], "label": []}
    for line in read_text_lines(find_file(path, [root], "TREC file"), "iso-8859-1"):
        label, _, question = line.partition(" ")
        rows["text_a"].append(question.strip())
        rows["text_b"].append("")
        rows["label"].append(label.split(":")[0])
    return rows


def read_jsonl_fields(
    root: str, path: str, text_a: str, text_b: str | None, label: str, prefix: str | None = None
) -> Rows:
    """JSON lines (SuperGLUE): the ``text_a``/``text_b`` fields and ``label`` (booleans as ``"true"``/``"false"``);
    ``prefix``: a field put before ``text_a`` as ``"<prefix>: <text_a>"`` (WiC's target word)."""
    with open(find_file(path, [root], "Data file"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    first = [f"{r[prefix]}: {r[text_a]}" if prefix else r[text_a] for r in records]
    return {
        "text_a": first,
        "text_b": [r[text_b] for r in records] if text_b else [""] * len(records),
        "label": [str(r[label]).lower() for r in records],
    }


def read_ag_news(root: str, path: str, classes: Sequence[str]) -> Rows:
    """AG News' CSV (``Class Index`` 1-4, ``Title``, ``Description``): title and description as one text."""
    with open(find_file(path, [root], "AG News file"), encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    return {
        "text_a": [f"{r['Title'].strip()}. {r['Description'].strip()}" for r in records],
        "text_b": [""] * len(records),
        "label": [classes[int(r["Class Index"]) - 1] for r in records],
    }


def read_glue_tsv(root: str, path: str, text_a: str, text_b: str, label: str) -> Rows:
    """A GLUE TSV (read like every GLUE file: no quote processing, ``utf-8-sig``)."""
    raw = read_table(find_file(path, [root], "GLUE file"), "tsv")
    check_columns(raw.column_names, [text_a, text_b, label], path)
    columns = raw[:]  # plain lists (a datasets 5 Column reads one row at a time)
    return {"text_a": columns[text_a], "text_b": columns[text_b], "label": columns[label]}


#: The readers a built-in task's source names (``camtl.tasks.BuiltinSource.reader``).
READERS = {
    "lines": read_labelled_lines,
    "sick": read_sick,
    "snli": read_snli,
    "trec": read_trec,
    "jsonl": read_jsonl_fields,
    "ag_news": read_ag_news,
    "glue_tsv": read_glue_tsv,
}


def held_out_split(rows: Rows, held_out: int, seed: int) -> tuple[Rows, Rows, dict[str, int]]:
    """Deduplicate ``rows``, then hold about ``held_out`` of them out, stratified by label, with ``seed``.

    Deduplication goes by `text_key` of the text(s): copies with one label are kept once; a text found with two
    labels (MPQA has 98) is dropped, since no split could score it. Rows that share a text (QNLI's dev file pairs a
    question with several sentences, BoolQ asks several questions of one passage) form a group, and a group goes to
    one side whole, so no text is on both sides. Each label's target is its share of ``held_out`` (rounded, largest
    remainders first); the groups, shuffled by ``random.Random(seed)`` (file order before), are held out in turn while
    they fit every label's target: exactly ``held_out`` rows when every group is one row, a few fewer otherwise.
    Returns ``(train, held_out, counts)``, counts = ``{"rows", "duplicates", "conflicting", "empty" (no letter or
    digit), "train", "evaluation"}``.
    """
    keys = [(text_key(a), text_key(b)) for a, b in zip(rows["text_a"], rows["text_b"])]
    labels_of: dict[tuple, set] = {}
    for key, label in zip(keys, rows["label"]):
        labels_of.setdefault(key, set()).add(label)
    first, seen = [], set()
    for i, key in enumerate(keys):
        if key not in seen and len(labels_of[key]) == 1 and any(key):
            first.append(i)
        seen.add(key)
    conflicting = sum(1 for key in keys if len(labels_of[key]) > 1)
    empty = sum(1 for key in keys if not any(key) and len(labels_of[key]) == 1)
    if not 0 < held_out < len(first):
        raise ValueError(f"held_out must be in [1, {len(first) - 1}] (the unique rows), got {held_out}.")
    groups = _groups_sharing_a_text([keys[i] for i in first])  # lists of positions in `first`
    counts_of = {label: 0 for label in sorted({rows["label"][i] for i in first})}
    for i in first:
        counts_of[rows["label"][i]] += 1
    shares = {label: held_out * n / len(first) for label, n in counts_of.items()}
    target = {label: math.floor(share) for label, share in shares.items()}
    for label in sorted(shares, key=lambda k: (target[k] - shares[k], k))[: held_out - sum(target.values())]:
        target[label] += 1
    random.Random(seed).shuffle(groups)
    held_pos, filled = set(), dict.fromkeys(counts_of, 0)
    for group in groups:
        need: dict[str, int] = {}
        for pos in group:
            need[rows["label"][first[pos]]] = need.get(rows["label"][first[pos]], 0) + 1
        if all(filled[label] + n <= target[label] for label, n in need.items()):
            held_pos.update(group)
            for label, n in need.items():
                filled[label] += n
    held = [first[p] for p in sorted(held_pos)]
    kept = [first[p] for p in range(len(first)) if p not in held_pos]
    pick = lambda ids: {column: [values[i] for i in ids] for column, values in rows.items()}  # noqa: E731
    counts = {
        "rows": len(keys),
        "duplicates": len(keys) - len(first) - conflicting - empty,
        "conflicting": conflicting,
        "empty": empty,
        "train": len(kept),
        "evaluation": len(held),
    }
    return pick(kept), pick(held), counts


def _groups_sharing_a_text(keys: Sequence[tuple[str, str]]) -> list[list[int]]:
    """Positions of ``keys`` grouped so that two rows sharing a text (either side, `text_key`) are in one group;
    groups in order of their first row."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, pair in enumerate(keys):
        for text in pair:
            if text:
                j = owner.setdefault(text, i)
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(keys)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


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
    check_columns(ds.column_names, ["text_a", "label"], "tokenize_split input")
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

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids``, ``task_ids`` as LongTensors and ``labels`` as
    float32: of shape (B,) (classification ids, exact as floats below 2**24, and regression targets), or, when one of
    ``tasks`` (the model's task specs in id order: ``model.config.tasks`` or `TaskDef`s) is multi-label, of shape
    (B, K), K the model's widest head: a multi-label row's multi-hot, a classification row's one-hot, a regression row's
    target in column 0 (what ``CaMtlForMultiTask`` reads). ``labels`` is left out when no row has one (prediction).
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None
    tasks: Sequence[Any] = ()

    def __post_init__(self) -> None:
        self._pad = DataCollatorWithPadding(
            self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )
        specs = [t.to_spec() if hasattr(t, "to_spec") else dict(t) for t in self.tasks]
        self._kinds = [spec["kind"] for spec in specs]
        widths = [len(spec["labels"]) if spec["kind"] != "regression" else 1 for spec in specs]
        self.label_width = max(widths) if "multi_label" in self._kinds else None  # None: (B,) labels

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self._pad([{k: f[k] for k in MODEL_INPUTS if k in f} for f in features]))  # (B, T) each
        batch["task_ids"] = torch.tensor([int(f["task_ids"]) for f in features], dtype=torch.long)  # (B,)
        with_labels = ["labels" in f and f["labels"] is not None for f in features]
        if any(with_labels):
            if not all(with_labels):
                raise ValueError("Some rows of the batch have labels and some do not.")
            if self.label_width is None:
                if any(isinstance(f["labels"], (list, tuple)) for f in features):
                    raise ValueError(
                        "A row has multi-label labels but the collator knows no multi-label task: "
                        "build it with MultiTaskCollator(tokenizer, tasks=model.config.tasks)."
                    )
                batch["labels"] = torch.tensor([float(f["labels"]) for f in features], dtype=torch.float32)  # (B,)
            else:
                batch["labels"] = self._dense_labels(features, batch["task_ids"].tolist())  # (B, K)
        return batch

    def _dense_labels(self, features: Sequence[Mapping[str, Any]], task_ids: list[int]) -> torch.Tensor:
        """(B, K) labels: multi-hot, one-hot or the target in column 0, by each row's task kind."""
        labels = torch.zeros(len(features), self.label_width)  # (B, K)
        for row, (f, task) in enumerate(zip(features, task_ids)):
            kind = self._kinds[task]
            if kind == "multi_label":
                labels[row, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.float32)
            elif kind == "classification":
                labels[row, int(f["labels"])] = 1.0
            else:
                labels[row, 0] = float(f["labels"])
        return labels


__all__ = [
    "FORMATS",
    "LABEL_ENCODINGS",
    "MODEL_INPUTS",
    "MULTI_LABEL_SEPARATOR",
    "READERS",
    "MultiTaskCollator",
    "held_out_split",
    "multi_hot",
    "normalize_text",
    "text_key",
    "read_file",
    "read_table",
    "to_examples",
    "tokenize_split",
]
