"""Global token-budget accounting: reserve before a request is sent, settle with usage after.

The ledger is the single place that enforces the run's promise: the completion tokens of all
requests (first tries, retries, forced follow-ups, fallbacks) never sum past the budget.
A request may only be sent with ``max_tokens`` equal to a reservation it holds, so the server
cannot return more than was reserved; settling returns the unused part to the free pool.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class BudgetExhausted(RuntimeError):
    """Raised when a reservation does not fit in what is left of the budget."""


@dataclass
class Reservation:
    """Tokens set aside for one request; settled exactly once."""

    tokens: int
    tag: str = ""
    settled: bool = field(default=False, repr=False)


class TokenLedger:
    """Accounts completion tokens against a fixed total.

    Invariant: ``spent + reserved <= total`` at all times, unless a server returned more
    tokens than it was allowed (recorded honestly in :attr:`overrun`, never hidden).
    """

    def __init__(self, total: int, *, already_spent: int = 0) -> None:
        if total < 0:
            raise ValueError(f"budget must be >= 0, got {total}")
        if already_spent > total:
            raise ValueError(f"already spent {already_spent} tokens exceeds the budget {total}")
        self.total = int(total)
        self.spent = int(already_spent)
        self.reserved = 0
        self.overrun = 0
        self._lock = threading.Lock()  # cheap; lets sync and async callers share one ledger

    @property
    def available(self) -> int:
        """Tokens neither spent nor reserved."""
        return self.total - self.spent - self.reserved

    def reserve(self, tokens: int, tag: str = "") -> Reservation:
        """Set ``tokens`` aside, or raise :class:`BudgetExhausted` if they do not fit."""
        res = self.try_reserve(tokens, tag)
        if res is None:
            raise BudgetExhausted(
                f"cannot reserve {tokens} tokens for {tag or 'request'}: "
                f"{self.available} of {self.total} left"
            )
        return res

    def try_reserve(self, tokens: int, tag: str = "") -> Reservation | None:
        """Set ``tokens`` aside if they fit; return None otherwise."""
        if tokens < 0:
            raise ValueError(f"cannot reserve a negative amount ({tokens})")
        with self._lock:
            if tokens > self.total - self.spent - self.reserved:
                return None
            self.reserved += tokens
        return Reservation(tokens=int(tokens), tag=tag)

    def settle(self, res: Reservation, used: int) -> int:
        """Charge ``used`` tokens against ``res`` and free the rest; returns the charge.

        A server that returns more than it was allowed is charged in full (honest accounting)
        and the excess is added to :attr:`overrun`.
        """
        if res.settled:
            raise RuntimeError(f"reservation {res.tag!r} settled twice")
        if used < 0:
            raise ValueError(f"negative usage {used}")
        with self._lock:
            res.settled = True
            self.reserved -= res.tokens
            self.spent += used
            self.overrun += max(0, used - res.tokens)
        return used

    def release(self, res: Reservation) -> None:
        """Give a reservation back unused (the request was never answered)."""
        self.settle(res, 0)

    def snapshot(self) -> dict[str, int]:
        """Current totals, for summaries and progress displays."""
        return {
            "total": self.total,
            "spent": self.spent,
            "reserved": self.reserved,
            "available": self.available,
            "overrun": self.overrun,
        }
