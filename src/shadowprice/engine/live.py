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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from ..ledger import Ledger, Reservation
from ..live.planner import RETRY, RUNNING
from .client import ChatClient, Completion, EngineError
from .grading import Grader, get_grader
from .results import (
    FINAL_STATUSES,
    RunFiles,
    append_record,
    latest_by_id,
    open_for_append,
    write_json_atomic,
)
from .run import (
    PlanItem,
    RunConfig,
    RunReport,
    ids_of,
    open_ledger,
    plan_identity,
    run_connected,
    run_summary,
)

__all__ = ["Continuation", "LiveRunOptions", "detect_continuation", "execute_live", "run_live"]

Continuation = Literal["auto", "prefill", "vllm", "off"]
CONTINUATIONS: tuple[str, ...] = ("auto", "prefill", "vllm", "off")

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
    """State of one live run: planner, ledger, in-flight requests, partial outputs."""

    def __init__(
        self,
        items: Sequence[PlanItem],
        planner: Any,
        client: ChatClient,
        ledger: Ledger,
        grader: Grader,
        config: RunConfig,
        continuation: Continuation,
        out: Any,
    ) -> None:
        self.items, self.planner, self.client, self.ledger = items, planner, client, ledger
        self.grader, self.config, self.continuation, self.out = grader, config, continuation, out
        n = len(items)
        self.text = [""] * n  # what each query has generated so far (its partial output)
        self.tokens = np.zeros(n, dtype=np.int64)  # tokens charged for each query
        self.errors: list[str] = [""] * n
        self.last: list[Completion | None] = [None] * n
        self.records: list[dict[str, Any]] = []
        self.emitted = np.zeros(n, dtype=bool)
        self.on_record: list[Any] = []

    async def available(self) -> int:
        return (await self.ledger.state()).available

    def messages(self, q: int) -> list[dict[str, str]]:
        base = list(self.items[q].messages)
        if self.text[q]:
            base.append({"role": "assistant", "content": self.text[q]})
        return base

    async def request(self, q: int, res: Reservation) -> tuple[bool, int, bool]:
        """Send one request of query ``q`` under ``res``; settle it. Returns (ok, tokens
        charged, stopped on its cap)."""
        params = dict(self.config.params)
        if self.text[q] and self.continuation == "vllm":
            params.update(VLLM_CONTINUE)
        try:
            comp = await self.client.chat(self.messages(q), res.tokens, **params)
        except EngineError as exc:
            charged = min(exc.charge, res.tokens)
            await self.ledger.settle(res, charged)
            self.errors[q] = str(exc)
            return False, charged, False
        used = comp.usage.completion_tokens
        await self.ledger.settle(res, used)
        new = comp.text
        if self.text[q] and new.startswith(self.text[q]):
            new = new[len(self.text[q]) :]  # llama.cpp returns the prefix with the continuation
        self.text[q] += new
        self.last[q] = comp
        return True, used, comp.finish_reason == "length"

    def emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.out is not None:
            append_record(self.out, record)
        for hook in self.on_record:
            hook(record)

    def finish(self, q: int, status: str, reason: str = "") -> None:
        """Grade and record query ``q`` (once)."""
        if self.emitted[q]:
            return
        self.emitted[q] = True
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
            "tokens": int(self.tokens[q]),
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
                completion_tokens=int(self.tokens[q]),
                prompt_tokens=comp.usage.prompt_tokens,
                usage_trusted=comp.usage.trusted,
            )
        self.emit(record)


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
    """
    from ..live import ClearLive, LiveConfig

    config = config or RunConfig()
    config.validate()
    options = options or LiveRunOptions()
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
    grade = get_grader(grader)
    continuation = options.continuation
    if continuation == "auto":
        continuation = await detect_continuation(client.base_url)
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
    recovery = getattr(ledger, "recovery", None)
    done = {k: r for k, r in latest_by_id(history).items() if r.get("status") in FINAL_STATUSES}
    pending = [i for i, item in enumerate(items) if item.id not in done]
    files = RunFiles.of(out) if out is not None else None
    fh = open_for_append(files.results) if files is not None else None
    start = time.perf_counter()
    try:
        left = await ledger.state()
        planner = ClearLive(
            curves[np.asarray(pending, dtype=np.int64)],
            left.available,
            LiveConfig(
                levels=options.levels,
                max_tokens=options.max_tokens,
                extend=continuation != "off",
                calibrate=options.calibrate,
                step=options.step,
            ),
        )
        run = _LiveRun(
            [items[i] for i in pending], planner, client, ledger, grade, config, continuation, fh
        )
        with _progress(config.progress, len(pending), ledger, planner) as advance:
            run.on_record.append(advance)
            await _loop(run)
        state = await ledger.state()
    finally:
        if fh is not None:
            fh.close()
        await ledger.aclose()
    final = latest_by_id([*history, *run.records])
    records = [final[i] for i in ids_of(items) if i in final]
    summary = run_summary(records, state, recovery)
    summary.update(
        policy="clear-live",
        resumed=len(done),
        executed=len(pending),
        wall_s=round(time.perf_counter() - start, 3),
        continuation=continuation,
        live=planner.summary(),
    )
    if files is not None:
        write_json_atomic(files.summary, summary)
    return RunReport(records, summary)


async def _loop(run: _LiveRun) -> None:
    """Keep up to ``concurrency`` requests in flight until the planner has nothing to send."""
    p = run.planner
    inflight: dict[asyncio.Task[tuple[bool, int, bool]], int] = {}

    async def launch(act: Any) -> bool:
        res = await run.ledger.reserve(int(act.tokens), tag=run.items[act.query].id)
        if res is None:  # someone else took the tokens: the planner may retry later
            p.on_error(act.query, 0)
            return False
        inflight[asyncio.ensure_future(run.request(act.query, res))] = act.query
        return True

    while True:
        while len(inflight) < run.config.concurrency:
            act = p.next_start(await run.available())
            if act is None or not await launch(act):
                break
        if not inflight:
            break
        finished, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            q = inflight.pop(task)
            nxt = await _ended(run, q, *task.result())
            # A continuation whose tokens were taken meanwhile waits as a retry.
            if nxt is not None and not await launch(nxt) and p.state[q] not in (RUNNING, RETRY):
                run.finish(q, "done")
    for q in range(len(run.items)):
        if not run.emitted[q]:
            run.finish(q, "abandoned", "not funded at the live price")


async def _ended(run: _LiveRun, q: int, ok: bool, charged: int, capped: bool) -> Any:
    """Tell the planner a request of ``q`` ended; record the query if it is over. Returns the
    continuation to send, if any."""
    p = run.planner
    run.tokens[q] += charged
    if not ok:
        p.on_error(q, charged)
        if p.state[q] not in (RUNNING, RETRY):  # the planner gave up on it
            run.finish(q, "error", run.errors[q])
        return None
    nxt = p.on_finish(q, charged, capped, await run.available())
    if nxt is None:
        run.finish(q, "done")
    return nxt


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

    async def main(client: ChatClient, shared: Ledger | None, ident: dict[str, Any]) -> RunReport:
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
