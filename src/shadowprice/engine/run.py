"""Run a batch under one budget: a session of the one driver, resumable through its files.

:func:`execute_policy` is every ``run``: it opens the run's ledger (a write-ahead journal
beside the results, over a shared Redis budget if asked), finds what earlier runs of the same
configuration finished and charged, builds the policy over the queries still to run and
drives it (:class:`~.driver.Driver`) on an engine, then brings the results in line with the
books and writes the summary. A :class:`RunPlan` says what runs: :class:`FixedPlan` (a
:class:`~shadowprice.live.OneShot` of the items' caps, answer forcing and fallbacks;
:func:`execute` for short) or :class:`~.live.LivePlan` (the live planner).
:func:`run_plan` is the synchronous entry that owns the client (``shadowprice run``).
Guarantees:

* a request is sent only under a ledger reservation of its ``max_tokens``; with an output
  file the reservation is in the write-ahead journal (fsynced) before the request leaves, so
  a run killed with requests in flight counts them as spent when it resumes;
* the completion tokens of all requests (retries, forcing and fallbacks included, tokens a
  failed attempt may have been billed included) never sum past ``total_budget``; a server
  that generates past ``max_tokens`` is charged in full and reported as an overrun;
* tokens a planned query was promised are not used by forcing or fallbacks of others;
* abandoned queries (budget 0) are not sent; they are recorded with the reason, or get a cheap
  direct-answer fallback when ``fallback_tokens > 0``;
* results are appended as they land; re-running resumes and never repeats a finished query,
  and refuses to resume a run whose configuration (policy, model, budget, queries, plan)
  changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar
from urllib.parse import urlsplit

from ..ledger import JournalLedger, Ledger, LedgerState, MemoryLedger, Recoverable, Recovery
from ..limits import MAX_BUDGET
from ..live.base import LivePolicy
from ..live.oneshot import DROPPED_REASON, OneShot
from ..providers import Preset
from .books import Books, charges_by_query
from .client import ChatClient, Continuation
from .driver import DriveOptions, Driver, Engine, HttpEngine, PlanItem, Priced
from .grading import Grader, get_grader
from .records import QueryRecord, RunSummary
from .results import (
    FINAL_STATUSES,
    RunFiles,
    append_record,
    latest_by_id,
    open_for_append,
    read_records,
    write_json_atomic,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "LATE_REASON",
    "Executor",
    "FixedPlan",
    "Interruption",
    "PlanItem",
    "RunConfig",
    "RunInterrupted",
    "RunPlan",
    "RunReport",
    "RunStateError",
    "check_plan",
    "execute",
    "execute_policy",
    "prompt_messages",
    "run_identity",
    "run_plan",
]

#: Default prompt: the usual step-by-step-and-box instruction for math models.
DEFAULT_TEMPLATE = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)


T = TypeVar("T")

#: Runs a plan somewhere other than this process (e.g.
#: :class:`shadowprice.integrations.ray.RayExecutor`, on Ray workers), for :func:`run_plan`:
#: called with the items and :func:`run_plan`'s keyword arguments (``plan`` resolved,
#: ``identity`` complete), it returns the run's report and writes its files as a run in this
#: process would.
Executor = Callable[..., "RunReport"]

#: Why a planned query was not sent: the budget left (e.g. after a resume) could not hold it.
LATE_REASON = DROPPED_REASON


class RunStateError(ValueError):
    """The output files cannot be resumed as asked (another run's, or not ours)."""


@dataclass
class RunConfig:
    """How to execute a plan.

    Attributes
    ----------
    concurrency : int
        Requests in flight at once (>= 1).
    force_tokens : int
        Allowance of the answer-forcing follow-up after a length stop (0 = off).
    fallback_tokens : int
        Allowance of the direct-answer fallback for abandoned queries (0 = off).
    params : dict
        Extra sampling parameters sent with every request (e.g. ``temperature``).
    progress : bool
        Show a rich progress bar (on stderr).
    """

    concurrency: int = 8
    force_tokens: int = 0
    fallback_tokens: int = 0
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0})
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        check_settings(
            {"concurrency": (self.concurrency, 1)}
            | {n: (getattr(self, n), 0) for n in ("force_tokens", "fallback_tokens")},
            self.params,
        )


