"""The gateway's cost, each figure side by side with calling the upstream directly.

    .venv/bin/python benchmarks/bench_serve.py [--quick] [--rounds 3] [--baseline SRC]

Everything runs on this machine: a fake upstream (uvicorn, its own process), gateway replicas
(``shadowprice serve``, own processes), a real redis-server and an asyncio load generator.
Absolute rates depend on the machine and on whatever else runs; the ratios and the added
latency are the figures, each measured ``--rounds`` times with the direct and the gateway runs
interleaved, so the spread shows how much the machine's load moved them. The gateway's CPU time
per request (read from ``/proc``) is what it costs whatever else runs. Prints one JSON line
per measurement. With ``--baseline SRC`` (another checkout's ``src`` directory) a second set of
gateways runs that code, in the same rounds: a before/after comparison in one machine state.
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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from shadowprice.ledger import Ledger, MemoryLedger
from shadowprice.ledger.redis import RedisLedger
from shadowprice.online import DecisionCore, PacedPricer
from shadowprice.serve.decision import Decider, Grant
from shadowprice.serve.localredis import LocalRedis
from shadowprice.serve.testing import run_load

PY = sys.executable


def emit(**row: object) -> None:
    def tidy(v: object) -> object:
        if isinstance(v, float):
            return round(v, 4)
        if isinstance(v, list):
            return [tidy(x) for x in v]
        if isinstance(v, dict):
            return {k: tidy(x) for k, x in v.items()}
        return v

    print(json.dumps({k: tidy(v) for k, v in row.items()}), flush=True)


def spread(values: list[float]) -> dict[str, object]:
    """Median and every round's value."""
    return {"median": float(np.median(values)), "rounds": values}


def questions(n: int) -> list[str]:
    from shadowprice.traces import load_problems

    qs = load_problems("math500")["question"].tolist()[:n]
    return [f"{q} LEN:16" for q in qs]


async def decision_cost(ledger: Ledger, n: int) -> float:
    d = Decider(DecisionCore(PacedPricer(10**12, 3600.0)), ledger)
    t0 = time.perf_counter()
    for i in range(n):
        g = await d.decide(200.0 + i % 300, 4096)
        assert isinstance(g, Grant)
        await d.settle(g, 100)
    return (time.perf_counter() - t0) / n


