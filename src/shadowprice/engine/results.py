"""Resumable JSONL results: one line per finished query, appended and flushed as it lands.

A killed run leaves only whole lines (a torn last line is cut off on resume), so re-running
the same command skips every query that already has a final record and repeats none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

#: Statuses that end a query for good; ``error`` records are retried on resume.
FINAL_STATUSES = frozenset({"done", "abandoned", "fallback"})


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record in ``path`` (empty if it does not exist), in file order."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn write from a killed run: ignored, cut off by open_for_append
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def latest_by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each query id (later lines supersede earlier ones)."""
    return {str(r["id"]): r for r in records}


def open_for_append(path: str | Path) -> TextIO:
    """Open ``path`` for appending, first cutting off a torn last line if there is one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() and p.stat().st_size:
        with p.open("rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    return p.open("a", encoding="utf-8")


def append_record(f: TextIO, record: dict[str, Any]) -> None:
    """Write one record as a whole line and hand it to the OS (survives a killed process)."""
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()


def summary_path(path: str | Path) -> Path:
    """Where the run summary of ``results.jsonl`` goes: ``results.summary.json``."""
    p = Path(path)
    return p.with_name(p.name.removesuffix(".jsonl") + ".summary.json")
