"""Resumable JSONL results: one line per finished query, appended and flushed as it lands.

A run writes three files side by side: the results (``results.jsonl``, one line per query),
the write-ahead journal of its spending (``results.journal.jsonl``, see
:mod:`shadowprice.ledger.journal`) and the summary (``results.summary.json``). A killed run
leaves only whole result lines (a torn last line is cut off on resume), so re-running the same
command skips every query that already has a final record and repeats none. Only a results
file that has its journal is ever repaired or appended to: it is the command's own output.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

#: Statuses that end a query for good; ``error`` records are retried on resume.
FINAL_STATUSES = frozenset({"done", "abandoned", "fallback"})


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its results, journal and summary.

    Attributes
    ----------
    results, journal, summary : Path
        ``NAME.jsonl``, ``NAME.journal.jsonl`` and ``NAME.summary.json`` for ``-o NAME.jsonl``.
    """

    results: Path
    journal: Path
    summary: Path

    @classmethod
    def of(cls, results: str | os.PathLike[str]) -> RunFiles:
        """The files of a run whose results go to ``results``."""
        p = Path(results)
        stem = p.name.removesuffix(".jsonl")
        return cls(p, p.with_name(stem + ".journal.jsonl"), p.with_name(stem + ".summary.json"))

    def existing(self) -> list[Path]:
        """The files of this run that exist."""
        return [f for f in (self.results, self.journal, self.summary) if f.exists()]

    def archive(self) -> list[Path]:
        """Move the existing files aside (``NAME.<UTC time>.bak``); returns the new paths.

        Used to start a run over without losing what an earlier run recorded (and paid for).
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = []
        for f in self.existing():
            target = f.with_name(f"{f.name}.{stamp}.bak")
            n = 1
            while target.exists():
                target = f.with_name(f"{f.name}.{stamp}-{n}.bak")
                n += 1
            f.rename(target)
            moved.append(target)
        return moved


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record in ``path`` (empty if it does not exist), in file order.

    Raises
    ------
    ValueError
        Naming the line when a complete line is not a JSON object.
    """
    p = Path(path)
    if not p.exists():
        return []
    records = []
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                break  # torn write from a killed run: ignored, cut off by open_for_append
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p} line {i}: not a results line ({exc.msg})") from None
            if not isinstance(obj, dict) or "id" not in obj:
                raise ValueError(f"{p} line {i}: not a results record (no id)")
            records.append(obj)
    return records


def latest_by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each query id (later lines supersede earlier ones)."""
    return {str(r["id"]): r for r in records}


def open_for_append(path: str | Path) -> TextIO:
    """Open ``path`` for appending, first cutting off a torn last line if there is one.

    Only call this on the command's own output (see the module docstring).
    """
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


def write_atomic(path: str | os.PathLike[str], data: str) -> None:
    """Write ``data`` (UTF-8) to ``path`` through a temporary file renamed over it.

    A crash leaves the old file or the new one, never a mix. The file gets the permissions
    any newly written file would: those of the file it replaces, else 0666 less the umask
    (not the 0600 of :func:`tempfile.mkstemp`).
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = None
    fd, tmp = _create_temporary(folder, target.name)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty file beside ``name`` (open for writing), created 0666 less the umask."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON with :func:`write_atomic`."""
    write_atomic(path, json.dumps(payload, indent=2) + "\n")


def summary_path(path: str | Path) -> Path:
    """Where the run summary of ``results.jsonl`` goes: ``results.summary.json``."""
    return RunFiles.of(path).summary
