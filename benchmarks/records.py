"""One results file of records, appended to by several queues at once (`continual.py`, `lora_peer.py`).

Each append reads the file, adds one record and writes it back whole (a temporary file, then a rename), under an
exclusive lock on ``<file>.lock``: two benchmark processes filling the same file, one thread each, lose nothing.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path


def append_record(path: Path, record: dict, benchmark: str) -> None:
    """Append ``record`` to ``path``'s ``records`` (a new file is ``{"benchmark": benchmark, "records": []}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        data = json.loads(path.read_text()) if path.is_file() else {"benchmark": benchmark, "records": []}
        data["records"].append(record)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
