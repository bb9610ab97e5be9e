"""The gateway's cost, each figure side by side with calling the upstream directly.

    .venv/bin/python benchmarks/bench_serve.py [--quick]

Everything runs on this machine: a fake upstream (uvicorn, its own process), gateway replicas
(``shadowprice serve``, own processes), a real redis-server and an asyncio load generator.
Absolute rates depend on the machine and on whatever else runs; the ratios and the added
latency are the figures. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid

import numpy as np

from shadowprice.ledger import MemoryLedger
from shadowprice.ledger.redis import RedisLedger
from shadowprice.online import OnlinePricer
from shadowprice.serve.decision import Decider, Grant
from shadowprice.serve.localredis import LocalRedis, free_port
from shadowprice.serve.testing import run_load

PY = sys.executable


def emit(**row: object) -> None:
    print(
        json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
        flush=True,
    )


def questions(n: int) -> list[str]:
    from shadowprice.traces import load_problems

    qs = load_problems("math500")["question"].tolist()[:n]
    return [f"{q} LEN:16" for q in qs]


async def decision_cost(ledger, n: int) -> float:  # type: ignore[no-untyped-def]
    pricer = OnlinePricer(10**12, 3600.0)
    d = Decider(pricer, ledger)
    t0 = time.perf_counter()
    for i in range(n):
        g = await d.decide(200.0 + i % 300, 4096)
        assert isinstance(g, Grant)
        await d.settle(g, 100)
    return (time.perf_counter() - t0) / n


def bench_decision(n: int) -> None:
    per = asyncio.run(decision_cost(MemoryLedger(10**12, period=3600), n))
    emit(what="decision: quote + reserve + settle, in-process ledger", us_per_request=per * 1e6)
    with LocalRedis() as r:

        async def go() -> float:
            led = RedisLedger.from_url(r.url, 10**12, period=3600, namespace=uuid.uuid4().hex)
            try:
                return await decision_cost(led, max(200, n // 10))
            finally:
                await led.aclose()

        per = asyncio.run(go())
    emit(what="decision: quote + reserve + settle, Redis ledger (2 round trips)",
         ms_per_request=per * 1e3, ms_per_round_trip=per * 1e3 / 2)  # fmt: skip


def bench_predictor(n: int) -> None:
    from shadowprice.predict import load_predictor
    from shadowprice.serve.predictor import TextPredictor

    tp = TextPredictor(load_predictor("default"))
    qs = questions(n)
    t0 = time.perf_counter()
    for q in qs:
        tp.tau(q)
    miss = (time.perf_counter() - t0) / len(qs)
    t0 = time.perf_counter()
    for q in qs:
        tp.tau(q)
    hit = (time.perf_counter() - t0) / len(qs)
    emit(what="text predictor inside the gateway's decision", us_per_new_question=miss * 1e6,
         us_per_repeated_question=hit * 1e6, fast_path=tp._one is not None)  # fmt: skip


class Proc:
    def __init__(self, args: list[str]) -> None:
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.p.stdout is not None
        line = self.p.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.url = line.removeprefix("listening on ")

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=20)


def fake(speed: float) -> Proc:
    port = free_port()
    code = (
        "import uvicorn; from shadowprice.serve.testing import fake_upstream;"
        f"app,_=fake_upstream(speed={speed}, keep_bodies=False);"
        f"print('listening on http://127.0.0.1:{port}', flush=True);"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='error', access_log=False,"
        " loop='uvloop', http='httptools')"
    )
    return Proc([PY, "-c", code])


def gateway(upstream: str, *extra: str, budget: int = 10**12) -> Proc:
    return Proc(
        [
            PY,
            "-c",
            "from shadowprice.cli import main; main()",
            "serve",
            "--upstream",
            upstream,
            "--budget",
            str(budget),
            "--period",
            "3600",
            "--port",
            "0",
            *extra,
        ]
    )


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


def bench_latency(n: int) -> None:
    up = fake(0)
    gw = gateway(up.url)
    qs = questions(500)
    try:
        for _ in range(2):  # warm both paths (connections, caches)
            asyncio.run(run_load(up.url, 200, 4, stream=False, prompts=qs))
            asyncio.run(run_load(gw.url, 600, 4, stream=False, prompts=qs))
        rows = {}
        for name, url in (("direct", up.url), ("gateway", gw.url)):
            out = asyncio.run(run_load(url, n, 4, stream=False, prompts=qs))
            assert set(out.status) == {200}, set(out.status)
            rows[name] = out.latency
        emit(what="latency at concurrency 4 (non-streaming, prediction included, cached prompts)",
             direct_p50_ms=pct(rows["direct"], 50), gateway_p50_ms=pct(rows["gateway"], 50),
             direct_p99_ms=pct(rows["direct"], 99), gateway_p99_ms=pct(rows["gateway"], 99),
             added_p50_ms=pct(rows["gateway"], 50) - pct(rows["direct"], 50),
             added_p99_ms=pct(rows["gateway"], 99) - pct(rows["direct"], 99))  # fmt: skip
    finally:
        gw.stop()
        up.stop()


def bench_throughput(n: int, concurrency: int) -> None:
    up = fake(0)
    with LocalRedis() as r:
        ns = uuid.uuid4().hex
        one = gateway(up.url)
        two = [gateway(up.url, "--state", r.url, "--namespace", ns) for _ in range(2)]
        try:
            rates = {}
            for name, urls in (
                ("direct", [up.url]),
                ("1 replica", [one.url]),
                ("2 replicas + Redis", [g.url for g in two]),
            ):
                asyncio.run(run_load(urls, 300, concurrency, stream=False))
                out = asyncio.run(run_load(urls, n, concurrency, stream=False))
                ok = out.status.count(200)
                rates[name] = ok / out.elapsed
            emit(what=f"throughput at saturation ({concurrency} clients, non-streaming)",
                 direct_rps=rates["direct"], one_replica_rps=rates["1 replica"],
                 two_replicas_rps=rates["2 replicas + Redis"],
                 ratio_one=rates["1 replica"] / rates["direct"],
                 ratio_two=rates["2 replicas + Redis"] / rates["direct"])  # fmt: skip
        finally:
            one.stop()
            for g in two:
                g.stop()
            up.stop()


def bench_load(clients: int) -> None:
    up = fake(400)
    with LocalRedis() as r:
        ns, budget = uuid.uuid4().hex, 40 * clients
        reps = [gateway(up.url, "--state", r.url, "--namespace", ns, "--route-tau", "40",
                        "--max-tokens-ceiling", "64", budget=budget) for _ in range(2)]  # fmt: skip
        try:
            urls = [g.url for g in reps]
            out = asyncio.run(run_load(urls, clients, clients, prompt="LEN:64", timeout=120))

            async def state():  # type: ignore[no-untyped-def]
                led = RedisLedger.from_url(r.url, budget, period=3600, namespace=ns)
                for _ in range(100):
                    s = await led.state()
                    if s.reserved == 0:
                        break
                    await asyncio.sleep(0.1)
                await led.aclose()
                return s

            s = asyncio.run(state())
        finally:
            for g in reps:
                g.stop()
            up.stop()
    ok = [i for i, st in enumerate(out.status) if st == 200]
    emit(
        what=f"{clients} concurrent streaming clients, 2 replicas on one Redis",
        budget=budget,
        granted=len(ok),
        refused_429=out.status.count(429),
        other=len(out.status) - len(ok) - out.status.count(429),
        lost=clients - len(out.status),
        incomplete_granted=sum(not out.complete[i] for i in ok),
        over_allowance=sum(out.tokens[i] > out.allowance[i] for i in ok),
        tokens_received=sum(out.tokens),
        ledger_spent=s.spent,
        ledger_reserved=s.reserved,
        within_budget=s.spent <= budget,
        charged_once=s.spent == sum(out.tokens),
        seconds=out.elapsed,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    args = ap.parse_args()
    k = 10 if args.quick else 1
    emit(machine=platform.platform(), cpus=os.cpu_count(), python=platform.python_version())
    bench_decision(20_000 // k)
    bench_predictor(500 // k)
    bench_latency(3000 // k)
    bench_throughput(4000 // k, 64)
    bench_load(500 // k if args.quick else 500)


if __name__ == "__main__":
    main()
