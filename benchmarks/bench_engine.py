"""Engine overhead vs direct HTTP calls, and throughput at concurrency 1/4/8.

Usage (server from ``tools/engine.sh start``)::

    .venv/bin/python benchmarks/bench_engine.py --url "$(cat .cache/llama.url)"

Overhead: the same 1-token request sent R times sequentially, (a) as a bare httpx POST and
(b) through the engine's full path (ledger reserve/settle, retries wrapper, usage parsing,
grading, JSONL record). Both in one run, interleaved, so the ratio compares like with like.
Throughput: Q queries of M tokens through :func:`execute` at concurrency 1, 4, 8.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from shadowprice.engine.client import ChatClient
from shadowprice.engine.run import PlanItem, RunConfig, execute, prompt_messages

PROMPT = [{"role": "user", "content": "Reply with the single word: ok"}]


async def overhead(url: str, reps: int) -> tuple[float, float]:
    """Median seconds per 1-token request: direct httpx vs the engine path."""
    direct, engine = [], []
    body = {"model": "local", "messages": PROMPT, "max_tokens": 1, "n": 1, "temperature": 0.0}
    async with httpx.AsyncClient(timeout=60) as http, ChatClient(url, "local") as client:
        tmp = Path(tempfile.mkdtemp())
        for i in range(reps):
            t = time.perf_counter()
            r = await http.post(url.rstrip("/") + "/v1/chat/completions", json=body)
            r.raise_for_status()
            r.json()
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            item = PlanItem(f"q{i}", PROMPT, 1, "ok")
            await execute(
                [item],
                client,
                total_budget=1,
                out=tmp / f"r{i}.jsonl",
                config=RunConfig(concurrency=1, progress=False),
                grader="exact",
            )
            engine.append(time.perf_counter() - t)
    return statistics.median(direct), statistics.median(engine)


async def throughput(url: str, queries: int, tokens: int, concurrency: int) -> dict[str, float]:
    """Completion tokens per second for ``queries`` requests of ``tokens`` each."""
    items = [
        PlanItem(f"t{i}", prompt_messages(f"Write a long story about the number {i}."), tokens)
        for i in range(queries)
    ]
    async with ChatClient(url, "local") as client:
        t = time.perf_counter()
        report = await execute(
            items,
            client,
            total_budget=queries * tokens,
            config=RunConfig(concurrency=concurrency, progress=False, params={"temperature": 0.0}),
        )
        wall = time.perf_counter() - t
    used = report.summary["tokens_used"]
    return {"wall_s": wall, "tokens": used, "tok_per_s": used / wall, "req_per_s": queries / wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    d, e = asyncio.run(overhead(args.url, args.reps))
    print(f"overhead ({args.reps} sequential 1-token requests, median)")
    print("| path | s/request |\n|---|---|")
    print(f"| direct httpx | {d:.4f} |\n| engine (execute) | {e:.4f} |")
    print(f"ratio engine/direct = {e / d:.3f}  (overhead {1000 * (e - d):.1f} ms/request)\n")
    print(f"throughput ({args.queries} queries x {args.tokens} tokens)")
    print("| concurrency | wall s | tokens | tok/s | req/s |\n|---|---|---|---|---|")
    for c in (1, 4, 8):
        r = asyncio.run(throughput(args.url, args.queries, args.tokens, c))
        print(
            f"| {c} | {r['wall_s']:.1f} | {r['tokens']:.0f} | {r['tok_per_s']:.1f} | "
            f"{r['req_per_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
