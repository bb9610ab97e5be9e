"""Collect a trace set: K samples per query at a fixed ``max_tokens``, graded.

Writes the evaluation schema directly (one JSON line per query)::

    {"id", "question", "answer", "samples": [{"tokens", "correct", "finish_reason", ...}],
     "meta": {...}}

so ``fit`` and ``evaluate`` read it with :func:`shadowprice.traces.read_traces`. Samples are
separate n=1 requests: llama.cpp counts only the first choice's tokens when n > 1.
Re-running resumes: queries already in the file are not collected again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import ChatClient, EngineError
from .grading import Grader, get_grader
from .results import append_record, open_for_append, read_records


@dataclass
class CollectQuery:
    """One query to sample: id, chat messages, the question text and gold answer."""

    id: str
    messages: list[dict[str, str]]
    question: str | None = None
    answer: str | None = None


@dataclass
class CollectConfig:
    """Sampling set-up: K samples per query, each with allowance ``max_tokens``."""

    samples: int = 4
    max_tokens: int = 512
    concurrency: int = 8
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.7})
    progress: bool = True


async def collect(
    queries: Sequence[CollectQuery],
    client: ChatClient,
    *,
    out: str | Path,
    config: CollectConfig | None = None,
    grader: Grader | str | None = "math",
) -> dict[str, Any]:
    """Sample every query ``config.samples`` times and append trace records to ``out``."""
    config = config or CollectConfig()
    if config.samples < 1 or config.max_tokens < 1:
        raise ValueError("samples and max_tokens must be >= 1")
    grade = get_grader(grader)
    have = {str(r["id"]) for r in read_records(out)}
    pending = [q for q in queries if q.id not in have]
    sem = asyncio.Semaphore(max(1, config.concurrency))
    meta = {
        "model": client.model,
        "max_tokens": config.max_tokens,
        "samples": config.samples,
        **{k: v for k, v in config.params.items() if isinstance(v, int | float | str)},
    }
    tokens = 0
    failed = 0
    start = time.perf_counter()

    async def sample(q: CollectQuery) -> dict[str, Any] | None:
        async with sem:
            try:
                comp = await client.chat(q.messages, config.max_tokens, **config.params)
            except EngineError as exc:  # one lost sample must not sink the set
                return {"error": str(exc)}
        g = grade(comp.text, q.answer)
        return {
            "tokens": comp.usage.completion_tokens,
            "correct": bool(g.correct),
            "finish_reason": comp.finish_reason,
            "extracted": g.answer,
            "reasoning_tokens": comp.usage.reasoning_tokens,
            "prompt_tokens": comp.usage.prompt_tokens,
        }

    fh = open_for_append(out)
    try:
        with _bar(config.progress, len(pending) * config.samples) as tick:

            async def one(q: CollectQuery) -> None:
                nonlocal tokens, failed
                results = await asyncio.gather(
                    *(_ticked(sample(q), tick) for _ in range(config.samples))
                )
                ok = [s for s in results if s is not None and "error" not in s]
                failed += len(results) - len(ok)
                if not ok:
                    return  # nothing to record; a re-run will try again
                tokens += sum(s["tokens"] for s in ok)
                record: dict[str, Any] = {"id": q.id}
                if q.question is not None:
                    record["question"] = q.question
                if q.answer is not None:
                    record["answer"] = str(q.answer)
                record["samples"] = ok
                record["meta"] = meta
                append_record(fh, record)

            await asyncio.gather(*(one(q) for q in pending))
    finally:
        fh.close()
    return {
        "queries": len(queries),
        "collected": len(pending),
        "skipped": len(queries) - len(pending),
        "failed_samples": failed,
        "completion_tokens": tokens,
        "wall_s": round(time.perf_counter() - start, 3),
    }


async def _ticked(coro: Any, tick: Any) -> Any:
    result = await coro
    tick()
    return result


class _bar:
    """Rich progress over samples (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._p = Progress()
        self._p.__enter__()
        task = self._p.add_task("samples", total=self.total)
        return lambda: self._p.update(task, advance=1)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.__exit__(None, None, None)


def collect_traces(
    queries: Sequence[CollectQuery],
    *,
    endpoint: str,
    model: str,
    out: str | Path,
    config: CollectConfig | None = None,
    grader: Grader | str | None = "math",
    api_key: str | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Synchronous wrapper around :func:`collect` that owns its client."""

    async def main() -> dict[str, Any]:
        async with ChatClient(endpoint, model, api_key=api_key, timeout=timeout) as client:
            return await collect(queries, client, out=out, config=config, grader=grader)

    return asyncio.run(main())
