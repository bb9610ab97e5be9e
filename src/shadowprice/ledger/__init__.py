"""The one place that knows how many tokens are reserved, settled and left.

Every spender (``run`` workers, the live policy, gateway replicas) follows one protocol:
reserve a request's allowance *before* it is sent, settle with the tokens it generated after
it returns; the unused part flows back. Implementations share :class:`Ledger`:

- :class:`MemoryLedger`: in-process, optional periods and reservation expiry;
- :class:`JournalLedger`: in-process with a write-ahead journal on disk (a crashed ``run``
  resumes without forgetting what it had in flight);
- :class:`RedisLedger` (``shadowprice.ledger.redis``): one budget shared by many processes
  and machines through atomic Lua scripts.
"""

from .base import (
    LAPSE_POLICIES,
    Ledger,
    LedgerError,
    LedgerState,
    OnLapse,
    Reservation,
    Settlement,
    SharedLedger,
)
from .journal import JournalLedger, JournalMismatch, Recovery
from .memory import MemoryLedger

__all__ = [
    "LAPSE_POLICIES",
    "JournalLedger",
    "JournalMismatch",
    "Ledger",
    "LedgerError",
    "LedgerState",
    "MemoryLedger",
    "OnLapse",
    "Recovery",
    "Reservation",
    "Settlement",
    "SharedLedger",
]
