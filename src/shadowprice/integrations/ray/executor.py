"""``run --executor ray``: a run's queries spread over Ray workers, one budget in Redis.

:class:`RayExecutor` is an executor of :func:`shadowprice.engine.run.run_plan` (and so of
``shadowprice run``). The command's process (the *driver*) prices the batch as every run does,
then

1. splits the queries into blocks (:func:`~.blocks.split`, one per worker; the number is kept
   in the parts folder's ``run.json``, so a re-run splits them the same way on any machine),
   each with its share of the budget (:func:`~.blocks.shares`);
2. runs each block as one Ray task (:func:`~.blocks.run_block`): the project's own run over
   the block's queries, against the endpoint, with its own journal and results under
   ``results.parts/`` and its reservations in the one budget in Redis (``--state``). A task
   whose worker dies (killed, out of memory, its node lost) is run again by Ray
   (``max_retries``) and resumes from the block's journal: nothing finished is sent again and
   what the dead attempt left in flight is counted as spent in full, once;
3. gathers the blocks' records into the usual ``results.jsonl`` (one line per query, in the
   query file's order) and writes the summary: the fields of a run in one process, summed over
   the blocks, ``within_budget`` read from Redis, and ``executor``, ``blocks``, ``workers``.

Ray's own address is honoured: ``address``, else ``RAY_ADDRESS``, else a local Ray is started
with ``workers`` CPUs (default: this machine's cores) and stopped at the end. On a cluster,
every node needs the package installed and the output folder at the same path (a shared
volume): a block's journal must be where its retry runs. A re-run of a finished run sends
nothing and changes nothing; SIGINT and SIGTERM stop every block as they stop a local run (the
requests in flight counted as spent in full, the summary written with ``interrupted``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...engine.client import ChatClient
from ...engine.grading import get_grader
from ...engine.live import LivePlan
from ...engine.records import QueryRecord
from ...engine.results import (
    FINAL_STATUSES,
    RunFiles,
    latest_by_id,
    read_records,
    write_atomic,
    write_json_atomic,
)
from ...engine.run import (
    FixedPlan,
    Interruption,
    PlanItem,
    RunConfig,
    RunPlan,
    RunReport,
    RunStateError,
    check_plan,
    run_identity,
    run_stoppable,
    summarize,
)
from ...ledger import LedgerState
from ...ledger.journal import JournalMismatch, journal_totals
from ...live.planner import STATE_NAMES
from ...providers import Preset
from .blocks import (
    BlockError,
    BlockJob,
    Standing,
    exclusive,
    read_summary,
    run_block,
    shares,
    split,
    stop_file,
)

__all__ = ["MANIFEST", "BlockFailed", "RayExecutor", "archive_parts", "parts_folder"]

#: The parts folder's description of the run (its identity and number of blocks).
MANIFEST = "run.json"
#: Version of the parts folder's layout, written in the manifest.
LAYOUT = 1
#: Fields a block's plan adds to its summary that the run's summary carries over as they are.
_SUMMED = ("settled_tokens", "unsettled_requests", "unsettled_counted", "resumed", "executed")


class BlockFailed(BlockError):
    """A block did not finish: Ray gave up on it (its worker died more often than
    ``max_retries`` allows, or its node was lost). What it spent is in its journal and in
    Redis; a re-run resumes it."""

    resumable = True


def parts_folder(out: str | os.PathLike[str]) -> Path:
    """Where a Ray run with results ``out`` keeps its blocks' files (``NAME.parts``)."""
    p = Path(out)
    return p.with_name(p.name.removesuffix(".jsonl") + ".parts")


def archive_parts(out: str | os.PathLike[str]) -> list[Path]:
    """Move a Ray run's parts folder aside (``NAME.parts.<UTC time>.bak``), as ``--restart``
    moves the results; returns the new path (empty if there was none)."""
    folder = parts_folder(out)
    if not folder.exists():
        return []
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = folder.with_name(f"{folder.name}.{stamp}.bak"), 1
    while target.exists():
        target, n = folder.with_name(f"{folder.name}.{stamp}-{n}.bak"), n + 1
    folder.rename(target)
    return [target]


