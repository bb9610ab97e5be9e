"""The one place that knows how many tokens are reserved, settled and left.

Every spender (``run`` workers, the live policy, gateway replicas) follows one protocol:
reserve a request's allowance *before* it is sent, settle with the tokens it generated after
it returns; the unused part flows back. The accounting is one synchronous
:class:`Book` (no I/O); the implementations of the async :class:`Ledger` protocol differ in
where it lives:

- :class:`MemoryLedger`: in-process, optional periods and reservation expiry;
- :class:`JournalLedger`: in-process with a write-ahead journal on disk (a crashed ``run``
  resumes without forgetting what it had in flight);
- :class:`RedisLedger` (``shadowprice.ledger.redis``): one budget shared by many processes
  and machines through atomic Lua scripts.

Optional capabilities are protocols checked with ``isinstance``: :class:`InProcess` (a
:class:`Book` at hand for synchronous callers), :class:`Recoverable` (a journal: what a crash
left, what this run charged), :class:`Periodic` (a budget that renews every period) and
:class:`SharedLedger` (a value every process agrees on).
"""

from .base import (
    LAPSE_POLICIES,
    Ledger,
    LedgerError,
    LedgerState,
    OnLapse,
    Periodic,
    Recoverable,
    Recovery,
    Reservation,
    Settlement,
    SharedLedger,
)
from .book import Book, InProcess
from .journal import JournalLedger, JournalMismatch
from .memory import MemoryLedger

__all__ = [
    "LAPSE_POLICIES",
    "Book",
    "InProcess",
    "JournalLedger",
    "JournalMismatch",
    "Ledger",
    "LedgerError",
    "LedgerState",
    "MemoryLedger",
    "OnLapse",
    "Periodic",
    "Recoverable",
    "Recovery",
    "Reservation",
    "Settlement",
    "SharedLedger",
]
