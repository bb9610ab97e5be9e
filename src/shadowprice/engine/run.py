"""Execute a plan: send each funded query with its budget as ``max_tokens``, grade, record.

The engine knows nothing of prices. It takes :class:`PlanItem` s (query, messages, budget,
gold), a total budget and an endpoint, and returns graded records. Guarantees:

* every funded query's budget is reserved in the :class:`~.ledger.TokenLedger` before anything
  is sent, so forcing and fallbacks only ever use tokens nobody else was promised;
* the completion tokens of all requests never sum past ``total_budget``;
* abandoned queries (budget 0) are not sent; they are recorded with the reason, or get a cheap
  direct-answer fallback when ``fallback_tokens > 0``;
* results are appended as they land; re-running resumes and never repeats a finished query.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .client import ChatClient, Completion, EngineError
from .forcing import fallback_messages, forcing_messages
from .grading import Grader, get_grader
from .ledger import Reservation, TokenLedger
from .results import (
    FINAL_STATUSES,
    append_record,
    latest_by_id,
    open_for_append,
    read_records,
    summary_path,
)

#: Default prompt: the usual step-by-step-and-box instruction for math models.
DEFAULT_TEMPLATE = (
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
)


@dataclass
class PlanItem:
    """One query to execute. ``budget == 0`` means abandoned (not sent)."""

    id: str
    messages: list[dict[str, str]]
    budget: int
    gold: str | None = None
    reason: str = ""  # why it was abandoned, when it was
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """How to execute a plan.

    concurrency : requests in flight at once.
    force_tokens : allowance of the answer-forcing follow-up after a length stop (0 = off).
    fallback_tokens : allowance of the direct-answer fallback for abandoned queries (0 = off).
    params : extra sampling parameters sent with every request (e.g. ``temperature``).
    progress : show a rich progress bar.
    """

    concurrency: int = 8
    force_tokens: int = 0
    fallback_tokens: int = 0
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0})
    progress: bool = True


@dataclass
class RunReport:
    """All final records of a run (resumed ones included) and its summary."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]