def bench_decision(n: int, rounds: int) -> None:
    per = [asyncio.run(decision_cost(MemoryLedger(10**12, period=3600), n)) for _ in range(rounds)]
    emit(what="decision: quote + reserve + settle, in-process ledger",
         us_per_request=spread([p * 1e6 for p in per]))  # fmt: skip
    with LocalRedis() as r:

        async def go() -> float:
            led = RedisLedger.from_url(r.url, 10**12, period=3600, namespace=uuid.uuid4().hex)
            try:
                return await decision_cost(led, max(200, n // 10))
            finally:
                await led.aclose()

        per = [asyncio.run(go()) for _ in range(rounds)]
    emit(what="decision: quote + reserve + settle, Redis ledger (2 round trips)",
         ms_per_round_trip=spread([p * 1e3 / 2 for p in per]))  # fmt: skip


def bench_predictor(n: int, rounds: int) -> None:
    from shadowprice.predict import load_predictor
    from shadowprice.serve.predictor import TextPredictor

    model = load_predictor("default")
    qs = questions(n)
    miss, hit = [], []
    for _ in range(rounds):
        tp = TextPredictor(model)  # a fresh cache
        t0 = time.perf_counter()
        for q in qs:
            tp.tau(q)
        miss.append((time.perf_counter() - t0) / len(qs) * 1e6)
        t0 = time.perf_counter()
        for q in qs:
            tp.tau(q)
        hit.append((time.perf_counter() - t0) / len(qs) * 1e6)
    emit(what="text predictor inside the gateway's decision", us_per_new_question=spread(miss),
         us_per_repeated_question=spread(hit), compiled=tp.compiled)  # fmt: skip


class Proc:
    """A server in its own process that announces ``listening on URL`` once bound; ``src``:
    import ``shadowprice`` from there."""

    def __init__(self, args: list[str], src: str | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": src} if src else None
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        assert self.p.stdout is not None
        line = self.p.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.url = line.removeprefix("listening on ")

    def ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/healthz`` answers (workers start after the announcement)."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.url} did not become healthy")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux ``/proc``)."""
        fields = open(f"/proc/{self.p.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=20)


def fake(speed: float) -> Proc:
    code = (
        "from shadowprice.serve.server import bind, serve;"
        "from shadowprice.serve.testing import fake_upstream;"
        f"serve(fake_upstream(speed={speed}, keep_bodies=False)[0], bind('127.0.0.1', 0))"
    )
    return Proc([PY, "-c", code])


def gateway(upstream: str, *extra: str, budget: int = 10**12, src: str | None = None) -> Proc:
    return Proc(
        [PY, "-c", "from shadowprice.cli import main; main()", "serve", "--upstream", upstream,
         "--budget", str(budget), "--period", "3600", "--port", "0", *extra], src
    )  # fmt: skip


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e3, q))


def load(urls: list[str], n: int, concurrency: int, **kw: object) -> tuple[list[float], float]:
    """(latencies, requests per second) of ``n`` non-streamed requests, all answered 200."""
    out = asyncio.run(run_load(urls, n, concurrency, stream=False, **kw))  # type: ignore[arg-type]
    assert set(out.status) == {200}, (urls, {s: out.status.count(s) for s in set(out.status)})
    return out.latency, len(out.status) / out.elapsed


def bench_client(n: int, rounds: int) -> None:
    """CPU of this process per non-streamed loopback request to the fake upstream, by client
    (concurrency 4, uvloop as in the gateway): where the gateway's upstream hop spends."""
    import aiohttp
    import httpx
    from httpx_aiohttp import AiohttpTransport

    from shadowprice.serve.transport import UpstreamClient

    up = fake(0)
    url = httpx.URL(f"{up.url}/v1/chat/completions")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "LEN:16"}]})
    data, headers = body.encode(), {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=64)

    async def cpu_per_request(one: Callable[[], Awaitable[object]]) -> float:
        for _ in range(200):  # connections, caches
            await one()
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                await one()

        t0 = time.process_time()
        await asyncio.gather(*(worker() for _ in range(4)))
        return (time.process_time() - t0) / n * 1e6

    async def raw_aiohttp() -> float:
        async with aiohttp.ClientSession(headers=headers) as s:

            async def one() -> None:
                async with s.post(str(url), data=data) as r:
                    await r.read()

            return await cpu_per_request(one)

    async def httpx_client(transport: httpx.AsyncBaseTransport) -> float:
        async with httpx.AsyncClient(transport=transport, headers=headers) as c:
            return await cpu_per_request(lambda: c.post(url, content=data))

    async def relay() -> float:
        async with UpstreamClient(headers=headers, timeout=60) as c:

            async def one() -> None:
                await (await c.relay(url, data, stream=False)).aclose()

            return await cpu_per_request(one)

    clients: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
        "aiohttp.ClientSession": raw_aiohttp,
        "httpx.AsyncClient, httpcore transport": lambda: httpx_client(
            httpx.AsyncHTTPTransport(limits=limits)
        ),
        "httpx.AsyncClient, AiohttpTransport": lambda: httpx_client(
            AiohttpTransport(limits=limits)
        ),
        "UpstreamClient.relay (the gateway's)": relay,
    }
    per: dict[str, list[float]] = {k: [] for k in clients}
    try:
        for _ in range(rounds):
            for name, measure in clients.items():
                per[name].append(run_loop(measure()))
    finally:
        up.stop()
    emit(what="client CPU per non-streamed loopback request (concurrency 4, uvloop)",
         us_per_request={k: spread(v) for k, v in per.items()})  # fmt: skip