@dataclass
class RayExecutor:
    """Run a plan's queries on Ray workers sharing one budget in Redis (see the module
    docstring): pass it as ``run_plan(..., executor=RayExecutor())``.

    Parameters
    ----------
    workers : int, optional
        Blocks of a new run, one Ray task each, and the CPUs of a local Ray. Default: the
        cluster's CPUs, or this machine's cores for a local Ray. A resumed run keeps its
        blocks.
    max_retries : int
        Times Ray runs a block again after its worker died.
    address : str, optional
        The Ray cluster to join (default: ``RAY_ADDRESS``, else a local Ray).
    stop_wait : float
        Seconds the blocks have to settle their books once the run is stopped.

    Raises
    ------
    ValueError
        When called without ``state`` (the Redis budget) or ``out``, or with a setting out of
        range.
    """

    workers: int | None = None
    max_retries: int = 3
    address: str | None = None
    stop_wait: float = 120.0

    def __post_init__(self) -> None:
        for name, low in (("workers", 1), ("max_retries", 0)):
            v = getattr(self, name)
            if v is None and name == "workers":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {v!r}")

    def __call__(
        self,
        items: Sequence[PlanItem],
        *,
        endpoint: str,
        model: str,
        total_budget: int,
        plan: RunPlan | None = None,
        out: str | os.PathLike[str] | None = None,
        config: RunConfig | None = None,
        grader: Any = "math",
        api_key: str | None = None,
        timeout: float = 600.0,
        deadline: float | None = None,
        max_retries: int = 4,
        identity: Mapping[str, Any] | None = None,
        release_unsettled: bool = False,
        state: str | None = None,
        state_name: str = "run",
        preset: Preset | None = None,
    ) -> RunReport:
        """Run ``plan`` over ``items`` (:func:`~shadowprice.engine.run.run_plan`'s arguments).

        Raises
        ------
        RunInterrupted
            After SIGINT or SIGTERM, once every block has settled its books.
        BlockFailed
            When Ray gave up on a block.
        """
        config = config or RunConfig()
        plan = plan or FixedPlan(config.force_tokens, config.fallback_tokens)
        if state is None:
            raise ValueError(
                "the Ray executor keeps the budget in Redis, shared by its workers: give a "
                "state (run --state redis://HOST:PORT/DB, e.g. a redis-server on one machine "
                "every worker reaches)"
            )
        if out is None:
            raise ValueError(
                "the Ray executor needs the results file (run -o/--output): each block keeps "
                "its journal in a folder beside it"
            )
        config.validate()
        get_grader(grader)  # fail here, not in every worker
        check_plan(items, total_budget)
        ident = run_identity(items, plan, model, total_budget, identity)
        run = _Run(
            self,
            list(items),
            plan,
            Path(out).resolve(),
            config,
            ident,
            client={
                "base_url": endpoint,
                "model": model,
                "api_key": api_key,
                "timeout": timeout,
                "deadline": deadline,
                "max_retries": max_retries,
                "preset": preset,
            },
            run={
                "total_budget": total_budget,
                "grader": grader,
                "identity": ident,
                "release_unsettled": release_unsettled,
            },
            state=state,
            state_name=state_name,
        )
        return run.start()


