"""An in-process ledger with a write-ahead journal on disk: the budget survives a crash.

Before :meth:`JournalLedger.reserve` returns (so before a request can be sent) the reservation
is appended to the journal and fsynced; after the request returns, its settlement (the tokens
it generated) is appended. A run killed with requests in flight leaves reservations without
settlements. A server that bills what it generated (most do, even after the client left) may
have charged for them, so on resume each of them counts as spent in full, unless the caller
knows better (``release_unsettled=True``, e.g. the server was never reached).

The journal is JSON lines. The first line describes the run (``{"event": "run", "config":
{...}}``); a journal is only resumed with the same configuration, so one budget is never
spent by two different plans without the user saying so. Then one line per event::

    {"event": "reserve", "id": "<reservation id>", "tokens": 512, "tag": "q17"}
    {"event": "settle", "id": "<reservation id>", "used": 311}
    {"event": "recover", "id": "<reservation id>", "used": 512}   # unsettled, counted on resume

A torn last line (the process died mid-write) is cut off when the journal is reopened: its
``reserve`` never returned, so its request was never sent.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .base import Ledger, LedgerError, LedgerState, Recovery, Reservation, Settlement
from .book import Book
from .memory import MemoryLedger

#: Version of the journal's layout, written in its first line.
JOURNAL_VERSION = 1


class JournalMismatch(LedgerError):
    """The journal belongs to a run with another configuration.

    Attributes
    ----------
    path : Path
        The journal.
    differences : dict
        ``field -> (journal's value, this run's value)`` for every field that differs.
    """

    def __init__(self, path: Path, differences: Mapping[str, tuple[Any, Any]]) -> None:
        self.path = path
        self.differences = dict(differences)
        shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in self.differences.items())
        super().__init__(f"{path} belongs to a run with another configuration ({shown})")


def _read_events(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """(header, events, length of the whole lines) of an existing journal."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    lines = whole.decode("utf-8").splitlines()
    events = []
    for i, line in enumerate(lines, start=1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LedgerError(
                f"{path} line {i}: not a journal line ({exc.msg}); the file is "
                f"damaged or not a shadowprice journal"
            ) from None
        if not isinstance(obj, dict) or "event" not in obj:
            raise LedgerError(f"{path} line {i}: not a journal event")
        events.append(obj)
    if not events or events[0].get("event") != "run":
        raise LedgerError(f"{path}: not a shadowprice journal (no run header on line 1)")
    return events[0], events[1:], len(whole)


def replay_events(
    events: list[dict[str, Any]],
) -> tuple[int, dict[str, dict[str, Any]], dict[str, int]]:
    """Tokens charged (settled, or counted on an earlier recovery), the reservations still
    open after ``events``, and the tokens charged per reservation tag."""
    charged = 0
    open_: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    by_tag: dict[str, int] = {}
    for ev in events:
        rid = str(ev["id"])
        if ev["event"] == "reserve":
            open_[rid] = ev
            tags[rid] = str(ev.get("tag", ""))
        elif ev["event"] in ("settle", "recover"):
            open_.pop(rid, None)
            used = int(ev["used"])
            charged += used
            tag = tags.get(rid, str(ev.get("tag", "")))
            by_tag[tag] = by_tag.get(tag, 0) + used
    return charged, open_, by_tag


def journal_totals(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(tokens charged, tokens of the reservations left open) of the journal at ``path``, read
    as a resume reads it (a torn last line left out); zeros if there is none. A resume counts
    the open ones in full, unless it releases them.

    Raises
    ------
    LedgerError
        When the file is damaged or not a journal.
    """
    path = Path(path)
    if not path.exists():
        return 0, 0
    _, events, _ = _read_events(path)
    charged, open_, _ = replay_events(events)
    return charged, sum(int(ev["tokens"]) for ev in open_.values())


class JournalLedger:
    """A :class:`~shadowprice.ledger.MemoryLedger` whose every reservation is journalled.

    Parameters
    ----------
    path : path
        The journal file (created with its parent folder if missing).
    total : int
        The run's budget, tokens.
    config : mapping
        What the run is (policy, model, budget, question set, ...); JSON-serialisable. An
        existing journal is resumed only if its config is equal, else
        :class:`JournalMismatch` is raised.
    release_unsettled : bool
        On resume, treat reservations a crash left open as never billed (release them) instead
        of counting them as spent in full.
    clock : callable, optional
        Wall clock for reservation expiry (default :func:`time.time`).
    shared : Ledger, optional
        Keep the budget in this ledger instead of in process (e.g. a
        :class:`~shadowprice.ledger.redis.RedisLedger` several ``run`` workers share); the
        journal then records this run's own reservations, and :meth:`recover` settles there
        what a crash of this run left open.

    Attributes
    ----------
    recovery : Recovery
        What resuming found (all zeros for a new journal).
    charged : int
        Tokens this run has charged, earlier runs of the same journal included.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        total: int,
        *,
        config: Mapping[str, Any],
        release_unsettled: bool = False,
        clock: Callable[[], float] | None = None,
        shared: Ledger | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = json.loads(json.dumps(dict(config)))  # normalised as it is stored
        self.recovery = Recovery()
        self._unsettled: dict[str, dict[str, Any]] = {}
        self._release = release_unsettled
        if self.path.exists():
            self._resume()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
            self._write(
                {
                    "event": "run",
                    "version": JOURNAL_VERSION,
                    "config": self.config,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                sync=True,
            )
            _sync_dir(self.path.parent)
        self.charged = self.recovery.spent
        self._inner: Ledger
        self._book: Book | None = None
        if shared is None:
            memory = MemoryLedger(total, spent=self.recovery.spent, clock=clock)
            self._inner, self._book = memory, memory.book
            self._write_recovered()
        else:
            self._inner = shared

    def _resume(self) -> None:
        header, events, length = _read_events(self.path)
        old = header.get("config") or {}
        diff = {
            k: (old.get(k), self.config.get(k))
            for k in sorted(set(old) | set(self.config))
            if old.get(k) != self.config.get(k)
        }
        if diff:
            raise JournalMismatch(self.path, diff)
        with self.path.open("rb+") as fh:  # cut a torn last line: its reserve never returned
            fh.truncate(length)
        settled, open_, by_tag = replay_events(events)
        self._fh = self.path.open("a", encoding="utf-8")
        held = sum(int(ev["tokens"]) for ev in open_.values())
        counted = 0 if self._release else held
        self._unsettled = open_
        for ev in open_.values():
            tag = str(ev.get("tag", ""))
            by_tag[tag] = by_tag.get(tag, 0) + (0 if self._release else int(ev["tokens"]))
        self.recovery = Recovery(settled, len(open_), held, counted, by_tag)

    def _write_recovered(self) -> None:
        """Journal that the reservations a crash left open are now accounted for."""
        for rid, ev in self._unsettled.items():
            used = 0 if self._release else int(ev["tokens"])
            self._write(
                {"event": "recover", "id": rid, "tag": ev.get("tag", ""), "used": used}, sync=False
            )
        if self._unsettled:
            self._sync()
        self._unsettled = {}

    async def recover(self) -> Recovery:
        """Settle in the shared ledger what a crash of this run left open (counted in full, or
        released with ``release_unsettled``); a no-op for the in-process budget, which starts
        from the recovered spending. Call once, before spending."""
        if self._unsettled and self._book is None:
            for rid, ev in self._unsettled.items():
                res = Reservation(rid, int(ev["tokens"]), int(ev.get("period", 0)))
                await self._inner.settle(res, 0 if self._release else res.tokens)
            self._write_recovered()
        return self.recovery

    def _write(self, event: dict[str, Any], *, sync: bool) -> None:
        self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._fh.flush()
        if sync:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._fh.fileno())

    @property
    def book(self) -> Book:
        """The in-process books, for synchronous callers.

        Raises
        ------
        AttributeError
            When the budget is shared (kept in another ledger): there is no book here, so
            ``isinstance(ledger, InProcess)`` is False.
        """
        if self._book is None:
            raise AttributeError("the budget is shared: it has no in-process book")
        return self._book

    @property
    def total(self) -> int:
        """The run's budget, tokens."""
        return self._inner.total

    async def reserve(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        """Reserve in the budget, durably journalled before returning."""
        res = await self._inner.reserve(tokens, min_tokens=min_tokens, tag=tag, ttl=ttl)
        if res is not None:
            event = {"event": "reserve", "id": res.id, "tokens": res.tokens, "tag": tag}
            if res.period:
                event["period"] = res.period
            self._write(event, sync=True)
        return res

    async def settle(self, reservation: Reservation, used: int) -> Settlement:
        """Settle in the budget and journal the tokens charged."""
        out = await self._inner.settle(reservation, used)
        if out.status != "duplicate":
            self.charged += out.charged
            self._write({"event": "settle", "id": reservation.id, "used": out.charged}, sync=False)
        return out

    async def release(self, reservation: Reservation) -> Settlement:
        """Give a reservation back unused (its request was never sent)."""
        return await self.settle(reservation, 0)

    async def extend(self, reservation: Reservation, ttl: float) -> Reservation | None:
        """Renew in the budget (expiry is not journalled: on resume, reservations left open
        count as spent whatever their expiry)."""
        return await self._inner.extend(reservation, ttl)

    async def state(self) -> LedgerState:
        """Totals of the budget (resumed spending included; everyone's, if shared)."""
        return await self._inner.state()

    def state_now(self) -> LedgerState:
        """:meth:`state` for synchronous callers (the in-process budget only)."""
        if self._book is None:
            raise LedgerError("the budget is shared: use `await state()`")
        return self._book.state()

    async def aclose(self) -> None:
        """Flush, fsync and close the journal (a shared ledger is closed by its owner)."""
        if not self._fh.closed:
            self._sync()
            self._fh.close()


def _sync_dir(folder: Path) -> None:
    """fsync a folder so a newly created file in it survives a power loss (POSIX only)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
