"""``run --policy clear-live``: drive the live planner against a real endpoint.

The planner (:class:`~shadowprice.live.ClearLive`) decides; this module does the I/O, the
same protocol the simulator (:mod:`shadowprice.evaluate.simulate`) follows:

- whenever fewer than ``concurrency`` requests are in flight, ask the planner what to start
  given the tokens the ledger has available, **reserve** the request's ``max_tokens`` in the
  ledger (with an output file: the write-ahead journal, fsynced before the request leaves)
  and send it;
- when a request ends, **settle** its reservation with the completion tokens the server
  reports (what it did not use returns to the ledger), and tell the planner, which re-clears
  the price; a request that stopped on its cap may be **continued**: the same conversation
  with the partial output as a final assistant message, for more tokens (never a restart);
- failed requests are settled with what they may have been billed and retried by the
  planner; whatever a request generated is charged, so the budget holds even if a server
  keeps generating for a client that gave up (llama.cpp stops a slot within a fraction of a
  second of the disconnect; budget correctness never relies on that).

Continuation needs an engine that continues a final assistant message: llama.cpp's server
does it by default (its response repeats the prefix, which is stripped), vLLM and SGLang with
``continue_final_message``. ``continuation="auto"`` asks the endpoint what it is (llama.cpp's
``/props``, vLLM's ``/version``) and turns extension off for anything else (hosted APIs answer
a trailing assistant message with a new message instead).

Resuming: the journal gives back everything spent (requests a crash left in flight count as
spent), finished queries are not sent again, and the planner runs on what is left.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from ..ledger import JournalLedger, Ledger, Reservation
from ..live.planner import RETRY, RUNNING
from .books import Books, UnreadableStreak, charges_by_query
from .client import ChatClient, Completion, EngineError
from .grading import Grader, get_grader
from .results import (
    FINAL_STATUSES,
    RunFiles,
    append_record,
    latest_by_id,
    open_for_append,
)
from .run import (
    Interruption,
    PlanItem,
    RunConfig,
    RunReport,
    close_report,
    ids_of,
    interrupted_reason,
    open_ledger,
    plan_identity,
    reconcile,
    run_connected,
    run_summary,
    stopped_by,
)

__all__ = ["Continuation", "LiveRunOptions", "detect_continuation", "execute_live", "run_live"]

Continuation = Literal["auto", "prefill", "vllm", "off"]
CONTINUATIONS: tuple[str, ...] = ("auto", "prefill", "vllm", "off")

#: Why a query the live planner never started was abandoned.
UNFUNDED = "not funded at the live price"
#: Fields that make vLLM / SGLang continue a final assistant message instead of answering it.
VLLM_CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}


@dataclass
class LiveRunOptions:
    """Settings of a live run beyond :class:`~shadowprice.engine.run.RunConfig`.

    Attributes
    ----------
    continuation : {'auto', 'prefill', 'vllm', 'off'}
        How a request that stopped on its cap is continued (see the module docstring);
        ``off`` disables extension.
    max_tokens : int, optional
        Most tokens one query may generate over all its requests (the model's context
        window less the prompt, a server limit).
    calibrate : bool
        Let the planner re-fit the length scale and spread from what it sees.
    levels : int
        Budgets on the planner's grid.
    step : float, optional
        Go toward each cap in steps (see :class:`~shadowprice.live.LiveConfig`): smaller
        reservations, more requests at once, at the risk of queries left half done when
        tokens run short. Default: the full cap at once.
    """

    continuation: Continuation = "auto"
    max_tokens: int | None = None
    calibrate: bool = True
    levels: int = 96
    step: float | None = None

    def __post_init__(self) -> None:
        if self.continuation not in ("auto", "prefill", "vllm", "off"):
            raise ValueError(
                f"continuation must be one of auto, prefill, vllm, off, got {self.continuation!r}"
            )
        if self.max_tokens is not None and not (
            isinstance(self.max_tokens, int) and self.max_tokens >= 1
        ):
            raise ValueError(f"max_tokens must be a whole number >= 1, got {self.max_tokens!r}")


async def detect_continuation(base_url: str, timeout: float = 5.0) -> Continuation:
    """Which continuation the server at ``base_url`` (an OpenAI ``/v1`` root) supports:
    ``prefill`` for llama.cpp's server (it answers ``GET /props``), ``vllm`` for vLLM (it
    answers ``GET /version`` with a version), else ``off``. Costs no tokens."""
    root = base_url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=timeout) as http:
        try:
            r = await http.get(f"{root}/props")
            if r.status_code == 200 and "default_generation_settings" in r.text:
                return "prefill"
        except httpx.HTTPError:
            pass
        try:
            r = await http.get(f"{root}/version")
            if r.status_code == 200 and "version" in r.json():
                return "vllm"
        except (httpx.HTTPError, ValueError):
            pass
    return "off"


class _LiveRun:
    """State of one live run: planner, books, in-flight requests, partial outputs."""

    def __init__(
        self,
        items: Sequence[PlanItem],
        planner: Any,
        client: ChatClient,
        books: Books,
        grader: Grader,
        config: RunConfig,
        continuation: Continuation,
        out: Any,
    ) -> None:
        self.items, self.planner, self.client, self.books = items, planner, client, books
        self.grader, self.config, self.continuation, self.out = grader, config, continuation, out
        n = len(items)
        self.prior = Counter(books.charged)  # what earlier runs charged each query
        self.streak = UnreadableStreak()
        self.text = [""] * n  # what each query has generated so far (its partial output)
        self.errors: list[str] = [""] * n
        self.failed_tokens = 0  # charged to requests that failed, in this run
        self.last: list[Completion | None] = [None] * n
        self.records: list[dict[str, Any]] = []
        #: (status, tokens) of each query's last record; None until it has one.
        self.emitted: list[tuple[str, int] | None] = [None] * n
        self.on_record: list[Any] = []
        self.inflight: dict[asyncio.Task[tuple[bool, int, bool]], int] = {}

    async def available(self) -> int:
        return (await self.books.ledger.state()).available

    def tokens(self, q: int) -> int:
        """Everything charged to query ``q`` (earlier runs and failed attempts included)."""
        return int(self.books.charged[self.items[q].id])

    def messages(self, q: int) -> list[dict[str, str]]:
        base = list(self.items[q].messages)
        if self.text[q]:
            base.append({"role": "assistant", "content": self.text[q]})
        return base

    async def launch(self, act: Any) -> bool:
        """Reserve and send the planner's request; False if the ledger could not hold it."""
        q = int(act.query)
        res = await self.books.reserve(self.items[q].id, int(act.tokens))
        if res is None:  # someone else took the tokens: the planner may retry later
            self.planner.on_error(q, 0)
            return False
        self.inflight[asyncio.ensure_future(self.request(q, res))] = q
        return True

    async def request(self, q: int, res: Reservation) -> tuple[bool, int, bool]:
        """Send one request of query ``q`` under ``res``; settle it. Returns (ok, tokens
        charged, stopped on its cap)."""
        params = dict(self.config.params)
        if self.text[q] and self.continuation == "vllm":
            params.update(VLLM_CONTINUE)
        try:
            comp = await self.client.chat(self.messages(q), res.tokens, **params)
        except EngineError as exc:
            charged = await self.books.settle(res, min(exc.charge, res.tokens))
            self.streak.failed(res.tag, str(exc), charged)
            self.errors[q] = str(exc)
            self.failed_tokens += charged
            return False, charged, False
        self.streak.answered()
        used = await self.books.settle(res, comp.usage.completion_tokens)
        new = comp.text
        if self.text[q] and new.startswith(self.text[q]):
            new = new[len(self.text[q]) :]  # llama.cpp returns the prefix with the continuation
        self.text[q] += new
        self.last[q] = comp
        return True, used, comp.finish_reason == "length"

    def finish(self, q: int, status: str, reason: str = "") -> None:
        """Grade and record query ``q``; again only if its status or tokens changed since
        (a query recorded when it stopped on its cap may be continued later)."""
        tokens = self.tokens(q)
        if self.emitted[q] == (status, tokens):
            return
        first = self.emitted[q] is None
        self.emitted[q] = (status, tokens)
        item = self.items[q]
        p = self.planner
        comp = self.last[q]
        grade = self.grader(self.text[q], item.gold) if self.text[q] else None
        record: dict[str, Any] = {
            "id": item.id,
            "budget": int(p.cap[q]),
            "gold": item.gold,
            **item.meta,
            "status": status,
            "policy": "clear-live",
            "tokens": tokens,
            "requests": int(p.requests[q]),
            "extensions": int(max(p.requests[q] - 1 - p.retries[q], 0)),
            "finish_reason": comp.finish_reason if comp is not None else None,
            "answer": grade.answer if grade is not None else None,
            "correct": (grade.correct if grade is not None else False)
            if item.gold is not None
            else None,
            "text": self.text[q],
        }
        if reason:
            record["reason"] = reason
        if comp is not None:
            record.update(
                completion_tokens=tokens - int(self.prior[item.id]),
                prompt_tokens=comp.usage.prompt_tokens,
                usage_trusted=comp.usage.trusted,
            )
        self.records.append(record)
        if self.out is not None:
            append_record(self.out, record)
        if first:
            for hook in self.on_record:
                hook(record)


