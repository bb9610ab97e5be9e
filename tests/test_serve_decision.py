"""The decision without HTTP: reservations of requests that ended without settling lapse."""

from __future__ import annotations

import asyncio

from shadowprice.ledger import MemoryLedger
from shadowprice.online import DecisionCore, OnlinePricer
from shadowprice.serve.decision import Decider, Grant


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_request_task_that_ends_without_settling_cannot_leak_its_reservation() -> None:
    clock = Clock()
    ledger = MemoryLedger(10_000, period=3600, clock=clock)
    core = DecisionCore(OnlinePricer(10_000, 3600))
    decider = Decider(core, ledger, ttl=10.0, clock=clock)

    async def go() -> None:
        async def request(done: asyncio.Event) -> int:
            grant = await decider.decide(100.0, 4096)
            assert isinstance(grant, Grant)
            await done.wait()
            return await decider.settle(grant, 50)

        finish = asyncio.Event()
        alive = asyncio.create_task(request(finish))
        crashed = asyncio.create_task(request(asyncio.Event()))
        await asyncio.sleep(0.01)
        assert ledger.state_now().reserved == 2 * 300  # threshold + the curve's peak, each
        crashed.cancel()  # the task is gone before it could settle or release
        await asyncio.gather(crashed, return_exceptions=True)
        for _ in range(6):  # 24 s: the running request is renewed, the other is not
            clock.t += 4.0
            assert await decider.renew() == 1
        # The crashed one's reservation lapsed: charged in full (its server may have run on).
        s = ledger.state_now()
        assert (s.reserved, s.spent, s.lapsed) == (300, 300, 300)
        finish.set()
        assert await alive == 50
        s = ledger.state_now()
        assert (s.spent, s.reserved, s.overrun) == (350, 0, 0)
        assert await decider.renew() == 0

    asyncio.run(go())


def test_a_background_loop_stops_even_when_its_step_swallows_the_cancellation() -> None:
    """What held a replica's shutdown in a soak: a Redis call turned the loop's cancellation
    into a timeout error, and the price loop went on for ever (the gateway's and the LiteLLM
    plugin's loops are this one)."""
    import logging

    from shadowprice.serve.budget import every

    async def go() -> None:
        started = asyncio.Event()
        swallow = True

        async def step() -> None:
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallow:  # as a library's own timeout can
                    raise TimeoutError("timed out") from None
                raise

        loop = asyncio.create_task(every(step, 0.01, logging.getLogger("test")))
        await started.wait()
        loop.cancel()
        done, _ = await asyncio.wait({loop}, timeout=2)
        swallow = False  # let a loop that did not stop end, so that the test fails, not hangs
        loop.cancel()
        assert loop in done and loop.cancelled()

    asyncio.run(go())