def prompt_messages(
    question: str, template: str = DEFAULT_TEMPLATE, system: str | None = None
) -> list[dict[str, str]]:
    """Chat messages for one question."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": template.format(question=question)})
    return messages


def summarize(
    records: Sequence[dict[str, Any]], total_budget: int, *, spent: int | None = None
) -> dict[str, Any]:
    """Accuracy, tokens used vs budget, abandoned/forced/error counts.

    ``records`` are the final records (one per query); ``spent`` is the ledger's total,
    which also counts tokens of superseded attempts (defaults to the records' sum).
    """
    graded = [r for r in records if r.get("gold") is not None]
    correct = sum(1 for r in graded if r.get("correct"))
    used = sum(int(r.get("tokens", 0)) for r in records) if spent is None else spent
    statuses = [r.get("status") for r in records]
    return {
        "queries": len(records),
        "funded": sum(1 for r in records if int(r.get("budget", 0)) > 0),
        "abandoned": statuses.count("abandoned") + statuses.count("fallback"),
        "fallback": statuses.count("fallback"),
        "errors": statuses.count("error"),
        "graded": len(graded),
        "correct": correct,
        # Abandoned and failed queries count as wrong: accuracy is over the whole batch.
        "accuracy": correct / len(graded) if graded else None,
        "budget": int(total_budget),
        "tokens_used": int(used),
        "within_budget": int(used) <= int(total_budget),
        "allocated": sum(int(r.get("budget", 0)) for r in records),
        "prompt_tokens": sum(int(r.get("prompt_tokens", 0)) for r in records),
        "truncated": sum(1 for r in records if r.get("finish_reason") == "length"),
        "forced": sum(1 for r in records if r.get("forced")),
        "forcing_tokens": sum(int(r.get("forcing_tokens", 0)) for r in records),
    }


class _Executor:
    """State of one run: ledger, client, grader, output file, progress display."""

    def __init__(
        self,
        client: ChatClient,
        ledger: TokenLedger,
        grader: Grader,
        config: RunConfig,
        out: TextIO | None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.grader = grader
        self.config = config
        self.out = out
        self.records: list[dict[str, Any]] = []
        self.on_record: list[Any] = []

    def emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.out is not None:
            append_record(self.out, record)
        for hook in self.on_record:
            hook(record)

    def _base(self, item: PlanItem) -> dict[str, Any]:
        return {"id": item.id, "budget": int(item.budget), "gold": item.gold, **item.meta}

    async def _chat(
        self, res: Reservation, messages: list[dict[str, str]]
    ) -> tuple[Completion | None, str]:
        """One request under reservation ``res``; settles it with the usage (or failure)."""
        try:
            comp = await self.client.chat(messages, res.tokens, **self.config.params)
        except EngineError as exc:
            self.ledger.settle(res, min(exc.charge, res.tokens))
            return None, str(exc)
        self.ledger.settle(res, comp.usage.completion_tokens)
        return comp, ""

    async def funded(self, item: PlanItem, res: Reservation) -> None:
        comp, error = await self._chat(res, item.messages)
        if comp is None:
            self.emit(
                {
                    **self._base(item),
                    "status": "error",
                    "reason": error,
                    "tokens": 0,
                    "answer": None,
                    "correct": False if item.gold is not None else None,
                }
            )
            return
        record = {
            **self._base(item),
            "status": "done",
            "finish_reason": comp.finish_reason,
            "completion_tokens": comp.usage.completion_tokens,
            "reasoning_tokens": comp.usage.reasoning_tokens,
            "prompt_tokens": comp.usage.prompt_tokens,
            "usage_trusted": comp.usage.trusted,
            "attempts": comp.attempts,
            "forced": False,
            "forcing_tokens": 0,
        }
        latency = comp.latency_s
        text = comp.text
        grade = self.grader(text, item.gold)
        if comp.finish_reason == "length" and self.config.force_tokens > 0:
            fres = self.ledger.try_reserve(self.config.force_tokens, tag=f"force:{item.id}")
            if fres is not None:
                forced, _ = await self._chat(fres, forcing_messages(item.messages, comp.text))
                if forced is not None:
                    latency += forced.latency_s
                    record.update(
                        forced=True,
                        forcing_tokens=forced.usage.completion_tokens,
                        forced_text=forced.text,
                        prompt_tokens=record["prompt_tokens"] + forced.usage.prompt_tokens,
                    )
                    forced_grade = self.grader(forced.text, item.gold)
                    if forced_grade.answer is not None:
                        grade = forced_grade
        record.update(
            tokens=record["completion_tokens"] + record["forcing_tokens"],
            answer=grade.answer,
            correct=grade.correct,
            latency_s=round(latency, 4),
            text=text,
        )
        self.emit(record)

    async def abandoned(self, item: PlanItem) -> None:
        base = {**self._base(item), "budget": 0, "reason": item.reason or "not funded"}
        fres = None
        if self.config.fallback_tokens > 0:
            fres = self.ledger.try_reserve(self.config.fallback_tokens, tag=f"fallback:{item.id}")
        if fres is None:
            self.emit(
                {
                    **base,
                    "status": "abandoned",
                    "tokens": 0,
                    "answer": None,
                    "correct": False if item.gold is not None else None,
                }
            )
            return
        comp, error = await self._chat(fres, fallback_messages(item.messages))
        if comp is None:
            self.emit(
                {
                    **base,
                    "status": "abandoned",
                    "reason": f"{base['reason']}; fallback failed: {error}",
                    "tokens": 0,
                    "answer": None,
                    "correct": False if item.gold is not None else None,
                }
            )
            return
        grade = self.grader(comp.text, item.gold)
        self.emit(
            {
                **base,
                "status": "fallback",
                "tokens": comp.usage.completion_tokens,
                "completion_tokens": comp.usage.completion_tokens,
                "prompt_tokens": comp.usage.prompt_tokens,
                "finish_reason": comp.finish_reason,
                "usage_trusted": comp.usage.trusted,
                "attempts": comp.attempts,
                "answer": grade.answer,
                "correct": grade.correct,
                "latency_s": round(comp.latency_s, 4),
                "text": comp.text,
            }
        )


async def execute(
    items: Sequence[PlanItem],
    client: ChatClient,
    *,
    total_budget: int,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    grader: Grader | str | None = "math",
) -> RunReport:
    """Run ``items`` against ``client`` under ``total_budget``; see the module docstring."""
    config = config or RunConfig()
    grade = get_grader(grader)
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("plan has duplicate query ids")
    if any(item.budget < 0 for item in items):
        raise ValueError("plan has a negative budget")

    history = read_records(out) if out is not None else []
    done = {k: r for k, r in latest_by_id(history).items() if r.get("status") in FINAL_STATUSES}
    # Every line spent tokens when it was written (superseded error attempts included).
    already = sum(int(r.get("tokens", 0)) for r in history)
    ledger = TokenLedger(total_budget, already_spent=min(already, total_budget))
    ledger.overrun = max(0, already - total_budget)

    pending = [item for item in items if item.id not in done]
    reservations: dict[str, Reservation] = {}
    late: list[PlanItem] = []
    for item in pending:  # reserve every funded budget before anything is sent
        if item.budget > 0:
            res = ledger.try_reserve(item.budget, tag=item.id)
            if res is None:
                late.append(item)
            else:
                reservations[item.id] = res

    fh = open_for_append(out) if out is not None else None
    ex = _Executor(client, ledger, grade, config, fh)
    sem = asyncio.Semaphore(max(1, config.concurrency))
    start = time.perf_counter()

    async def one(item: PlanItem) -> None:
        async with sem:
            if item.id in reservations:
                await ex.funded(item, reservations[item.id])
            elif item.budget > 0:  # resume under a changed plan: what is left does not cover it
                await ex.abandoned(
                    PlanItem(
                        item.id,
                        item.messages,
                        0,
                        item.gold,
                        "budget exhausted before it could be sent",
                        item.meta,
                    )
                )
            else:
                await ex.abandoned(item)

    try:
        with _progress(config.progress, len(pending), ledger) as advance:
            ex.on_record.append(advance)
            await asyncio.gather(*(one(item) for item in pending))
    finally:
        if fh is not None:
            fh.close()

    final = latest_by_id([*history, *ex.records])
    records = [final[i] for i in ids if i in final]
    summary = summarize(records, total_budget, spent=ledger.spent)
    summary.update(
        resumed=len(done),
        executed=len(pending),
        wall_s=round(time.perf_counter() - start, 3),
        overrun=ledger.overrun,
        late_abandoned=len(late),
    )
    if out is not None:
        summary_path(out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return RunReport(records, summary)


class _progress:
    """A rich progress bar showing queries done and tokens spent (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, ledger: TokenLedger) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.ledger = ledger

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda record: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tokens {task.fields[spent]}/{task.fields[budget]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._bar.__enter__()
        task = self._bar.add_task(
            "queries", total=self.total, spent=self.ledger.spent, budget=self.ledger.total
        )

        def advance(record: dict[str, Any]) -> None:
            self._bar.update(task, advance=1, spent=self.ledger.spent)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(None, None, None)


def run_plan(
    items: Sequence[PlanItem],
    *,
    endpoint: str,
    model: str,
    total_budget: int,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    grader: Grader | str | None = "math",
    api_key: str | None = None,
    timeout: float = 600.0,
    max_retries: int = 4,
) -> RunReport:
    """Synchronous wrapper around :func:`execute` that owns its client."""

    async def main() -> RunReport:
        async with ChatClient(
            endpoint, model, api_key=api_key, timeout=timeout, max_retries=max_retries
        ) as client:
            return await execute(
                items, client, total_budget=total_budget, out=out, config=config, grader=grader
            )

    return asyncio.run(main())