async def execute_live(
    items: Sequence[PlanItem],
    curves: Any,
    client: ChatClient,
    *,
    total_budget: int,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    options: LiveRunOptions | None = None,
    grader: Grader | str | None = "math",
    identity: Mapping[str, Any] | None = None,
    release_unsettled: bool = False,
    shared: Ledger | None = None,
    stop: Interruption | None = None,
) -> RunReport:
    """Run ``items`` with the live planner on ``curves`` (one per item) under ``total_budget``.

    Parameters
    ----------
    items : sequence of PlanItem
        The queries (their ``budget`` is ignored: the planner sets caps as it goes).
    curves : UtilityCurve
        One curve per item, ideally with a length model (spend); see
        :class:`~shadowprice.live.ClearLive`.
    client : ChatClient
    total_budget : int
        Completion tokens the run may generate in all.
    out : path, optional
        Results JSONL; its journal beside it makes the run resumable.
    config : RunConfig, optional
        Concurrency, sampling parameters, progress bar (answer forcing and fallbacks are not
        used: capped requests are continued instead).
    options : LiveRunOptions, optional
    grader : Grader or str, optional
    identity : mapping, optional
        What else must match for a resume.
    release_unsettled : bool
        On resume, count requests a crash left in flight as never billed.
    shared : Ledger, optional
        A budget shared with other workers (e.g. Redis): every reservation goes through it
        too. The planner plans on what was available when it started; the shared ledger
        still refuses anything the others have taken meanwhile.
    stop : Interruption, optional
        Names the signal when the run is cancelled to stop it (see
        :func:`~shadowprice.engine.run.run_connected`).

    Raises
    ------
    asyncio.CancelledError
        When cancelled; if ``stop`` names a signal, after the requests in flight are counted
        as spent in full, their queries recorded as failed, the journal closed and the
        summary written (see :func:`~shadowprice.engine.run.execute`).
    """
    config = config or RunConfig()
    options = options or LiveRunOptions()
    _check_live(items, curves, config, options)
    grade = get_grader(grader)
    ident = {
        **dict(identity or {}),
        "policy": "clear-live",
        "model": client.model,
        "budget": int(total_budget),
        "queries": plan_identity(items)["queries"],
    }
    ledger, history = open_ledger(
        out, total_budget, ident, release_unsettled=release_unsettled, shared=shared
    )
    recovery = await ledger.recover() if isinstance(ledger, JournalLedger) else None
    prior = charges_by_query(getattr(recovery, "by_tag", {}), ids_of(items))
    files = RunFiles.of(out) if out is not None else None
    fh = open_for_append(files.results) if files is not None else None
    done = {k: r for k, r in latest_by_id(history).items() if r.get("status") in FINAL_STATUSES}
    pending = [i for i, item in enumerate(items) if item.id not in done]
    start = time.perf_counter()
    books = Books(ledger, prior)
    session: dict[str, Any] = _previous_session(files) if not pending else {}
    cut: int | None = None
    run: _LiveRun | None = None
    try:
        if pending:
            continuation = options.continuation
            if continuation == "auto":
                continuation = await detect_continuation(client.base_url)
            run = _LiveRun(
                [items[i] for i in pending],
                _planner(curves, pending, (await ledger.state()).available, options, continuation),
                client,
                books,
                grade,
                config,
                continuation,
                fh,
            )
            cut = await _drive(run, ledger, stop)
            session = {"continuation": continuation, "live": run.planner.summary()}
        written = [] if run is None else run.records
        written += reconcile(items, [*history, *written], books.charged, fh)
        state = await ledger.state()
    finally:
        if fh is not None:
            fh.close()
        await ledger.aclose()
    final = latest_by_id([*history, *written])
    records = [final[i] for i in ids_of(items) if i in final]
    summary = run_summary(records, state, recovery, getattr(ledger, "charged", None))
    if shared is not None:
        summary.update(shared_budget=state.total, shared_spent=state.spent)
    summary.update(
        policy="clear-live",
        resumed=len(done),
        executed=len(pending),
        wall_s=round(time.perf_counter() - start, 3),
        **session,
    )
    return close_report(RunReport(records, summary), files, stop, cut)


