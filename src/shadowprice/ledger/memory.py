"""An in-process ledger: a :class:`~shadowprice.ledger.book.Book` behind the async protocol."""

from __future__ import annotations

from collections.abc import Callable

from .base import LedgerState, OnLapse, Reservation, Settlement
from .book import Book


class MemoryLedger:
    """Token budget of one process (see :class:`~shadowprice.ledger.Ledger`).

    Parameters
    ----------
    total, period, spent, clock, on_lapse
        Those of its :class:`~shadowprice.ledger.book.Book`: the budget per period, the
        period's length in seconds (None: one period), tokens already spent, the wall clock,
        and what a lapsed reservation costs (see :mod:`shadowprice.ledger.base`).

    Attributes
    ----------
    book : Book
        The accounting, for synchronous callers (no I/O here): ``reserve_now``,
        ``settle_now``, ``extend_now`` and ``state_now`` are its methods, and the async
        methods call them.
    """

    def __init__(
        self,
        total: int,
        *,
        period: float | None = None,
        spent: int = 0,
        clock: Callable[[], float] | None = None,
        on_lapse: OnLapse = "spend",
    ) -> None:
        self.book = Book(total, period=period, spent=spent, clock=clock, on_lapse=on_lapse)

    @property
    def total(self) -> int:
        """Budget per period, tokens."""
        return self.book.total

    @property
    def period(self) -> float | None:
        """Length of a budget period in seconds (None: one period)."""
        return self.book.period

    @property
    def on_lapse(self) -> OnLapse:
        """What a lapsed reservation costs."""
        return self.book.on_lapse

    def reserve_now(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        """:meth:`Book.reserve`."""
        return self.book.reserve(tokens, min_tokens=min_tokens, tag=tag, ttl=ttl)

    def settle_now(self, reservation: Reservation, used: int) -> Settlement:
        """:meth:`Book.settle`."""
        return self.book.settle(reservation, used)

    def extend_now(self, reservation: Reservation, ttl: float) -> Reservation | None:
        """:meth:`Book.extend`."""
        return self.book.extend(reservation, ttl)

    def state_now(self) -> LedgerState:
        """:meth:`Book.state`."""
        return self.book.state()

    async def reserve(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        """See :meth:`shadowprice.ledger.Ledger.reserve`."""
        return self.reserve_now(tokens, min_tokens=min_tokens, tag=tag, ttl=ttl)

    async def settle(self, reservation: Reservation, used: int) -> Settlement:
        """See :meth:`shadowprice.ledger.Ledger.settle`."""
        return self.settle_now(reservation, used)

    async def release(self, reservation: Reservation) -> Settlement:
        """See :meth:`shadowprice.ledger.Ledger.release`."""
        return self.settle_now(reservation, 0)

    async def extend(self, reservation: Reservation, ttl: float) -> Reservation | None:
        """See :meth:`shadowprice.ledger.Ledger.extend`."""
        return self.extend_now(reservation, ttl)

    async def state(self) -> LedgerState:
        """See :meth:`shadowprice.ledger.Ledger.state`."""
        return self.state_now()

    async def aclose(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        s = self.state_now()
        return (
            f"MemoryLedger(total={s.total}, spent={s.spent}, reserved={s.reserved}, "
            f"period={self.period})"
        )