@dataclass
class _Run:
    """One invocation of a Ray run (the driver's side)."""

    executor: RayExecutor
    items: list[PlanItem]
    plan: RunPlan
    out: Path
    config: RunConfig
    identity: dict[str, Any]
    client: dict[str, Any]
    run: dict[str, Any]
    state: str
    state_name: str

    @property
    def folder(self) -> Path:
        return parts_folder(self.out)

    @property
    def total(self) -> int:
        return int(self.run["total_budget"])

    def start(self) -> RunReport:
        files = RunFiles.of(self.out)
        if files.journal.exists():
            raise RunStateError(
                f"{files.results} was written by a run in one process (it has a journal, "
                f"{files.journal.name}): resume it without --executor ray, or pass --restart "
                f"to move it aside and start over on Ray"
            )
        manifest = self.folder / MANIFEST
        if files.results.exists() and files.results.stat().st_size and not manifest.exists():
            raise RunStateError(
                f"{files.results} exists but has no {self.folder.name}/{MANIFEST}: it was not "
                f"written by a Ray run, so it cannot be resumed; pass --restart to move it aside "
                f"and start over, or choose another output"
            )
        blocks = self._recorded_blocks(manifest)
        return run_stoppable(lambda stop: self._work(stop, files, blocks))

    def _recorded_blocks(self, manifest: Path) -> int | None:
        """The blocks of the run ``manifest`` describes (None: a new run); refuses a run with
        another identity."""
        if not manifest.exists():
            return None
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        old = recorded.get("config", {})
        new = json.loads(json.dumps(self.identity))
        diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))}
        diff = {k: v for k, v in diff.items() if v[0] != v[1]}
        if diff:
            raise JournalMismatch(manifest, diff)
        return int(recorded["blocks"])

    async def _work(self, stop: Interruption, files: RunFiles, blocks: int | None) -> RunReport:
        from ...ledger.redis import RedisLedger

        start = time.perf_counter()
        redis = RedisLedger.from_url(self.state, self.total, namespace=self.state_name, timeout=5.0)
        try:
            await redis.state()  # the budget is reachable before Ray starts
            async with ChatClient(**self.client):
                pass  # the endpoint's URL and the client's settings are valid
            with _ray(self.executor) as workers:
                jobs = self._jobs(blocks or max(1, min(workers, len(self.items))))
                lock = self.folder / "run.lock"
                with exclusive(lock, lambda: _run_busy(lock, files.results)):
                    outcomes, cut = await self._blocks(jobs, stop)
            final = await redis.state()
        finally:
            await redis.aclose()
        _raise_failures(jobs, outcomes)
        report = self._gather(jobs, final, workers, time.perf_counter() - start, cut)
        write_json_atomic(files.summary, report.summary.summary())
        if cut is not None:
            stop.report = report
            raise asyncio.CancelledError
        return report

    def _jobs(self, blocks: int) -> list[BlockJob]:
        """The blocks' jobs; writes the manifest of a new run and clears an old stop."""
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / MANIFEST
        if not manifest.exists():
            payload = {"layout": LAYOUT, "blocks": blocks, "config": self.identity}
            write_json_atomic(manifest, payload)
        stop_file(self.folder).unlink(missing_ok=True)
        parts = split(self.items, blocks)
        standing = [self._standing(k, part) for k, part in enumerate(parts)]
        c = self.config.concurrency
        jobs = []
        for k, (part, share) in enumerate(zip(parts, shares(standing, self.total), strict=True)):
            config = dataclasses.replace(
                self.config, concurrency=max(1, c // blocks + (k < c % blocks)), progress=False
            )
            job = BlockJob(k, blocks, self.folder, part, share, self.plan, self.client, config,
                           {**self.run, "identity": {**self.identity, "block": f"{k}/{blocks}"}},
                           self.state, self.state_name)  # fmt: skip
            job.plan = _block_plan(self.plan, part, read_summary(job.files.summary))
            jobs.append(job)
        return jobs

    def _standing(self, k: int, part: list[PlanItem]) -> Standing:
        """Where block ``k`` stands: from its journal and results, if it has run before."""
        files = RunFiles.of(self.folder / f"block-{k}.jsonl")
        charged, left_open = journal_totals(files.journal)
        done = latest_by_id(read_records(files.results))
        waiting = [i for i in part if done.get(i.id, {}).get("status") not in FINAL_STATUSES]
        counted = 0 if self.run["release_unsettled"] else left_open
        return Standing(charged + counted, sum(int(i.budget) for i in waiting), len(waiting))

    async def _blocks(
        self, jobs: list[BlockJob], stop: Interruption
    ) -> tuple[list[Any], str | None]:
        """Run the jobs as Ray tasks; on a stop signal, tell every block to stop and wait for
        them to settle. Returns each block's outcome (its summary, or the exception that
        ended it) and the signal that stopped the run, if one did."""
        import ray

        task = ray.remote(run_block).options(
            max_retries=self.executor.max_retries, retry_exceptions=False, num_cpus=1
        )
        refs = [task.remote(job, MANIFEST) for job in jobs]
        try:
            return await _outcomes(refs), None
        except asyncio.CancelledError:
            if stop.signal is None:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
            stop_file(self.folder).write_text(stop.signal, encoding="utf-8")
            try:
                done = await asyncio.wait_for(_outcomes(refs), self.executor.stop_wait)
            except TimeoutError:
                for ref in refs:  # left as a crash leaves them: the journals count the rest
                    ray.cancel(ref, force=True)
                done = [BlockFailed("did not stop in time") for _ in refs]
            return done, stop.signal

    def _gather(
        self, jobs: list[BlockJob], state: LedgerState, workers: int, wall: float, cut: str | None
    ) -> RunReport:
        """The run's records (written to the results file) and its summary (stopped by the
        signal ``cut``, if not None)."""
        rows: dict[str, dict[str, Any]] = {}
        for job in jobs:
            rows.update(latest_by_id(read_records(job.files.results)))
        final = [rows[item.id] for item in self.items if item.id in rows]
        write_atomic(self.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in final))
        parts = [read_summary(job.files.summary) for job in jobs]
        spent = sum(_spent(job, part, rows) for job, part in zip(jobs, parts, strict=True))
        summary = summarize(final, self.total, spent=spent)
        summary.update(
            **{k: _sum(parts, k) for k in _SUMMED[:3]},
            overrun=state.overrun,
            within_budget=spent <= self.total and state.spent <= state.total and not state.overrun,
            shared_budget=state.total,
            shared_spent=state.spent,
        )
        if self.plan.name:
            summary.update(policy=self.plan.name)
        summary.update(
            **{k: _sum(parts, k) for k in _SUMMED[3:]},
            wall_s=round(wall, 3),
            **_plan_fields(parts),
            executor="ray",
            blocks=len(jobs),
            workers=workers,
        )
        if cut is not None:
            summary.update(interrupted=cut, cancelled_requests=_sum(parts, "cancelled_requests"))
        return RunReport([QueryRecord.of(r) for r in final], summary)