def _check_live(
    items: Sequence[PlanItem], curves: Any, config: RunConfig, options: LiveRunOptions
) -> None:
    config.validate()
    if options.continuation not in CONTINUATIONS:
        raise ValueError(
            f"continuation must be one of {', '.join(CONTINUATIONS)}, got {options.continuation!r}"
        )
    if config.force_tokens or config.fallback_tokens:
        raise ValueError(
            "clear-live continues capped requests instead of forcing an answer, and funds "
            "queries as it goes: leave answer forcing and fallbacks off"
        )
    if curves.n != len(items):
        raise ValueError(f"{curves.n} curves for {len(items)} queries: give one per query")


def _planner(
    curves: Any, pending: list[int], budget: int, options: LiveRunOptions, continuation: str
) -> Any:
    """The live planner over the queries still to run, with ``budget`` tokens."""
    from ..live import ClearLive, LiveConfig

    return ClearLive(
        curves[np.asarray(pending, dtype=np.int64)],
        budget,
        LiveConfig(
            levels=options.levels,
            max_tokens=options.max_tokens,
            extend=continuation != "off",
            calibrate=options.calibrate,
            step=options.step,
        ),
    )


def _previous_session(files: RunFiles | None) -> dict[str, Any]:
    """The planner's part of the last summary (a finished run re-run has no planner)."""
    if files is None or not files.summary.exists():
        return {}
    try:
        previous = json.loads(files.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(previous, dict):
        return {}
    return {k: previous[k] for k in ("continuation", "live") if k in previous}


async def _drive(run: _LiveRun, ledger: Ledger, stop: Interruption | None) -> int | None:
    """Run the loop to its end and record every query. Cancelled by a signal (``stop``):
    settle what is in flight instead and return the number of requests counted in full;
    cancelled otherwise: cancel the requests in flight and leave the books as a crash
    would."""
    with _progress(run.config.progress, len(run.items), ledger, run.planner) as advance:
        run.on_record.append(advance)
        try:
            await _loop(run)
        except asyncio.CancelledError:
            why = stopped_by(stop)
            if why is None:
                for task in run.inflight:
                    task.cancel()
                raise
            return await _stop(run, why)
        _close(run)
    return None


async def _loop(run: _LiveRun) -> None:
    """Keep up to ``concurrency`` requests in flight until the planner has nothing to send
    (or the endpoint's answers cannot be read: then the ones in flight end, nothing starts)."""
    p = run.planner
    inflight = run.inflight
    while True:
        while len(inflight) < run.config.concurrency and not run.streak.tripped:
            act = p.next_start(await run.available())
            if act is None or not await run.launch(act):
                break
        if not inflight:
            break
        finished, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            q = inflight.pop(task)
            nxt = await _ended(run, q, *task.result())
            if nxt is None:
                continue
            # A continuation whose tokens were taken meanwhile waits as a retry.
            if run.streak.tripped or (
                not await run.launch(nxt) and p.state[q] not in (RUNNING, RETRY)
            ):
                run.finish(q, "done")


async def _ended(run: _LiveRun, q: int, ok: bool, charged: int, capped: bool) -> Any:
    """Tell the planner a request of ``q`` ended; record the query if it is over. Returns the
    continuation to send, if any."""
    p = run.planner
    if not ok:
        p.on_error(q, charged)
        if p.state[q] not in (RUNNING, RETRY):  # the planner gave up on it
            run.finish(q, "error", run.errors[q])
        return None
    nxt = p.on_finish(q, charged, capped, await run.available())
    if nxt is None:
        run.finish(q, "done")
    return nxt


def _close(run: _LiveRun) -> None:
    """Record every query the loop left without a record: an answer is done, a failure is
    an error (retried on resume), a query never started is abandoned (or an error, if the
    run stopped sending to an endpoint that answers garbage)."""
    for q in range(len(run.items)):
        if run.emitted[q] is not None:
            continue
        if run.last[q] is not None:
            run.finish(q, "done")
        elif run.errors[q] or run.tokens(q):
            run.finish(
                q,
                "error",
                f"{run.errors[q] or 'earlier attempts failed'}; not retried: {_why_not(run)}",
            )
        elif run.streak.tripped:
            run.finish(q, "error", run.streak.reason())
        else:
            run.finish(q, "abandoned", _unfunded(run))


def _unfunded(run: _LiveRun) -> str:
    """Why a query the planner never started was abandoned."""
    if not run.failed_tokens:
        return UNFUNDED
    return (
        f"{UNFUNDED} ({run.failed_tokens} tokens of the budget were charged to requests that "
        f"failed: see the errors)"
    )


def _why_not(run: _LiveRun) -> str:
    if run.streak.tripped:
        return run.streak.reason().removeprefix("not sent: ")
    return "the budget left could not hold its request"


async def _stop(run: _LiveRun, why: str) -> int:
    """The run was cancelled: cancel the requests in flight, count each as spent in full,
    record their queries as failed and every other started query as it stands."""
    tasks = list(run.inflight)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    run.inflight.clear()
    requests = len(run.books.open)
    cut = await run.books.settle_open()
    for q, item in enumerate(run.items):
        if item.id in cut:
            run.finish(q, "error", interrupted_reason(why, cut[item.id]))
        elif run.emitted[q] is None and run.last[q] is not None:
            run.finish(q, "done")
        elif run.emitted[q] is None and (run.errors[q] or run.tokens(q)):
            failed = run.errors[q] or "earlier attempts failed"
            reason = f"{failed}; interrupted ({why}) before it was retried"
            run.finish(q, "error", reason)
    return requests


class _progress:
    """A rich progress bar: queries done, tokens spent of the budget, the live price."""

    def __init__(self, enabled: bool, total: int, ledger: Ledger, planner: Any) -> None:
        self.enabled = enabled and total > 0
        self.total, self.ledger, self.planner = total, ledger, planner

    def _spent(self) -> int:
        state_now = getattr(self.ledger, "state_now", None)
        return int(state_now().spent) if state_now is not None else int(self.planner.spent)

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda record: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(
            TextColumn("[bold]clear-live"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("spent {task.fields[spent]}/{task.fields[budget]}"),
            TextColumn("price {task.fields[price]:.3g}"),
            console=Console(stderr=True),
        )
        self._bar.__enter__()
        task = self._bar.add_task(
            "queries",
            total=self.total,
            spent=self._spent(),
            budget=self.ledger.total,
            price=self.planner.price,
        )

        def advance(record: dict[str, Any]) -> None:
            self._bar.update(task, advance=1, spent=self._spent(), price=self.planner.price)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(None, None, None)


def run_live(
    items: Sequence[PlanItem],
    curves: Any,
    *,
    endpoint: str,
    model: str,
    total_budget: int,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    options: LiveRunOptions | None = None,
    grader: Grader | str | None = "math",
    api_key: str | None = None,
    timeout: float = 600.0,
    deadline: float | None = None,
    max_retries: int = 4,
    identity: Mapping[str, Any] | None = None,
    release_unsettled: bool = False,
    state: str | None = None,
    state_name: str = "run",
) -> RunReport:
    """Synchronous wrapper around :func:`execute_live` that owns its client (and, with
    ``state`` = ``redis://HOST:PORT/DB``, the budget shared in Redis under ``state_name``)."""

    async def main(
        client: ChatClient, shared: Ledger | None, ident: dict[str, Any], stop: Interruption
    ) -> RunReport:
        return await execute_live(
            items,
            curves,
            client,
            total_budget=total_budget,
            out=out,
            config=config,
            options=options,
            grader=grader,
            identity=ident,
            release_unsettled=release_unsettled,
            shared=shared,
            stop=stop,
        )

    return run_connected(
        main,
        endpoint=endpoint,
        model=model,
        total_budget=total_budget,
        api_key=api_key,
        timeout=timeout,
        deadline=deadline,
        max_retries=max_retries,
        identity=identity,
        state=state,
        state_name=state_name,
    )
