"""The ledger contract, run against every implementation.

To check another implementation, subclass :class:`LedgerContract` in its own test module
(``from test_ledger import LedgerContract``) and define ``make(total, period=None,
clock=None)``; raise ``pytest.skip`` there for a feature it does not have.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowprice.ledger import JournalLedger, Ledger, LedgerError, MemoryLedger, OnLapse


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class LedgerContract:
    """What every :class:`~shadowprice.ledger.Ledger` must do."""

    def make(
        self,
        total: int,
        period: float | None = None,
        clock: FakeClock | None = None,
        on_lapse: OnLapse = "spend",
    ) -> Ledger:
        raise NotImplementedError

    def test_reserve_settle_release(self) -> None:
        async def go() -> None:
            led = self.make(100)
            a = await led.reserve(60, tag="a")
            assert a is not None and a.tokens == 60
            assert await led.reserve(50) is None  # all or nothing by default
            part = await led.reserve(50, min_tokens=10)
            assert part is not None and part.tokens == 40
            s = await led.settle(a, 25)
            assert (s.charged, s.status, s.overrun) == (25, "settled", 0)
            assert (await led.settle(a, 25)).status == "duplicate"
            await led.release(part)
            st_ = await led.state()
            assert (st_.total, st_.spent, st_.reserved, st_.available) == (100, 25, 0, 75)
            await led.aclose()

        run(go())

    def test_server_overrun_is_charged_in_full(self) -> None:
        async def go() -> None:
            led = self.make(100)
            a = await led.reserve(10)
            assert a is not None
            s = await led.settle(a, 15)
            assert (s.charged, s.overrun) == (15, 5)
            state = await led.state()
            assert (state.spent, state.overrun) == (15, 5)

        run(go())

    def test_bad_amounts_are_refused(self) -> None:
        async def go() -> None:
            led = self.make(100)
            for bad in (0, -1, 1.5, True):
                with pytest.raises(LedgerError):
                    await led.reserve(bad)  # type: ignore[arg-type]
            with pytest.raises(LedgerError):
                await led.reserve(5, min_tokens=6)

        run(go())

    def test_a_lapsed_reservation_is_spent_in_full_until_its_late_settlement(self) -> None:
        """Its holder is gone but the server may still generate: the tokens stay charged."""
        clock = FakeClock()

        async def go() -> None:
            led = self.make(100, None, clock)
            a = await led.reserve(80, ttl=5.0)
            assert a is not None and await led.reserve(30) is None
            clock.t += 6.0
            state = await led.state()
            assert (state.spent, state.reserved, state.lapsed) == (80, 0, 80)
            assert await led.reserve(30) is None  # not given to anyone else
            late = await led.settle(a, 40)  # the real use arrives after all
            assert (late.status, late.charged, late.overrun) == ("late", 40, 0)
            state = await led.state()
            assert (state.spent, state.lapsed, state.overrun) == (40, 0, 0)
            b = await led.reserve(60)
            assert b is not None
            assert (await led.settle(a, 40)).status == "duplicate"
            assert await led.reserve(1) is None  # 40 spent + 60 held: the budget

        run(go())

    def test_a_lapsed_reservation_past_its_allowance_is_an_overrun(self) -> None:
        clock = FakeClock()

        async def go() -> None:
            led = self.make(100, None, clock)
            a = await led.reserve(50, ttl=1.0)
            assert a is not None
            clock.t += 2.0
            late = await led.settle(a, 70)
            assert (late.status, late.charged, late.overrun) == ("late", 70, 20)
            state = await led.state()
            assert (state.spent, state.lapsed, state.overrun) == (70, 0, 20)

        run(go())

    def test_on_lapse_release_returns_the_tokens_and_a_late_settle_is_charged(
        self,
    ) -> None:
        clock = FakeClock()

        async def go() -> None:
            led = self.make(100, None, clock, on_lapse="release")
            a = await led.reserve(80, ttl=5.0)
            assert a is not None and await led.reserve(30) is None
            clock.t += 6.0
            b = await led.reserve(30)  # a lapsed: its tokens are back
            assert b is not None
            late = await led.settle(a, 40)
            assert (late.status, late.charged, late.overrun) == ("late", 40, 40)
            state = await led.state()
            assert (state.spent, state.reserved, state.lapsed) == (40, 30, 0)

        run(go())

    def test_extend_keeps_a_reservation_open_while_its_holder_renews_it(self) -> None:
        clock = FakeClock()

        async def go() -> None:
            led = self.make(100, None, clock)
            a = await led.reserve(80, ttl=5.0)
            assert a is not None and a.expires_at == pytest.approx(clock.t + 5.0)
            clock.t += 4.0
            renewed = await led.extend(a, 5.0)
            assert renewed is not None and renewed.id == a.id
            assert renewed.expires_at == pytest.approx(clock.t + 5.0)
            clock.t += 4.0  # past the first expiry, within the renewed one
            assert (await led.state()).reserved == 80
            clock.t += 2.0  # the holder stopped renewing: the reservation lapses, spent
            assert ((await led.state()).reserved, (await led.state()).lapsed) == (0, 80)
            assert await led.extend(a, 5.0) is None
            assert (await led.settle(a, 10)).status == "late"
            b = await led.reserve(30)  # made without a ttl: extending gives it one
            assert b is not None and b.expires_at is None
            b2 = await led.extend(b, 1.0)
            assert b2 is not None and b2.expires_at == pytest.approx(clock.t + 1.0)
            assert (await led.settle(b, 30)).status == "settled"
            assert await led.extend(b, 1.0) is None  # settled: nothing left to renew
            with pytest.raises(LedgerError):
                await led.extend(b, 0)

        run(go())

    def test_periods_renew_the_budget_and_settle_to_their_own_period(
        self,
    ) -> None:
        clock = FakeClock(1_000_000.0)

        async def go() -> None:
            led = self.make(100, 60.0, clock)
            a = await led.reserve(100)
            assert a is not None and await led.reserve(1) is None
            clock.t += 60.0
            b = await led.reserve(100)
            assert b is not None and b.period == a.period + 1
            await led.settle(a, 70)  # charged to the period it was reserved in
            state = await led.state()
            assert (state.period, state.spent, state.reserved) == (b.period, 0, 100)

        run(go())

    # Each implementation's subclass runs this method: a different executor by design.
    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.differing_executors]
    )
    @given(
        total=st.integers(1, 500),
        ops=st.lists(
            st.tuples(st.integers(1, 200), st.integers(0, 250), st.booleans()), max_size=40
        ),
    )
    def test_spent_plus_reserved_never_exceeds_the_budget(
        self, total: int, ops: list[tuple[int, int, bool]]
    ) -> None:
        """Random reservations settled with at most what they hold: the invariant holds."""

        async def go() -> None:
            led = self.make(total)
            held = []
            for want, used, partial in ops:
                r = await led.reserve(want, min_tokens=1 if partial else None)
                if r is not None:
                    held.append(r)
                    assert r.tokens <= want
                s = await led.state()
                assert s.spent + s.reserved <= total
                if held and used % 3 == 0:
                    h = held.pop(0)
                    await led.settle(h, min(used, h.tokens))
            for h in held:
                await led.settle(h, h.tokens)
            s = await led.state()
            assert s.spent <= total and s.reserved == 0 and s.overrun == 0
            await led.aclose()

        run(go())


class TestMemory(LedgerContract):
    def make(
        self,
        total: int,
        period: float | None = None,
        clock: FakeClock | None = None,
        on_lapse: OnLapse = "spend",
    ) -> Ledger:
        return MemoryLedger(total, period=period, clock=clock, on_lapse=on_lapse)


class TestJournal(LedgerContract):
    def make(
        self,
        total: int,
        period: float | None = None,
        clock: FakeClock | None = None,
        on_lapse: OnLapse = "spend",
    ) -> Ledger:
        if period is not None:
            pytest.skip("a journal ledger accounts one run: it has no periods")
        if on_lapse != "spend":
            pytest.skip("a journal ledger counts what a crash left open as spent")
        folder = tempfile.mkdtemp(prefix="sp-journal-")
        return JournalLedger(f"{folder}/run.journal", total, config={"total": total}, clock=clock)


def test_capabilities_are_declared_and_checked_with_isinstance(tmp_path: Any) -> None:
    """Optional capabilities are protocols: a caller asks ``isinstance``, never ``getattr``."""
    from shadowprice.ledger import Book, InProcess, Periodic, Recoverable, SharedLedger

    memory = MemoryLedger(10)
    journal = JournalLedger(tmp_path / "a.journal", 10, config={})
    shared = JournalLedger(tmp_path / "b.journal", 10, config={}, shared=memory)
    assert isinstance(memory, InProcess) and isinstance(memory.book, Book)
    assert not isinstance(memory, Recoverable) and not isinstance(memory, SharedLedger)
    assert isinstance(journal, InProcess) and isinstance(journal, Recoverable)
    # A journal over a shared budget keeps no books of its own.
    assert isinstance(shared, Recoverable) and not isinstance(shared, InProcess)
    with pytest.raises(AttributeError, match="shared"):
        shared.book  # noqa: B018
    for led in (memory, journal, shared):
        assert isinstance(led, Ledger)
    assert isinstance(memory, Periodic) and not isinstance(journal, Periodic)
    run(journal.aclose())
    run(shared.aclose())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 60)), max_size=12))
def test_the_async_ledgers_keep_the_books_of_their_synchronous_book(ops: list[Any]) -> None:
    """A MemoryLedger is its Book behind the async protocol: the same operations give the same
    totals, whichever side they go through."""
    from shadowprice.ledger import Book

    book, led = Book(200), MemoryLedger(200)

    async def go() -> None:
        for tokens, used in ops:
            a, b = book.reserve(tokens), await led.reserve(tokens)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert book.settle(a, used).charged == (await led.settle(b, used)).charged
            assert book.state() == await led.state() == led.book.state()

    run(go())
