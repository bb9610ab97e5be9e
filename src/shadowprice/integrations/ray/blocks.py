"""One block of a run, on a Ray worker: its queries, its share of the budget, its own files.

A run on Ray (:class:`~.executor.RayExecutor`) splits its queries into blocks. Each block is
one Ray task that runs the project's own run (:func:`shadowprice.engine.run.execute_policy`:
the one driver, the write-ahead journal, continuation, grading) over its queries against the
endpoint, with

- **its own files** in the run's parts folder (``results.parts/block-K.jsonl``, its journal
  ``block-K.journal.jsonl`` and summary ``block-K.summary.json``), so a block that is run
  again, by Ray after its worker died or by a re-run of the command, resumes from its journal:
  nothing finished is sent again, and whatever the dead attempt left in flight is counted as
  spent in full (settled once in Redis: settling is idempotent per reservation);
- **a share of the one budget in Redis** (:class:`ShareLedger`): every reservation is made in
  the shared budget, and no block reserves past its share, so a block's policy plans with
  what is its own (a fixed plan's forcing and fallbacks never take tokens promised to another
  block's queries; each ``clear-live`` block clears its own price over its share);
- **a lock** (``block-K.lock``, held while it runs), so one block is never run by two
  processes at once (a worker Ray thought dead, a second command on the same output);
- **a stop file** (``STOP`` in the parts folder, written by the command when it gets SIGINT or
  SIGTERM): the block stops as a local run stops on Ctrl-C, its requests in flight counted as
  spent in full and its summary written.

The process id of the worker running block K is in ``block-K.pid`` while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...engine.client import ChatClient
from ...engine.results import RunFiles
from ...engine.run import (
    Interruption,
    PlanItem,
    RunConfig,
    RunInterrupted,
    RunPlan,
    execute_policy,
    run_stoppable,
)
from ...ledger import Ledger, LedgerState, Reservation, Settlement
from ...ledger.journal import journal_totals

__all__ = [
    "BlockError",
    "BlockJob",
    "ShareLedger",
    "Standing",
    "exclusive",
    "run_block",
    "shares",
    "split",
]

#: Seconds between looks for the stop file.
_POLL = 0.2
#: Seconds a block waits for the lock of another process running it (one Ray thought dead).
LOCK_WAIT = 30.0


class BlockError(RuntimeError):
    """A block cannot run where it was scheduled (its files are not there, or another live
    process runs it); not retried by Ray.

    Attributes
    ----------
    resumable : bool
        Whether re-running the same command may finish it (False: fix what the message says
        first).
    """

    resumable = False


def split(items: Sequence[PlanItem], blocks: int) -> list[list[PlanItem]]:
    """``items`` dealt into ``blocks`` blocks (block k gets items k, k + blocks, ...), so that
    each block has a like mix of the file's queries however the file is sorted."""
    return [list(items[k::blocks]) for k in range(blocks)]


@dataclass(frozen=True)
class Standing:
    """Where one block stands when a run (re)starts.

    Attributes
    ----------
    spent : int
        Tokens it charged in earlier sessions, with what a crash left in flight (counted in
        full when it resumes, unless ``release_unsettled``).
    need : int
        The caps of its queries still to run (0 for a live plan, which sets caps as it goes).
    waiting : int
        Its queries still to run.
    """

    spent: int = 0
    need: int = 0
    waiting: int = 0