async def _outcomes(refs: list[Any]) -> list[Any]:
    """Each task's result, or the exception that ended it (a task's own error unwrapped)."""
    from ray.exceptions import RayError, RayTaskError

    async def one(ref: Any) -> Any:
        try:
            return await ref
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return cause if isinstance(cause, Exception) else exc
        except RayError as exc:
            return exc

    return list(await asyncio.gather(*(one(ref) for ref in refs)))


def _raise_failures(jobs: list[BlockJob], outcomes: list[Any]) -> None:
    """Raise the first block's own error (bad input, Redis unreachable: as a local run
    raises it), else :class:`BlockFailed` for the blocks Ray gave up on."""
    errors = [(job, o) for job, o in zip(jobs, outcomes, strict=True) if isinstance(o, Exception)]
    from ray.exceptions import RayError

    own = [o for _, o in errors if not isinstance(o, RayError | BlockFailed)]
    if own:
        raise own[0]
    if errors:
        names = ", ".join(f"{job.index} ({type(o).__name__}: {str(o)[:200]})" for job, o in errors)
        raise BlockFailed(
            f"blocks {names} of {len(jobs)} did not finish; what they spent is in their "
            f"journals ({jobs[0].folder}) and in Redis: re-run the same command to resume them"
        )


def _block_plan(plan: RunPlan, part: list[PlanItem], previous: Mapping[str, Any]) -> RunPlan:
    """``plan`` for one block: a live plan over the block's curves only, reporting the block's
    own earlier session when nothing is left to run."""
    if not isinstance(plan, LivePlan):
        return plan
    row = {qid: i for i, qid in enumerate(plan.ids)}
    rows = [row[item.id] for item in part]
    mine = {k: previous[k] for k in ("continuation", "live") if k in previous}
    return dataclasses.replace(
        plan, curves=plan.curves[rows], ids=[item.id for item in part], previous=mine
    )


