"""The accounting itself: a synchronous book of one budget, with no I/O.

Every ledger keeps the same books: reserve a request's allowance, settle it with what was
generated, let what was abandoned lapse. :class:`Book` is that accounting, synchronous and
free of I/O, so a simulation, a planner or a test can use it directly and the asynchronous
ledgers only add where the books live: :class:`~shadowprice.ledger.MemoryLedger` holds one
in memory, :class:`~shadowprice.ledger.JournalLedger` journals every entry of one to disk
before it returns, and :class:`~shadowprice.ledger.redis.RedisLedger` keeps the same books in
Redis (its scripts implement these rules, and the shared contract tests check both).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .base import (
    LedgerError,
    LedgerState,
    OnLapse,
    Reservation,
    Settlement,
    check_on_lapse,
    check_reservation,
    check_tokens,
)

__all__ = ["Book", "InProcess"]

#: Settled reservation ids remembered (for idempotent settling) per period kept.
_PERIODS_KEPT = 4


@dataclass
class _Period:
    spent: int = 0
    reserved: int = 0
    overrun: int = 0
    lapsed: int = 0


class Book:
    """The books of one token budget, kept in this process (see :mod:`shadowprice.ledger.base`
    for the rules).

    Parameters
    ----------
    total : int
        Budget per period, tokens (>= 0).
    period : float, optional
        Length of a budget period in seconds: the budget renews at every multiple of
        ``period`` since the epoch (so replicas and restarts agree on boundaries). None: one
        period for the book's whole life (a batch run).
    spent : int
        Tokens already spent in the current period (a resumed run).
    clock : callable, optional
        Wall clock in seconds (default :func:`time.time`); tests pass a fake one.
    on_lapse : {'spend', 'release'}
        What a reservation that lapses costs: its whole allowance (default), or nothing (its
        tokens return to the pool).

    Notes
    -----
    Every method takes a lock, so a book is also safe across threads.
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
        self._total = check_tokens("total", total)
        self.on_lapse = check_on_lapse(on_lapse)
        if period is not None and not (isinstance(period, (int, float)) and period > 0):
            raise LedgerError(f"period must be a positive number of seconds, got {period!r}")
        self.period = None if period is None else float(period)
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._periods: dict[int, _Period] = {}
        self._open: dict[str, Reservation] = {}
        # (expires_at, id) of reservations with a TTL; renewed or closed ones stay until popped.
        self._expiry: list[tuple[float, str]] = []
        self._settled: dict[str, int] = {}  # id -> period, for idempotent settling
        self._lapsed: dict[str, Reservation] = {}  # lapsed and charged, not yet settled
        self._periods[self._index(self._clock())] = _Period(spent=check_tokens("spent", spent))
        # Reservation ids: a random prefix per book and a counter (unique across the runs
        # that share a journal, and cheaper than a uuid per request).
        self._prefix = secrets.token_hex(8)
        self._ids = itertools.count()

    @property
    def total(self) -> int:
        """Budget per period, tokens."""
        return self._total

    def _index(self, now: float) -> int:
        return 0 if self.period is None else int(now // self.period)

    def _tick(self) -> tuple[int, _Period, float]:
        """Expire what has lapsed; the current period's index and books, and the time read
        (once, so that a reservation's period and expiry belong to the same instant)."""
        now = self._clock()
        if self._expiry:
            self._expire(now)
        if self.period is None:  # one period
            return 0, self._periods[0], now
        index = self._index(now)
        return index, self._book(index), now

    def _book(self, index: int) -> _Period:
        book = self._periods.get(index)
        if book is None:
            book = self._periods[index] = _Period()
            for old in sorted(self._periods)[:-_PERIODS_KEPT]:
                del self._periods[old]
            self._settled = {k: p for k, p in self._settled.items() if p in self._periods}
            self._lapsed = {k: r for k, r in self._lapsed.items() if r.period in self._periods}
        return book

    def _expire(self, now: float) -> None:
        """Close reservations whose TTL has passed (O(lapsed log n)): charged in full, or
        their tokens returned (``on_lapse``)."""
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            r = self._open.get(rid)
            if r is None or r.expires_at is None or r.expires_at > now:
                continue  # settled, or renewed (its new expiry has its own entry)
            del self._open[rid]
            book = self._periods.get(r.period)
            if book is not None:
                book.reserved -= r.tokens
                if self.on_lapse == "spend":
                    book.spent += r.tokens
                    book.lapsed += r.tokens
                    self._lapsed[rid] = r

    def reserve(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        """See :meth:`shadowprice.ledger.Ledger.reserve`."""
        want, least = check_reservation(tokens, min_tokens, ttl)
        with self._lock:
            index, book, now = self._tick()
            free = self._total - book.spent - book.reserved
            grant = min(want, free)
            if grant < least:
                return None
            book.reserved += grant
            res = Reservation(
                id=f"{self._prefix}{next(self._ids):x}",
                tokens=grant,
                period=index,
                tag=tag,
                expires_at=None if ttl is None else now + ttl,
            )
            self._open[res.id] = res
            if res.expires_at is not None:
                heapq.heappush(self._expiry, (res.expires_at, res.id))
            return res

    def settle(self, reservation: Reservation, used: int) -> Settlement:
        """See :meth:`shadowprice.ledger.Ledger.settle`."""
        used = check_tokens("used", used)
        with self._lock:
            if self._expiry:  # a reservation past its TTL settles as lapsed
                self._expire(self._clock())
            if reservation.id in self._settled:
                return Settlement(0, "duplicate")
            book = self._periods.get(reservation.period)
            open_ = self._open.pop(reservation.id, None)
            lapsed = self._lapsed.pop(reservation.id, None)
            self._settled[reservation.id] = reservation.period
            if book is None:  # a period we no longer keep: nothing left to charge against
                return Settlement(used, "late", used)
            if lapsed is not None:  # charged in full when it lapsed: correct to the real use
                book.spent += used - lapsed.tokens
                book.lapsed -= lapsed.tokens
                over = max(0, used - lapsed.tokens)
                book.overrun += over
                return Settlement(used, "late", over)
            if open_ is None:  # expired: its tokens went back to the pool already
                book.spent += used
                book.overrun += used
                return Settlement(used, "late", used)
            book.reserved -= open_.tokens
            book.spent += used
            over = max(0, used - open_.tokens)
            book.overrun += over
            return Settlement(used, "settled", over)

    def release(self, reservation: Reservation) -> Settlement:
        """See :meth:`shadowprice.ledger.Ledger.release`."""
        return self.settle(reservation, 0)

    def extend(self, reservation: Reservation, ttl: float) -> Reservation | None:
        """See :meth:`shadowprice.ledger.Ledger.extend`."""
        if not ttl > 0:
            raise LedgerError(f"ttl must be a positive number of seconds, got {ttl!r}")
        with self._lock:
            now = self._clock()
            self._expire(now)
            held = self._open.get(reservation.id)
            if held is None:
                return None
            renewed = self._open[reservation.id] = replace(held, expires_at=now + ttl)
            heapq.heappush(self._expiry, (now + ttl, reservation.id))
            return renewed

    def state(self) -> LedgerState:
        """See :meth:`shadowprice.ledger.Ledger.state`."""
        with self._lock:
            index, book, _ = self._tick()
            return LedgerState(
                self._total, book.spent, book.reserved, book.overrun, index, book.lapsed
            )

    def available(self) -> int:
        """Tokens neither spent nor reserved now (``state().available``, without building the
        state: a driver asks before every request)."""
        with self._lock:
            _, book, _ = self._tick()
            return max(0, self._total - book.spent - book.reserved)

    def __repr__(self) -> str:
        s = self.state()
        return (
            f"Book(total={s.total}, spent={s.spent}, reserved={s.reserved}, period={self.period})"
        )


class _HasBook(type):
    def __instancecheck__(cls, obj: object) -> bool:
        # Asks the object itself: a ledger whose books may live elsewhere (a journal over a
        # shared budget) answers that it has none. A runtime protocol cannot ask: since
        # Python 3.12 it looks the attribute up statically and finds the property.
        return isinstance(getattr(obj, "book", None), Book)


class InProcess(metaclass=_HasBook):
    """A ledger whose books are kept in this process (memory, an unshared journal): their
    synchronous :class:`Book` is at hand (an optional capability, checked with isinstance).

    Attributes
    ----------
    book : Book
        The books, for synchronous callers.
    """

    book: Book