def check_settings(counts: Mapping[str, tuple[Any, int]], params: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first count (``name -> (value, least)``) that is not a
    whole number of at least its least, or a sampling temperature that is not a finite
    number >= 0."""
    for name, (v, low) in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {v!r}")
    t = params.get("temperature")
    if t is not None and not (isinstance(t, int | float) and math.isfinite(t) and t >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")


@dataclass
class RunReport:
    """All final records of a run (resumed ones included) and its summary."""

    records: list[QueryRecord]
    summary: RunSummary


def check_template(template: str) -> str:
    """Return ``template`` if it has one ``{question}`` field and no other ``{...}`` field.

    Raises
    ------
    ValueError
        Saying how to write the template (literal braces are doubled: ``{{`` and ``}}``).
    """
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"the prompt template must contain {{question}} and no other {{...}} fields "
            f"({type(exc).__name__}: {exc}); write literal braces as {{{{ and }}}}"
        ) from None
    if "{question}" not in template:
        raise ValueError("the prompt template must contain {question}")
    return template


def prompt_messages(
    question: str, template: str = DEFAULT_TEMPLATE, system: str | None = None
) -> list[dict[str, str]]:
    """Chat messages for one question."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": template.format(question=question)})
    return messages


def plan_identity(items: Sequence[PlanItem]) -> dict[str, str]:
    """Digests of what is asked (``queries``: ids, prompts, gold answers) and of the plan
    (``plan``: each query's budget), to tell a resumed run from a different one."""
    q = hashlib.sha256()
    p = hashlib.sha256()
    for item in items:
        q.update(json.dumps([item.id, item.messages, item.gold]).encode())
        p.update(json.dumps([item.id, int(item.budget)]).encode())
    return {"queries": q.hexdigest()[:16], "plan": p.hexdigest()[:16]}


def summarize(
    records: Sequence[Mapping[str, Any]], total_budget: int, *, spent: int | None = None
) -> RunSummary:
    """Accuracy, tokens used vs budget, abandoned/forced/error counts.

    ``records`` are the final records (one per query); ``spent`` is the ledger's total,
    which also counts tokens of superseded attempts and of requests a crash left unsettled
    (defaults to the records' sum).
    """
    graded = [r for r in records if r.get("gold") is not None]
    correct = sum(1 for r in graded if r.get("correct"))
    used = sum(int(r.get("tokens", 0)) for r in records) if spent is None else spent
    statuses = [r.get("status") for r in records]
    return RunSummary(
        queries=len(records),
        funded=sum(1 for r in records if int(r.get("budget", 0)) > 0),
        abandoned=statuses.count("abandoned") + statuses.count("fallback"),
        fallback=statuses.count("fallback"),
        errors=statuses.count("error"),
        graded=len(graded),
        correct=correct,
        # Abandoned and failed queries count as wrong: accuracy is over the whole batch.
        accuracy=correct / len(graded) if graded else None,
        budget=int(total_budget),
        accounting="spent",
        tokens_spent=int(used),
        within_budget=int(used) <= int(total_budget),
        tokens_allotted=sum(int(r.get("budget", 0)) for r in records),
        prompt_tokens=sum(int(r.get("prompt_tokens", 0)) for r in records),
        truncated=sum(1 for r in records if r.get("finish_reason") == "length"),
        forced=sum(1 for r in records if r.get("forced")),
        forcing_tokens=sum(int(r.get("forcing_tokens", 0)) for r in records),
    )