def run_loop(coro: Coroutine[Any, Any, float]) -> float:
    """Run ``coro`` on uvloop where there is one (the gateway's loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(coro)
    return uvloop.run(coro)


def bench_latency(n: int, rounds: int, baseline: str | None) -> None:
    up = fake(0)
    gws = {"": gateway(up.url)}
    if baseline:
        gws["baseline_"] = gateway(up.url, src=baseline)
    qs = questions(500)
    try:
        for url in [up.url] + [g.url for g in gws.values() for _ in range(2)]:
            load([url], 500, 4, prompts=qs)  # warm connections and the predictor's cache
        d50: list[float] = []
        d99: list[float] = []
        rows: dict[str, list[float]] = {}
        for i in range(rounds):
            lat, _ = load([up.url], n, 4, prompts=qs)
            d50.append(pct(lat, 50))
            d99.append(pct(lat, 99))
            for name in sorted(gws, reverse=i % 2 == 1):  # neither side always goes first
                gw = gws[name]
                cpu0 = gw.cpu_seconds()
                lat, _ = load([gw.url], n, 4, prompts=qs)
                cpu = (gw.cpu_seconds() - cpu0) / n * 1e6
                rows.setdefault(f"{name}gateway_cpu_us_per_request", []).append(cpu)
                rows.setdefault(f"{name}added_p50_ms", []).append(pct(lat, 50) - d50[-1])
                rows.setdefault(f"{name}added_p99_ms", []).append(pct(lat, 99) - d99[-1])
        emit(
            what="latency at concurrency 4 (non-streaming, prediction included, cached prompts)",
            direct_p50_ms=spread(d50),
            direct_p99_ms=spread(d99),
            **{key: spread(values) for key, values in sorted(rows.items())},
        )
    finally:
        for gw in gws.values():
            gw.stop()
        up.stop()


def bench_throughput(n: int, concurrency: int, rounds: int, baseline: str | None) -> None:
    up = fake(0)
    procs: list[Proc] = []
    with LocalRedis() as r:
        try:
            targets = {"direct": [up.url]}
            for prefix, src in [("", None)] + ([("baseline_", baseline)] if baseline else []):
                ns = uuid.uuid4().hex
                one = gateway(up.url, src=src)
                two = [gateway(up.url, "--state", r.url, "--namespace", ns, src=src)
                       for _ in range(2)]  # fmt: skip
                procs += [one, *two]
                targets[f"{prefix}ratio_one_replica"] = [one.url]
                targets[f"{prefix}ratio_two_replicas_redis"] = [g.url for g in two]
            for urls in targets.values():
                load(urls, 2000, concurrency)
            rates: dict[str, list[float]] = {k: [] for k in targets}
            for i in range(rounds):
                for name in sorted(targets, reverse=i % 2 == 1):
                    rates[name].append(load(targets[name], n, concurrency)[1])
            direct = rates.pop("direct")
            emit(
                what=f"throughput at saturation ({concurrency} clients, non-streaming)",
                direct_rps=spread(direct),
                **{key: spread(ratios(rates[key], direct)) for key in sorted(rates)},
            )
        finally:
            for p in procs:
                p.stop()
            up.stop()


def bench_workers(n: int, concurrency: int, rounds: int, counts: tuple[int, ...]) -> None:
    """Throughput of one gateway on 1, 2, ... worker processes (``serve --workers``, each set
    on its own private Redis), as a ratio to calling the upstream directly, same rounds."""
    up = fake(0)
    procs: dict[str, Proc] = {}
    try:
        for w in counts:
            procs[f"workers_{w}"] = g = gateway(up.url, "--workers", str(w))
            g.ready()
        targets = {"direct": [up.url], **{k: [g.url] for k, g in procs.items()}}
        for urls in targets.values():
            load(urls, 2000, concurrency)
        rates: dict[str, list[float]] = {k: [] for k in targets}
        for i in range(rounds):
            for name in sorted(targets, reverse=i % 2 == 1):
                rates[name].append(load(targets[name], n, concurrency)[1])
        direct = rates.pop("direct")
        base = rates[f"workers_{counts[0]}"]
        emit(
            what=f"throughput by worker processes ({concurrency} clients, non-streaming)",
            direct_rps=spread(direct),
            **{f"{k}_rps": spread(v) for k, v in sorted(rates.items())},
            **{f"{k}_vs_direct": spread(ratios(v, direct)) for k, v in sorted(rates.items())},
            **{f"{k}_vs_{counts[0]}": spread(ratios(v, base)) for k, v in sorted(rates.items())},
        )
    finally:
        for p in procs.values():
            p.stop()
        up.stop()


def ratios(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


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
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of each measurement")
    ap.add_argument("--only", default="", help="comma-separated subset: decision,predictor,...")
    ap.add_argument("--baseline", help="also run gateways from this src directory, same rounds")
    args = ap.parse_args()
    k = 10 if args.quick else 1
    steps: dict[str, Callable[[], None]] = {
        "decision": lambda: bench_decision(20_000 // k, args.rounds),
        "predictor": lambda: bench_predictor(500 // k, args.rounds),
        "client": lambda: bench_client(max(1000, 5000 // k), args.rounds),
        "latency": lambda: bench_latency(max(1000, 3000 // k), args.rounds, args.baseline),
        "throughput": lambda: bench_throughput(20_000 // k, 64, args.rounds, args.baseline),
        "load": lambda: bench_load(50 if args.quick else 500),
        "workers": lambda: bench_workers(20_000 // k, 64, args.rounds, (1, 2)),
    }
    chosen = args.only.split(",") if args.only else list(steps)
    emit(machine=platform.platform(), cpus=os.cpu_count(), python=platform.python_version(),
         load_average=os.getloadavg()[0])  # fmt: skip
    for name in chosen:
        steps[name]()


if __name__ == "__main__":
    main()