def shares(standing: Sequence[Standing], total: int) -> list[int]:
    """Each block's share of ``total`` for this session: what it spent before, the caps of its
    queries still to run, and its part (by queries still to run) of the tokens no cap holds (a
    fixed plan's reserve for forcing and fallbacks, what earlier sessions left unspent, all of a
    live plan's budget). When what is left cannot hold every cap, it is split by the caps. The
    shares add up to at most ``total`` (more only if earlier sessions spent more than it)."""
    left = max(0, total - sum(b.spent for b in standing))
    need = sum(b.need for b in standing)
    waiting = sum(b.waiting for b in standing)
    if need > left:
        return [b.spent + left * b.need // need for b in standing]
    free = left - need
    return [b.spent + b.need + (free * b.waiting // waiting if waiting else 0) for b in standing]


class ShareLedger:
    """A share of a shared budget: reservations go to ``shared``, and no more than ``share``
    tokens are ever spent or reserved through this object (its own, earlier sessions' spending
    included).

    Parameters
    ----------
    shared : Ledger
        The one budget (a :class:`~shadowprice.ledger.redis.RedisLedger`).
    share : int
        Tokens this block may spend in all.
    spent : int
        Tokens it spent in earlier sessions (settled, or counted on an earlier recovery).

    Notes
    -----
    :meth:`state` reports the share as the total and what is available as the least of the
    share's room and the shared budget's. A reservation settled here that this object did not
    make (one an earlier session's crash left open, settled on recovery) counts as this
    block's spending.
    """

    def __init__(self, shared: Ledger, share: int, spent: int = 0) -> None:
        if share < 0 or spent < 0:
            raise ValueError(f"share and spent must be >= 0 tokens, got {share} and {spent}")
        self.shared = shared
        self.share = int(share)
        self.spent = int(spent)
        self.reserved = 0
        self.overrun = 0
        self._open: dict[str, int] = {}

    @property
    def total(self) -> int:
        return self.share

    async def reserve(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        room = self.share - self.spent - self.reserved
        want = min(int(tokens), room)
        if want < 1 or want < (tokens if min_tokens is None else min_tokens):
            return None
        self.reserved += want  # held before the await: a concurrent reserve sees it
        try:
            res = await self.shared.reserve(
                want,
                min_tokens=None if min_tokens is None else min(min_tokens, want),
                tag=tag,
                ttl=ttl,
            )
        except BaseException:
            self.reserved -= want
            raise
        self.reserved -= want - (res.tokens if res is not None else 0)
        if res is not None:
            self._open[res.id] = res.tokens
        return res

    async def settle(self, reservation: Reservation, used: int) -> Settlement:
        out = await self.shared.settle(reservation, used)
        self.reserved -= self._open.pop(reservation.id, 0)
        self.spent += out.charged
        self.overrun += out.overrun
        return out

    async def release(self, reservation: Reservation) -> Settlement:
        return await self.settle(reservation, 0)

    async def extend(self, reservation: Reservation, ttl: float) -> Reservation | None:
        return await self.shared.extend(reservation, ttl)

    async def state(self) -> LedgerState:
        shared = await self.shared.state()
        available = min(self.share - self.spent - self.reserved, shared.available)
        return LedgerState(
            total=self.share,
            spent=self.spent,
            reserved=max(0, self.share - self.spent - max(0, available)),
            overrun=self.overrun,
            period=shared.period,
        )

    async def aclose(self) -> None:
        """Nothing of its own to close (the shared ledger is its owner's)."""


@dataclass
class BlockJob:
    """What one Ray task runs (see the module docstring).

    Attributes
    ----------
    index, blocks : int
        This block's number, and how many the run has.
    folder : Path
        The run's parts folder (absolute: every worker must see it).
    items : list of PlanItem
    share : int
        Tokens this block may spend, earlier sessions' spending included (:func:`shares`).
    plan : RunPlan
    client : dict
        :class:`~shadowprice.engine.client.ChatClient`'s arguments.
    config : RunConfig
        The block's settings (its part of the run's concurrency).
    run : dict
        :func:`~shadowprice.engine.run.execute_policy`'s other keyword arguments
        (``total_budget``, ``grader``, ``identity``, ``release_unsettled``).
    state, state_name : str
        The Redis budget.
    """

    index: int
    blocks: int
    folder: Path
    items: list[PlanItem]
    share: int
    plan: RunPlan
    client: dict[str, Any]
    config: RunConfig
    run: dict[str, Any]
    state: str
    state_name: str

    @property
    def files(self) -> RunFiles:
        """The block's results, journal and summary."""
        return RunFiles.of(self.folder / f"block-{self.index}.jsonl")

    @property
    def pid_file(self) -> Path:
        return self.folder / f"block-{self.index}.pid"

    @property
    def lock_file(self) -> Path:
        return self.folder / f"block-{self.index}.lock"


def stop_file(folder: Path) -> Path:
    """The file whose presence stops every block of a run (it holds the signal's name)."""
    return folder / "STOP"


def run_block(job: BlockJob, manifest: str) -> dict[str, Any]:
    """Run one block (see the module docstring): the body of a Ray task. Returns the block's
    summary (also in its summary file), or ``{"stopped": True}`` when the run was stopped
    before the block began.

    Raises
    ------
    BlockError
        When the parts folder is not visible here or another process holds the block's lock.
    """
    if not (job.folder / manifest).exists():
        raise BlockError(
            f"{job.folder} is not visible on {socket.gethostname()}: put the run's --output "
            f"on storage every node of the Ray cluster mounts at the same path"
        )
    with exclusive(job.lock_file, lambda: _block_busy(job.lock_file), LOCK_WAIT):
        job.pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
        if stop_file(job.folder).exists():
            return {"stopped": True}
        spent, _ = journal_totals(job.files.journal)
        try:
            report = run_stoppable(lambda stop: _work(job, spent, stop))
            return report.summary.summary()
        except RunInterrupted as exc:
            return exc.report.summary.summary() if exc.report is not None else {"stopped": True}
        except KeyboardInterrupt:  # the stop came as the block ended: its files say how
            return {"stopped": True}
        finally:
            job.pid_file.unlink(missing_ok=True)


async def _work(job: BlockJob, spent: int, stop: Interruption) -> Any:
    from ...ledger.redis import RedisLedger

    task = asyncio.current_task()
    assert task is not None
    watch = asyncio.create_task(_watch(stop_file(job.folder), stop, task))
    redis = RedisLedger.from_url(
        job.state, job.run["total_budget"], namespace=job.state_name, timeout=5.0
    )
    try:
        async with ChatClient(**job.client) as client:
            return await execute_policy(
                job.items,
                client,
                job.plan,
                out=job.files.results,
                config=job.config,
                shared=ShareLedger(redis, job.share, spent),
                stop=stop,
                **job.run,
            )
    finally:
        watch.cancel()
        await redis.aclose()


async def _watch(path: Path, stop: Interruption, task: asyncio.Task[Any]) -> None:
    """Once ``path`` appears, stop the block as its signal stops a run in one process (the
    name in the file, noted in ``stop``; the run's task cancelled, so it settles and writes its
    summary). Polled in the block's own loop: a Ray worker does not pass signals sent to
    itself on to Python."""
    while not path.exists():
        await asyncio.sleep(_POLL)
    if stop.signal is None:
        stop.signal = path.read_text(encoding="utf-8").strip() or "SIGTERM"
        task.cancel()


@contextlib.contextmanager
def exclusive(path: Path, busy: Callable[[], Exception], wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released by the kernel if the process dies),
    waiting up to ``wait`` seconds for another holder; raises ``busy()`` if it still holds it."""
    with path.open("a") as fh:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise busy() from None
                time.sleep(_POLL)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _block_busy(path: Path) -> BlockError:
    pid = path.with_suffix(".pid")
    who = pid.read_text().strip() if pid.exists() else "unknown"
    return BlockError(
        f"{path.stem} is being run by another process (pid {who} on a node that shares "
        f"{path.parent}): wait for it to end, or stop it"
    )


def read_summary(path: Path) -> Mapping[str, Any]:
    """A block's summary file (empty if it has none)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