def run_identity(
    items: Sequence[PlanItem],
    plan: RunPlan,
    model: str,
    total_budget: int,
    identity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a run's files are a run of (its journal's header, a Ray run's manifest): a resume
    with any of it different is refused. ``identity`` (the caller's, e.g. the policy's name)
    comes first; the plan names its policy if the caller did not."""
    named = identity or {}
    return {
        **dict(named),
        **({"policy": plan.name} if plan.name and "policy" not in named else {}),
        "model": model,
        "budget": int(total_budget),
        **plan.identity(items),
    }


def check_plan(items: Sequence[PlanItem], total_budget: int) -> None:
    """Refuse a budget out of range, duplicate query ids or a negative cap (ValueError)."""
    if isinstance(total_budget, bool) or not isinstance(total_budget, int):
        raise ValueError(f"budget must be a whole number of tokens, got {total_budget!r}")
    if not 0 <= total_budget <= MAX_BUDGET:
        raise ValueError(
            f"budget must be between 0 and {MAX_BUDGET:.0e} tokens, got {total_budget}"
        )
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("plan has duplicate query ids")
    if any(item.budget < 0 for item in items):
        raise ValueError("plan has a negative budget")


def open_ledger(
    out: str | Path | None,
    total_budget: int,
    identity: Mapping[str, Any],
    *,
    release_unsettled: bool = False,
    shared: Ledger | None = None,
) -> tuple[Ledger, list[dict[str, Any]]]:
    """The ledger of a run and the records an earlier run with the same identity left.

    Without ``out`` a fresh in-memory ledger (or ``shared`` itself). With ``out``, a journal
    beside it, over ``shared`` when given: a new run starts one; an existing run is resumed
    if its journal's identity matches (else :class:`~shadowprice.ledger.JournalMismatch`). A
    results file without a journal is not ours to append to: :class:`RunStateError`.
    """
    if out is None:
        return (shared if shared is not None else MemoryLedger(total_budget)), []
    files = RunFiles.of(out)
    if files.results.is_dir():
        raise RunStateError(f"{files.results} is a directory; give a file name for the results")
    if files.results.exists() and files.results.stat().st_size and not files.journal.exists():
        raise RunStateError(
            f"{files.results} exists but has no journal ({files.journal.name}): it was not "
            f"written by this version of shadowprice run, so it cannot be resumed; pass "
            f"--restart to move it aside and start over, or choose another output"
        )
    ledger = JournalLedger(
        files.journal,
        total_budget,
        config=identity,
        release_unsettled=release_unsettled,
        shared=shared,
    )
    return ledger, read_records(files.results)


class RunPlan(Protocol):
    """What a run executes over its queries: how its policy is made and what it reports.

    :class:`FixedPlan` (fixed caps, forcing, fallbacks) and
    :class:`~shadowprice.engine.live.LivePlan` (the live planner) implement it.

    Attributes
    ----------
    name : str or None
        The policy's name, written in every record (None: not known to the engine).
    continuation : {'auto', 'prefill', 'vllm', 'off'}
        How capped requests are continued (``auto``: ask the engine).
    unsent : str
        Why a query its policy never sent was not funded.
    """

    @property
    def name(self) -> str | None: ...

    @property
    def continuation(self) -> Continuation: ...

    @property
    def unsent(self) -> str: ...

    def identity(self, items: Sequence[PlanItem]) -> dict[str, Any]:
        """What besides the model and budget must match for a resume."""
        ...

    def policy(
        self, items: Sequence[PlanItem], available: int, continuation: Continuation
    ) -> LivePolicy:
        """A fresh policy over ``items`` (the queries still to run) with ``available`` tokens."""
        ...

    def report(
        self, policy: LivePolicy | None, continuation: Continuation, driver: Driver | None
    ) -> dict[str, Any]:
        """Fields it adds to the summary (``policy`` is None when nothing was left to run)."""
        ...


@dataclass
class FixedPlan:
    """Each item's ``budget`` is its cap, run as a :class:`~shadowprice.live.OneShot` plan
    (failed queries are not retried in the run: a re-run retries them), with optional answer
    forcing and direct-answer fallbacks (:class:`RunConfig`)."""

    force_tokens: int = 0
    fallback_tokens: int = 0
    name: str | None = None
    continuation: Continuation = "off"
    unsent: str = LATE_REASON

    def identity(self, items: Sequence[PlanItem]) -> dict[str, Any]:
        return plan_identity(items)

    def policy(
        self, items: Sequence[PlanItem], available: int, continuation: Continuation
    ) -> LivePolicy:
        return OneShot(
            [item.budget for item in items],
            max_retries=0,
            force_tokens=self.force_tokens,
            fallback_tokens=self.fallback_tokens,
        )

    def report(
        self, policy: LivePolicy | None, continuation: Continuation, driver: Driver | None
    ) -> dict[str, Any]:
        written = driver.records if driver is not None else []
        return {"late_abandoned": sum(1 for r in written if r.get("reason") == LATE_REASON)}


def as_engine(engine: Engine | ChatClient) -> Engine:
    """``engine``, or the HTTP engine of a chat client."""
    return HttpEngine(engine) if isinstance(engine, ChatClient) else engine


async def execute_policy(
    items: Sequence[PlanItem],
    engine: Engine | ChatClient,
    plan: RunPlan,
    *,
    total_budget: int,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    grader: Grader | str | None = "math",
    identity: Mapping[str, Any] | None = None,
    release_unsettled: bool = False,
    shared: Ledger | None = None,
    stop: Interruption | None = None,
) -> RunReport:
    """Run ``plan`` over ``items`` on ``engine`` under ``total_budget``; see the module
    docstring.

    Parameters
    ----------
    items : sequence of PlanItem
        The queries, one item each (a fixed plan's caps in their ``budget``).
    engine : Engine or ChatClient
        Where requests run (a chat client: :class:`~.driver.HttpEngine` over it).
    plan : RunPlan
        :class:`FixedPlan` or :class:`~shadowprice.engine.live.LivePlan`.
    total_budget : int
        Completion tokens the whole run may spend (0 … :data:`MAX_BUDGET`).
    out : path, optional
        Results JSONL (with its journal and summary beside it); resumed when it exists.
    config : RunConfig, optional
    grader : Grader or str, optional
        ``"math"`` (math-verify), ``"exact"``, ``"module:attribute"`` or a callable.
    identity : mapping, optional
        What else defines this run (e.g. ``{"policy": "clear"}``); with the model, budget,
        queries and plan it must match for a resume.
    release_unsettled : bool
        On resume, count requests a crash left in flight as never billed (default: spent).
    shared : Ledger, optional
        A budget shared with other workers (e.g. a Redis ledger): this run's reservations
        are made there (and journalled here).
    stop : Interruption, optional
        Names the signal when the run is cancelled to stop it (see :func:`run_plan`);
        any other cancellation leaves the books as a crash would (requests in flight open in
        the journal, counted on resume).

    Raises
    ------
    ValueError
        For a bad plan or config; :class:`RunStateError` /
        :class:`~shadowprice.ledger.JournalMismatch` when ``out`` cannot be resumed.
    asyncio.CancelledError
        When cancelled. If ``stop`` names a signal, requests in flight are first counted as
        spent in full and their queries recorded as failed, the journal closed and the
        summary written (with ``interrupted``); ``stop.report`` then holds the report.
    """
    config = config or RunConfig()
    config.validate()
    check_plan(items, total_budget)
    grade = get_grader(grader)
    engine = as_engine(engine)
    ident = run_identity(items, plan, engine.model, total_budget, identity)
    ledger, history = open_ledger(
        out, total_budget, ident, release_unsettled=release_unsettled, shared=shared
    )
    recovery = await ledger.recover() if isinstance(ledger, Recoverable) else None
    prior = charges_by_query(recovery.by_tag if recovery else {}, ids_of(items))
    files = RunFiles.of(out) if out is not None else None
    fh = open_for_append(files.results) if files is not None else None
    done = {k: r for k, r in latest_by_id(history).items() if r.get("status") in FINAL_STATUSES}
    pending = [item for item in items if item.id not in done]
    start = time.perf_counter()
    books = Books(ledger, prior)
    driver: Driver | None = None
    cut: int | None = None
    continuation = plan.continuation
    try:
        if pending:
            if continuation == "auto":
                continuation = await engine.continuation()
            policy = plan.policy(pending, (await ledger.state()).available, continuation)
            options = DriveOptions(
                config.concurrency, config.params, continuation, plan.name, plan.unsent
            )
            driver = Driver(
                pending,
                policy,
                engine,
                books,
                grade,
                options,
                out=None if fh is None else (lambda r: append_record(fh, r)),
            )
            cut = await _drive(driver, config.progress, stop)
        written = [] if driver is None else list(driver.records)
        written += reconcile(items, [*history, *written], books.charged, fh)
        state = await ledger.state()
    finally:
        if fh is not None:
            fh.close()
        if ledger is not shared:
            await ledger.aclose()

    final = latest_by_id([*history, *written])
    records = [QueryRecord.of(final[i]) for i in ids_of(items) if i in final]
    own = ledger.charged if isinstance(ledger, Recoverable) and shared is not None else None
    summary = run_summary(records, state, recovery, own)
    if shared is not None:
        summary.update(shared_budget=state.total, shared_spent=state.spent)
    if plan.name:
        summary.update(policy=plan.name)
    summary.update(
        resumed=len(done),
        executed=len(pending),
        wall_s=round(time.perf_counter() - start, 3),
        **plan.report(None if driver is None else driver.policy, continuation, driver),
    )
    return close_report(RunReport(records, summary), files, stop, cut)


async def _drive(driver: Driver, progress: bool, stop: Interruption | None) -> int | None:
    """Run ``driver`` with a progress bar. Cancelled by a signal (``stop``): settle what is in
    flight instead and return the number of requests counted in full; cancelled otherwise:
    leave the books as a crash would."""
    with Progress(progress, driver) as advance:
        driver.on_record.append(advance)
        try:
            await driver.run()
        except asyncio.CancelledError:
            why = stopped_by(stop)
            if why is None:  # not a stop signal: left as a crash would leave it
                raise
            return await driver.stop(why)
    return None


async def execute(
    items: Sequence[PlanItem],
    client: Engine | ChatClient,
    *,
    config: RunConfig | None = None,
    **session: Any,
) -> RunReport:
    """Run a plan of fixed caps (``items``' budgets, 0 = abandoned): :func:`execute_policy`
    with :class:`FixedPlan` (answer forcing and fallbacks as ``config`` says); ``session``
    are :func:`execute_policy`'s keyword arguments (``total_budget``, ``out``, ...)."""
    config = config or RunConfig()
    plan = FixedPlan(config.force_tokens, config.fallback_tokens)
    return await execute_policy(items, client, plan, config=config, **session)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal, after settling its books (see :func:`run_plan`).

    A :class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it.

    Attributes
    ----------
    signal : str
        ``SIGINT`` or ``SIGTERM``.
    report : RunReport or None
        The run's records and summary as written (``summary["interrupted"]``,
        ``summary["cancelled_requests"]``); None if it stopped before the run began.
    """

    def __init__(self, signal: str, report: RunReport | None) -> None:
        super().__init__(signal)
        self.signal = signal
        self.report = report


@dataclass
class Interruption:
    """Why a run is being cancelled, set by whoever cancels it; the run leaves its report.

    Attributes
    ----------
    signal : str or None
        The signal's name (``SIGTERM``), or None for any other cancellation.
    report : RunReport or None
        Set by the run once its books are settled and its summary written.
    """

    signal: str | None = None
    report: RunReport | None = None


def stopped_by(stop: Interruption | None) -> str | None:
    """The signal stopping a run (its cancellation is then a clean stop), else None."""
    return stop.signal if stop is not None else None


def close_report(
    report: RunReport, files: RunFiles | None, stop: Interruption | None, cut: int | None
) -> RunReport:
    """Write the summary; re-raise the cancellation of a stopped run (``cut`` not None)."""
    if cut is not None:
        report.summary.update(interrupted=stopped_by(stop), cancelled_requests=cut)
    if files is not None:
        write_json_atomic(files.summary, report.summary.summary())
    if cut is not None:
        if stop is not None:
            stop.report = report
        raise asyncio.CancelledError
    return report


def reconcile(
    items: Sequence[PlanItem],
    records: Sequence[dict[str, Any]],
    charged: Mapping[str, int],
    out: TextIO | None,
) -> list[dict[str, Any]]:
    """Records that bring the results in line with the books at the end of a run.

    A query whose last record says other than what it was charged (a run was killed with
    its request in flight, or stopped before sending it again) gets a new record with the
    tokens charged: its last record with the new count, or an error record if it had none.
    Returns the records written (appended to ``out``).

    Parameters
    ----------
    items : sequence of PlanItem
    records : sequence of dict
        Every record so far, earlier runs' included (later ones supersede earlier ones).
    charged : mapping
        ``query id -> tokens`` charged to it (:attr:`~.books.Books.charged`).
    out : text file, optional
    """
    last = latest_by_id(list(records))
    written = []
    for item in items:
        tokens = int(charged.get(item.id, 0))
        before = last.get(item.id)
        if tokens == int((before or {}).get("tokens", 0)):
            continue
        if before is None:
            record = {
                "id": item.id,
                "budget": int(item.budget),
                "gold": item.gold,
                **item.meta,
                "status": "error",
                "reason": "a run was stopped with its request in flight: counted as spent in "
                "full; re-run to retry it",
                "answer": None,
                "correct": False if item.gold is not None else None,
            }
        else:
            record = dict(before)
        record["tokens"] = tokens
        if out is not None:
            append_record(out, record)
        written.append(record)
    return written


def ids_of(items: Sequence[PlanItem]) -> list[str]:
    """The plan's query ids, in order."""
    return [item.id for item in items]


def run_summary(
    records: Sequence[Mapping[str, Any]],
    state: LedgerState,
    recovery: Recovery | None = None,
    charged: int | None = None,
) -> RunSummary:
    """:func:`summarize` with the ledger's accounting: settled, counted-unsettled, overrun.

    ``charged`` is this run's own spending when the budget is shared with other workers
    (``state`` then holds everyone's).
    """
    own = state.spent if charged is None else charged
    summary = summarize(records, state.total, spent=own)
    recovery = recovery or Recovery()
    counted = recovery.counted
    summary.update(
        settled_tokens=own - counted,
        unsettled_requests=recovery.unsettled,
        unsettled_counted=counted,
        overrun=state.overrun,
        within_budget=state.spent <= state.total and state.overrun == 0,
    )
    return summary


class Progress:
    """A rich progress bar on stderr: queries done, tokens charged of the budget, and the
    price when the policy has one (a no-op when disabled)."""

    def __init__(self, enabled: bool, driver: Driver) -> None:
        self.enabled = enabled and len(driver.items) > 0
        self.driver = driver

    def _fields(self) -> dict[str, Any]:
        d = self.driver
        fields: dict[str, Any] = {"spent": d.books.total}
        fields["price"] = f"price {d.policy.price:.3g}" if isinstance(d.policy, Priced) else ""
        return fields

    def __enter__(self) -> Callable[[dict[str, Any]], None]:
        if not self.enabled:
            return lambda record: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tokens {task.fields[spent]}/{task.fields[budget]}"),
            TextColumn("{task.fields[price]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._bar.__enter__()
        task = self._bar.add_task(
            self.driver.options.policy or "queries",
            total=len(self.driver.items),
            budget=self.driver.books.ledger.total,
            **self._fields(),
        )

        def advance(record: dict[str, Any]) -> None:
            self._bar.update(task, advance=1, **self._fields())

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(None, None, None)


#: Signals that stop a run cleanly (books settled, summary written) instead of killing it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_plan(
    items: Sequence[PlanItem],
    *,
    endpoint: str,
    model: str,
    total_budget: int,
    plan: RunPlan | None = None,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    grader: Grader | str | None = "math",
    api_key: str | None = None,
    timeout: float = 600.0,
    deadline: float | None = None,
    max_retries: int = 4,
    identity: Mapping[str, Any] | None = None,
    release_unsettled: bool = False,
    state: str | None = None,
    state_name: str = "run",
    preset: Preset | None = None,
    executor: Executor | None = None,
) -> RunReport:
    """Run ``plan`` over ``items`` on ``endpoint`` (:func:`execute_policy`), owning the client
    and, with ``state``, the shared ledger: what ``shadowprice run`` calls.

    ``plan`` defaults to the items' fixed caps (:class:`FixedPlan`, with the forcing and
    fallbacks of ``config``). ``timeout`` bounds one attempt, ``deadline`` one query over all
    its attempts (seconds). With ``state`` (``redis://HOST:PORT/DB``) the budget lives in
    Redis under ``state_name``, shared by every worker that names it (see
    :class:`~shadowprice.ledger.redis.RedisLedger`), and the run's identity names it (without
    any password), so a resume against another shared budget is refused. ``preset`` writes
    each request's allowance in one provider's fields (:class:`~.client.ChatClient`).
    ``executor`` runs the plan elsewhere instead (e.g. on Ray workers): it is called with
    ``items`` and these keyword arguments, ``plan`` resolved and ``identity`` complete.

    Called from the main thread, SIGINT (Ctrl-C) and SIGTERM (``timeout``, systemd,
    Kubernetes) stop the run cleanly: nothing more is sent, the requests in flight are counted
    as spent in full, the journal is closed and the summary written; then
    :class:`RunInterrupted` is raised. The previous handlers are restored afterwards.
    """
    config = config or RunConfig()
    plan = plan or FixedPlan(config.force_tokens, config.fallback_tokens)
    ident = dict(identity or {})
    if state is not None:
        where = urlsplit(state)
        ident["state"] = f"{where.hostname}:{where.port}{where.path}#{state_name}"
    if executor is not None:
        return executor(
            items,
            endpoint=endpoint,
            model=model,
            total_budget=total_budget,
            plan=plan,
            out=out,
            config=config,
            grader=grader,
            api_key=api_key,
            timeout=timeout,
            deadline=deadline,
            max_retries=max_retries,
            identity=ident,
            release_unsettled=release_unsettled,
            state=state,
            state_name=state_name,
            preset=preset,
        )
    shared: Ledger | None = None
    if state is not None:
        from ..ledger.redis import RedisLedger

        shared = RedisLedger.from_url(state, total_budget, namespace=state_name, timeout=5.0)

    async def work(stop: Interruption) -> RunReport:
        try:
            async with ChatClient(
                endpoint,
                model,
                api_key=api_key,
                timeout=timeout,
                deadline=deadline,
                max_retries=max_retries,
                preset=preset,
            ) as client:
                return await execute_policy(
                    items,
                    client,
                    plan,
                    total_budget=total_budget,
                    out=out,
                    config=config,
                    grader=grader,
                    identity=ident,
                    release_unsettled=release_unsettled,
                    shared=shared,
                    stop=stop,
                )
        finally:
            if shared is not None:
                await shared.aclose()

    return run_stoppable(work)


def run_stoppable(work: Callable[[Interruption], Awaitable[T]]) -> T:
    """Run ``work(stop)`` in a new event loop, SIGINT and SIGTERM cancelling it from the loop
    (never an exception raised in whatever task was running); once it has unwound,
    :class:`RunInterrupted` names the signal (with ``stop.report`` if the work left one)."""

    async def go() -> T:
        stop = Interruption()
        try:
            with stop_on_signals(stop):
                return await work(stop)
        except asyncio.CancelledError:
            if stop.signal is None:
                raise
            raise RunInterrupted(stop.signal, stop.report) from None

    return asyncio.run(go())


@contextlib.contextmanager
def stop_on_signals(stop: Interruption) -> Iterator[None]:
    """While inside, each of :data:`STOP_SIGNALS` cancels the current task (once), noting its
    name in ``stop``; outside the main thread, nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def cancel(sig: signal.Signals) -> None:
        if stop.signal is None:  # a second signal does not cut the settling short
            stop.signal = sig.name
            task.cancel()

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, cancel, sig)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:  # None: set outside Python, left as the loop leaves it
                signal.signal(sig, handler)
