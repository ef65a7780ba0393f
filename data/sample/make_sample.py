"""Cut the small GLUE sample in data/sample/glue from the full files in ../shared/data/glue.

Every output line is a byte-for-byte copy of a line of the original file (a header line, BOM
included, is kept where the original has one). The sample is the first N data rows, unless that
head is degenerate (a class below 20% of the rows for classification; for STS-B, a spread of
scores below half that of the full file), in which case it is a deterministic stride sample
(rows 0, k, 2k, ...). Run from anywhere:

    python data/sample/make_sample.py [--src ../shared/data/glue] [--out data/sample/glue]
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# folder -> (has header, label column index, is regression, train rows, dev rows)
TASKS: dict[str, tuple[bool, int, bool, int, int]] = {
    "CoLA": (False, 1, False, 300, 100),
    "SST-2": (True, 1, False, 300, 100),
    "MRPC": (True, 0, False, 300, 100),
    "STS-B": (True, 9, True, 300, 100),
    "RTE": (True, 3, False, 300, 100),
    "WNLI": (True, 3, False, 200, 50),
}
MIN_CLASS_SHARE = 0.2


def split_lines(raw: bytes) -> list[bytes]:
    """The file's lines, each with its b"\\n" (GLUE TSVs have one row per line: no quoting)."""
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line + b"\n" for line in lines]


def label_of(line: bytes, column: int) -> str:
    """The label cell of one TSV line."""
    return line.rstrip(b"\n").split(b"\t")[column].decode("utf-8")


def is_degenerate(rows: list[bytes], all_rows: list[bytes], column: int, regression: bool) -> bool:
    """Whether a sample of rows misrepresents the labels of the full file."""
    labels = [label_of(r, column) for r in rows]
    if regression:
        full = [float(label_of(r, column)) for r in all_rows]
        return statistics.pstdev(float(x) for x in labels) < 0.5 * statistics.pstdev(full)
    classes = {label_of(r, column) for r in all_rows}
    counts = Counter(labels)
    return any(counts[c] < MIN_CLASS_SHARE * len(rows) for c in classes)


def sample_rows(rows: list[bytes], n: int, column: int, regression: bool) -> tuple[list[bytes], str]:
    """The first n rows, or a stride sample when the head is degenerate; with the method's name."""
    if n >= len(rows):
        return rows, "all"
    head = rows[:n]
    if not is_degenerate(head, rows, column, regression):
        return head, "head"
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)], "stride"


def make_sample(src: Path, out: Path) -> list[str]:
    """Write every sample file; return one report line per file."""
    report = []
    for folder, (header, column, regression, n_train, n_dev) in TASKS.items():
        for split, n in (("train", n_train), ("dev", n_dev)):
            lines = split_lines((src / folder / f"{split}.tsv").read_bytes())
            head, rows = (lines[:1], lines[1:]) if header else ([], lines)
            picked, method = sample_rows(rows, n, column, regression)
            target = out / folder / f"{split}.tsv"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"".join(head + picked))
            report.append(f"{folder}/{split}.tsv\t{len(picked)} of {len(rows)} rows\t{method}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "glue")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "sample" / "glue")
    args = parser.parse_args()
    print("\n".join(make_sample(args.src, args.out)))


if __name__ == "__main__":
    main()