def _spent(job: BlockJob, summary: Mapping[str, Any], rows: Mapping[str, Any]) -> int:
    """Tokens a block charged: its summary's, else (it never ran) its rows'."""
    if "tokens_used" in summary:
        return int(summary["tokens_used"])
    return sum(int(rows[i.id].get("tokens", 0)) for i in job.items if i.id in rows)


def _sum(parts: list[Mapping[str, Any]], key: str) -> int:
    return sum(int(p.get(key, 0) or 0) for p in parts)


def _plan_fields(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What the plan added to the blocks' summaries, for the run: the fixed plan's late
    abandonments summed; the live plan's continuation, and its planner's counts summed with
    its price and length calibration averaged over the blocks by their queries (each block's
    own in ``live["blocks"]``)."""
    out: dict[str, Any] = {}
    if any("late_abandoned" in p for p in parts):
        out["late_abandoned"] = sum(int(p.get("late_abandoned", 0)) for p in parts)
    if any("continuation" in p for p in parts):
        out["continuation"] = next(p["continuation"] for p in parts if "continuation" in p)
    lives = [p["live"] for p in parts if isinstance(p.get("live"), dict)]
    if lives:
        counted = (*STATE_NAMES, "budget", "spent", "requests", "extensions")
        live: dict[str, Any] = {k: sum(int(v.get(k, 0)) for v in lives) for k in counted}
        weights = [sum(int(v.get(s, 0)) for s in STATE_NAMES) for v in lives]
        for k in ("price", "length_scale", "length_spread"):
            pairs = [(float(v[k]), w) for v, w in zip(lives, weights, strict=True) if k in v]
            total = sum(w for _, w in pairs)
            live[k] = sum(x * w for x, w in pairs) / total if total else float("nan")
        out["live"] = {**live, "blocks": lives}
    return out


@contextmanager
def _ray(executor: RayExecutor) -> Iterator[int]:
    """Connected to Ray (joined, or a local one started and stopped here); yields the number
    of workers."""
    import logging

    if "ray" not in sys.modules and "RAY_DISABLE_FAILURE_SIGNAL_HANDLER" not in os.environ:
        # Ray's crash handler would print a stack dump for every SIGTERM the run handles
        # itself (settling, then exit 143); read once, when Ray is imported.
        os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
        try:
            import ray
        finally:
            del os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"]
    import ray

    started = False
    if not ray.is_initialized():
        # ray.init makes SIGTERM exit the driver at once; the run's own handlers (stop every
        # block, settle, write the summary) are put back after it.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        address = executor.address or os.environ.get("RAY_ADDRESS") or None
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        # Ray notes on stderr that its token authentication is on (its default): a command's
        # stderr is for what went wrong.
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = notice.level
        notice.setLevel(logging.ERROR)
        try:
            if address is not None:
                ray.init(address=address, **quiet)
            else:
                cpus = executor.workers or os.cpu_count() or 1
                ray.init(num_cpus=cpus, include_dashboard=False, **quiet)
        finally:
            notice.setLevel(level)
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    if handler is not None:
                        signal.signal(sig, handler)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield executor.workers or max(1, cpus)
    finally:
        if started:
            ray.shutdown()


def _run_busy(path: Path, results: Path) -> RunStateError:
    return RunStateError(
        f"another shadowprice run is writing {results} (it holds {path}): wait for it to end, "
        f"or choose another output"
    )
