"""Engine overhead vs direct HTTP calls, and throughput at concurrency 1/4/8.

Usage::

    .venv/bin/python benchmarks/bench_engine.py --url "$(cat .cache/llama.url)"   # a model
    .venv/bin/python benchmarks/bench_engine.py --replay                          # no model

With ``--url`` (a model server, e.g. ``tools/engine.sh start``):

- overhead: the same 1-token request sent R times sequentially, (a) as a bare httpx POST and
  (b) through the engine's full path (:func:`~shadowprice.engine.run.execute`: the driver, a
  journal reserve/settle, usage parsing, grading, a JSONL record). Both in one run,
  interleaved, so the ratio compares like with like;
- throughput: Q queries of M tokens through :func:`execute` at concurrency 1, 4, 8.

With ``--replay`` (no GPU): a ``shadowprice replay-server`` of the bundled traces in its own
process, and this process's CPU time per request (``time.process_time``: what the client side
costs whatever else runs), at concurrency 4: a bare ``httpx.AsyncClient`` (httpcore), the
package's one HTTP stack (:class:`~shadowprice.engine.transport.HttpClient`),
:class:`~shadowprice.engine.client.ChatClient` (usage parsing, its retry loop), and a whole
plan through the one driver (:func:`execute`, in-memory ledger, grading, records).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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


def replay_server() -> tuple[subprocess.Popen[str], str]:
    """A replay server of the bundled traces in its own process, and its /v1 URL."""
    cmd = [sys.executable, "-c", "from shadowprice.cli import main; main()", "replay-server"]
    proc = subprocess.Popen(
        [*cmd, "bundled:qwen25-math-math100", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[-1] + "/v1"


async def cpu_per_request(one: Callable[[int], Awaitable[object]], n: int) -> float:
    """This process's CPU microseconds per call of ``one``, four at a time."""
    for i in range(100):  # connections, caches
        await one(i)
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            await one(i)

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(4)))
    return (time.process_time() - t0) / n * 1e6


async def client_cpu(url: str, n: int) -> dict[str, float]:
    """CPU per request of each client path against the replay server (see the docstring)."""
    from shadowprice.traces import load_traces

    ids = load_traces("qwen25-math-math100").ids
    body = {"model": "replay", "max_tokens": 64, "n": 1}
    out: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=60) as http:
        out["httpx.AsyncClient (httpcore)"] = await cpu_per_request(
            lambda i: http.post(
                f"{url}/chat/completions",
                json={**body, "messages": [{"role": "user", "content": ids[i % 100]}]},
            ),
            n,
        )
    async with ChatClient(url, "replay") as client:
        http2 = client._http  # the package's one stack, as ChatClient holds it
        out["HttpClient (the package's stack)"] = await cpu_per_request(
            lambda i: http2.post(
                f"{url}/chat/completions",
                json={**body, "messages": [{"role": "user", "content": ids[i % 100]}]},
            ),
            n,
        )
        out["ChatClient.chat"] = await cpu_per_request(
            lambda i: client.chat([{"role": "user", "content": ids[i % 100]}], 64), n
        )
        items = [
            PlanItem(f"p{i}", [{"role": "user", "content": ids[i % 100]}], 64) for i in range(n)
        ]
        t0 = time.process_time()
        await execute(
            items,
            client,
            total_budget=64 * n,
            config=RunConfig(concurrency=4, progress=False, params={}),
            grader="exact",
        )
        out["execute (the driver, whole plan)"] = (time.process_time() - t0) / n * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="a model server (OpenAI-compatible)")
    parser.add_argument("--replay", action="store_true", help="CPU per request, no model")
    parser.add_argument(
        "--replay-url", help="with --replay: a replay server already running (its /v1 URL)"
    )
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000, help="per client path (--replay)")
    args = parser.parse_args()
    if args.replay:
        proc, url = (None, args.replay_url) if args.replay_url else replay_server()
        try:
            rows = asyncio.run(client_cpu(url, args.requests))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
        print(
            f"client CPU per request against a replay server ({args.requests} requests, 4 at once)"
        )
        print("| path | CPU µs/request |\n|---|---|")
        for name, us in rows.items():
            print(f"| {name} | {us:.0f} |")
        return
    if not args.url:
        parser.error("give --url (a model server) or --replay")
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
