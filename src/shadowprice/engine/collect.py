"""Collect a trace set: K samples per query at a fixed ``max_tokens``, graded.

Writes the evaluation schema directly (one JSON line per query, only once it has all its K
samples)::

    {"id", "question", "answer", "samples": [{"tokens", "correct", "finish_reason", ...}],
     "meta": {...}}

so ``fit`` and ``evaluate`` read it with :func:`shadowprice.traces.read_traces`. Samples are
separate n=1 requests: llama.cpp counts only the first choice's tokens when n > 1.

Every sample is also appended, as it lands, to a sidecar (``traces.samples.jsonl`` beside
``traces.jsonl``) whose first line records the sampling set-up. Re-running the same command
resumes: complete queries are skipped, and a query a flaky server left with fewer than K
samples keeps the ones it has and is sampled only for the rest. A trace file without its
sidecar was not written by this command and is never appended to; a sidecar with another
set-up (model, allowance, samples, sampling parameters) is refused rather than mixed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .client import ChatClient, EngineError
from .grading import Grader, get_grader
from .results import append_record, latest_by_id, open_for_append, read_records
from .run import Interruption, check_settings, run_stoppable


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

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        names = ("samples", "max_tokens", "concurrency")
        check_settings({n: (getattr(self, n), 1) for n in names}, self.params)


def sidecar_path(out: str | Path) -> Path:
    """Where the samples of ``traces.jsonl`` are journalled: ``traces.samples.jsonl``."""
    p = Path(out)
    return p.with_name(p.name.removesuffix(".jsonl") + ".samples.jsonl")


class CollectStateError(ValueError):
    """The output cannot be resumed by this command (not ours, or another set-up)."""


def _open_state(
    out: Path, setup: dict[str, Any]
) -> tuple[set[str], dict[str, list[dict[str, Any]]], TextIO]:
    """(complete ids, partial samples per id, the sidecar opened for appending)."""
    side = sidecar_path(out)
    if out.exists() and out.stat().st_size and not side.exists():
        raise CollectStateError(
            f"{out} exists but has no {side.name}: it was not written by this version of "
            f"shadowprice collect and is left untouched; choose another --output"
        )
    complete: set[str] = set()
    partial: dict[str, list[dict[str, Any]]] = {}
    if side.exists():
        events = read_records_any(side)
        header = events[0] if events else {}
        if header.get("event") != "collect":
            raise CollectStateError(f"{side} is not a shadowprice collect sidecar")
        old = header.get("setup", {})
        diff = {k for k in set(old) | set(setup) if old.get(k) != setup.get(k)}
        if diff:
            shown = "; ".join(
                f"{k}: {old.get(k)!r} then, {setup.get(k)!r} now" for k in sorted(diff)
            )
            raise CollectStateError(
                f"{out} was collected with another set-up ({shown}); mixing them would make "
                f"one trace set of two experiments: choose another --output"
            )
        for ev in events[1:]:
            partial.setdefault(str(ev["id"]), []).append(ev["sample"])
        complete = set(latest_by_id(read_records(out)))
        fh = open_for_append(side)
    else:
        fh = open_for_append(side)
        append_record(fh, {"event": "collect", "setup": setup})
    return complete, partial, fh


def read_records_any(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a sidecar (a torn last line is ignored)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                out.append(json.loads(line))
    return out


class _Collector:
    """One collect run: the client, the two output files and the counts."""

    def __init__(
        self,
        client: ChatClient,
        config: CollectConfig,
        grade: Grader,
        setup: dict[str, Any],
        out: TextIO,
        side: TextIO,
    ) -> None:
        self.client, self.config, self.grade, self.setup = client, config, grade, setup
        self.out, self.side = out, side
        self.sem = asyncio.Semaphore(config.concurrency)
        self.stats = {"tokens": 0, "failed": 0, "completed": 0, "incomplete": 0}

    async def sample(self, q: CollectQuery) -> dict[str, Any] | None:
        """One graded sample, journalled in the sidecar as it lands (None if it failed)."""
        async with self.sem:
            try:
                comp = await self.client.chat(
                    q.messages, self.config.max_tokens, **self.config.params
                )
            except EngineError:  # one lost sample must not sink the set; re-run completes it
                return None
        g = self.grade(comp.text, q.answer)
        s = {
            "tokens": comp.usage.completion_tokens,
            "correct": bool(g.correct),
            "finish_reason": comp.finish_reason,
            "extracted": g.answer,
            "reasoning_tokens": comp.usage.reasoning_tokens,
            "prompt_tokens": comp.usage.prompt_tokens,
        }
        append_record(self.side, {"id": q.id, "sample": s})
        return s

    async def complete(self, q: CollectQuery, have: list[dict[str, Any]], tick: Any) -> None:
        """Sample ``q`` up to K samples; write its record once it has them all."""
        for _ in have:
            tick()
        missing = self.config.samples - len(have)
        new = await asyncio.gather(*(_ticked(self.sample(q), tick) for _ in range(missing)))
        ok = [s for s in new if s is not None]
        self.stats["failed"] += len(new) - len(ok)
        self.stats["tokens"] += sum(int(s["tokens"]) for s in ok)
        got = have + ok
        if len(got) < self.config.samples:
            self.stats["incomplete"] += 1
            return
        record: dict[str, Any] = {"id": q.id}
        if q.question is not None:
            record["question"] = q.question
        if q.answer is not None:
            record["answer"] = str(q.answer)
        record["samples"] = got
        record["meta"] = self.setup
        append_record(self.out, record)
        self.stats["completed"] += 1


async def collect(
    queries: Sequence[CollectQuery],
    client: ChatClient,
    *,
    out: str | Path,
    config: CollectConfig | None = None,
    grader: Grader | str | None = "math",
) -> dict[str, Any]:
    """Sample every query ``config.samples`` times and append trace records to ``out``.

    Returns
    -------
    dict
        ``queries``, ``completed`` (written now), ``skipped`` (complete before),
        ``incomplete`` (still short of K samples), ``failed_samples``,
        ``completion_tokens``, ``wall_s``.
    """
    config = config or CollectConfig()
    config.validate()
    grade = get_grader(grader)
    path = Path(out)
    setup = {
        "model": client.model,
        "max_tokens": config.max_tokens,
        "samples": config.samples,
        **{k: v for k, v in config.params.items() if isinstance(v, int | float | str)},
    }
    complete, partial, side = _open_state(path, setup)
    pending = [q for q in queries if q.id not in complete]
    start = time.perf_counter()
    fh = open_for_append(path)
    run = _Collector(client, config, grade, setup, fh, side)
    try:
        with _bar(config.progress, len(pending) * config.samples) as tick:
            await asyncio.gather(
                *(run.complete(q, partial.get(q.id, [])[: config.samples], tick) for q in pending)
            )
    finally:
        fh.close()
        side.close()
    return {
        "queries": len(queries),
        "completed": run.stats["completed"],
        "skipped": len(queries) - len(pending),
        "incomplete": run.stats["incomplete"],
        "failed_samples": run.stats["failed"],
        "completion_tokens": run.stats["tokens"],
        "wall_s": round(time.perf_counter() - start, 3),
    }


async def _ticked(coro: Any, tick: Any) -> Any:
    result = await coro
    tick()
    return result


class _bar:
    """Rich progress over samples on stderr (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import Progress

        self._p = Progress(console=Console(stderr=True))
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
    deadline: float | None = None,
    max_retries: int = 4,
) -> dict[str, Any]:
    """Synchronous wrapper around :func:`collect` that owns its client.

    ``timeout`` bounds one attempt, ``deadline`` one sample over all its attempts (seconds).
    SIGINT and SIGTERM cancel the sampling where it stands (every sample written is a whole
    line; a re-run completes the rest) and raise
    :class:`~shadowprice.engine.run.RunInterrupted` naming the signal.
    """
    (config or CollectConfig()).validate()
    get_grader(grader)

    async def work(stop: Interruption) -> dict[str, Any]:
        async with ChatClient(
            endpoint,
            model,
            api_key=api_key,
            timeout=timeout,
            deadline=deadline,
            max_retries=max_retries,
        ) as client:
            return await collect(queries, client, out=out, config=config, grader=grader)

    return run_stoppable(work)
