"""The ledger protocol: reserve before sending, settle after, expire what was abandoned.

Guarantee every implementation keeps: within one period, ``spent + reserved <= total`` after
every successful :meth:`Ledger.reserve`. A request is sent with ``max_tokens`` no larger than
its reservation, so as long as servers honour ``max_tokens`` and reservations are settled
before they expire, the tokens settled in a period never exceed its budget. What breaks that
promise (a server generating more than it was allowed, a settlement arriving after its
reservation expired and its tokens were handed to someone else) is charged in full and counted
in :attr:`LedgerState.overrun`: the ledger never under-reports spending.

**A reservation that lapses is spent.** A reservation whose holder stops renewing it (the
process died, its task ended without settling) lapses after its TTL. Nobody can say what the
request it covered went on to generate: a model server may finish every token of a request
whose gateway is gone. So by default (``on_lapse="spend"``) a lapsed reservation is charged
in full (:attr:`LedgerState.lapsed`), and a settlement that arrives later corrects the charge
to what was really generated. ``on_lapse="release"`` gives the tokens back to the pool
instead: more tokens for others, at the price of an overspend whenever the lost request did
generate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

#: What happens to a reservation that lapses (see the module docstring).
OnLapse = Literal["spend", "release"]
LAPSE_POLICIES: tuple[OnLapse, ...] = ("spend", "release")


class LedgerError(RuntimeError):
    """A ledger operation was misused (negative tokens) or the store is unreachable."""


@dataclass(frozen=True)
class Reservation:
    """Tokens set aside for one request.

    Attributes
    ----------
    id : str
        Unique id (settling is idempotent per id).
    tokens : int
        Tokens reserved: the request's ``max_tokens``.
    period : int
        Index of the budget period the tokens are charged to (0 without periods).
    tag : str
        Free text for logs and journals (e.g. the query id).
    expires_at : float or None
        Wall-clock time (seconds since the epoch) after which the reservation lapses (charged
        in full, or given back with ``on_lapse="release"``); None = never.
    """

    id: str
    tokens: int
    period: int = 0
    tag: str = ""
    expires_at: float | None = None


SettleStatus = Literal["settled", "late", "duplicate"]


@dataclass(frozen=True)
class Settlement:
    """What settling a reservation did.

    Attributes
    ----------
    charged : int
        Tokens charged by this call (0 for a duplicate).
    status : {'settled', 'late', 'duplicate'}
        ``settled``: the reservation was open and is now closed; ``late``: it had expired (its
        tokens had already returned to the pool), the usage is charged anyway; ``duplicate``:
        it was settled before, nothing charged.
    overrun : int
        Tokens charged beyond what the reservation held (a server that ignored
        ``max_tokens``, or a late settlement).
    """

    charged: int
    status: SettleStatus
    overrun: int = 0


@dataclass(frozen=True)
class LedgerState:
    """Totals of one period.

    Attributes
    ----------
    total : int
        Budget of the period, tokens.
    spent : int
        Tokens settled (charged) in the period.
    reserved : int
        Tokens held by open reservations.
    overrun : int
        Tokens charged beyond reservations (see the module docstring).
    period : int
        Index of the period these totals belong to.
    lapsed : int
        Tokens of lapsed reservations charged in full (part of ``spent``; see the module
        docstring), not yet corrected by a late settlement.
    """

    total: int
    spent: int
    reserved: int
    overrun: int = 0
    period: int = 0
    lapsed: int = 0

    @property
    def available(self) -> int:
        """Tokens neither spent nor reserved (never negative)."""
        return max(0, self.total - self.spent - self.reserved)

    def as_dict(self) -> dict[str, int]:
        """JSON-ready totals, ``available`` included."""
        return {
            "total": self.total,
            "spent": self.spent,
            "reserved": self.reserved,
            "available": self.available,
            "overrun": self.overrun,
            "lapsed": self.lapsed,
            "period": self.period,
        }


@runtime_checkable
class Ledger(Protocol):
    """A token budget shared by everything that spends it (see the module docstring)."""

    @property
    def total(self) -> int:
        """Budget per period, tokens."""
        ...

    async def reserve(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        """Set aside ``tokens``, or as many as are left if that is at least ``min_tokens``.

        Parameters
        ----------
        tokens : int
            Tokens wanted (> 0).
        min_tokens : int, optional
            Accept a smaller grant down to this many tokens; default: all or nothing.
        tag : str
            Recorded with the reservation.
        ttl : float, optional
            Seconds after which an unsettled reservation lapses (see the module docstring).

        Returns
        -------
        Reservation or None
            None when not even ``min_tokens`` (or ``tokens``) fit in the current period.
        """
        ...

    async def settle(self, reservation: Reservation, used: int) -> Settlement:
        """Charge ``used`` tokens (what the request generated) and free the rest."""
        ...

    async def release(self, reservation: Reservation) -> Settlement:
        """Give a reservation back unused (the request was never sent)."""
        ...

    async def extend(self, reservation: Reservation, ttl: float) -> Reservation | None:
        """Keep an open reservation ``ttl`` seconds longer from now (a request still running).

        A holder that stops renewing (its task was cancelled, its process died) lets the
        reservation lapse (see the module docstring). A reservation made without a ``ttl``
        gets one.

        Returns
        -------
        Reservation or None
            The reservation with its new ``expires_at``; None when it is no longer open (settled,
            released or lapsed: settling a lapsed one later is charged as ``late``).
        """
        ...

    async def state(self) -> LedgerState:
        """Totals of the current period."""
        ...

    async def aclose(self) -> None:
        """Release connections and files."""
        ...


@dataclass(frozen=True)
class Recovery:
    """What reopening a journal found.

    Attributes
    ----------
    settled : int
        Tokens settled by earlier runs (what their requests generated).
    unsettled : int
        Reservations left open by a crash (requests that may or may not have been billed).
    unsettled_tokens : int
        Tokens those reservations held.
    counted : int
        Of those, tokens counted as spent (all of them unless ``release_unsettled``).
    by_tag : dict
        ``tag -> tokens`` charged to each reservation tag (e.g. a query id) by earlier runs,
        ``counted`` included: who spent what the resumed run starts with.
    """

    settled: int = 0
    unsettled: int = 0
    unsettled_tokens: int = 0
    counted: int = 0
    by_tag: Mapping[str, int] = field(default_factory=dict)

    @property
    def spent(self) -> int:
        """Tokens the resumed run starts with as spent."""
        return self.settled + self.counted


# Optional capabilities (with InProcess in .book). A ledger declares one by having it;
# callers check with isinstance.


@runtime_checkable
class SharedLedger(Protocol):
    """What a ledger shared by several processes adds (Redis): one value (the price) that
    every process agrees on."""

    async def agree(self, value: float, hold: float) -> float:
        """Publish ``value`` unless another process published one in the last ``hold``
        seconds; return the value every process now shares."""
        ...


@runtime_checkable
class Periodic(Protocol):
    """A ledger whose budget renews every period (memory, Redis; a journal accounts one run)."""

    @property
    def period(self) -> float | None:
        """Length of a budget period in seconds (None: one period for the ledger's life)."""
        ...


@runtime_checkable
class Recoverable(Protocol):
    """A ledger that outlives its process (the journal): what earlier runs left, and what
    this run has charged."""

    @property
    def charged(self) -> int:
        """Tokens this run has charged, earlier runs of the same journal included (not other
        workers' spending in a shared budget)."""
        ...

    async def recover(self) -> Recovery:
        """Account for what a crash left open (call once, before spending); what was found."""
        ...


def check_on_lapse(value: str) -> OnLapse:
    """Validate a lapse policy (see the module docstring)."""
    if value not in LAPSE_POLICIES:
        raise LedgerError(f"on_lapse must be 'spend' or 'release', got {value!r}")
    return value


def check_tokens(name: str, value: int, *, minimum: int = 0) -> int:
    """Validate a token count at the ledger's boundary."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LedgerError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_reservation(tokens: int, min_tokens: int | None, ttl: float | None) -> tuple[int, int]:
    """Validate :meth:`Ledger.reserve`'s arguments; (tokens wanted, least accepted)."""
    want = check_tokens("tokens", tokens, minimum=1)
    least = want if min_tokens is None else check_tokens("min_tokens", min_tokens, minimum=1)
    if least > want:
        raise LedgerError(f"min_tokens {least} exceeds tokens {want}")
    if ttl is not None and not ttl > 0:
        raise LedgerError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return want, least
