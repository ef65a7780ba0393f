"""benchmarks/records.py: two processes appending to one results file lose nothing (the lock)."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.records import append_record

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import sys
sys.path.insert(0, {root!r})
from benchmarks.records import append_record
for i in range(40):
    append_record({path!r}, {{"writer": sys.argv[1], "i": i}}, "test")
"""


def test_append_record_creates_the_file_then_appends(tmp_path):
    out = tmp_path / "sub" / "results.json"
    append_record(out, {"a": 1}, "bench")
    append_record(out, {"a": 2}, "bench")
    data = json.loads(out.read_text())
    assert data == {"benchmark": "bench", "records": [{"a": 1}, {"a": 2}]}
    assert not out.with_suffix(".tmp").exists()


def test_two_processes_appending_at_once_lose_no_record(tmp_path):
    out = tmp_path / "results.json"
    code = WRITER.format(root=str(ROOT), path=str(out))
    procs = [subprocess.Popen([sys.executable, "-c", code, name]) for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    records = json.loads(out.read_text())["records"]
    assert len(records) == 80
    for name in ("a", "b"):
        assert [r["i"] for r in records if r["writer"] == name] == list(range(40))
