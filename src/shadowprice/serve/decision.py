"""The decision for one request: price its curve, reserve its allowance, settle what it used.

No HTTP here: :class:`Decider` is what the gateway calls around forwarding, and what the
benchmark times on its own ("the decision itself"). It is the asynchronous adapter between
the ledgers (in-process or Redis: they enforce the budget) and the synchronous, I/O-free
decision core :class:`~shadowprice.online.DecisionCore` (price, pacing, rationing, refusal
kinds and waits), the same core the traffic simulator drives. A tenant with its own budget
reserves in its own ledger too (both or neither).

**Reservations lapse unless renewed.** Every reservation is made with a TTL; the gateway calls
:meth:`Decider.renew` every third of it, which extends the reservations of requests whose task
is still running. A request whose task ended without settling (cancelled, crashed) is not
renewed, so its reservation lapses, in process as in Redis (where a replica that died stops
renewing the same way), and is charged in full (the ledger's default: its server may have
generated every token). A host whose hooks run in other tasks than the
decision (the LiteLLM plugin) decides with ``track=False`` and settles or :meth:`Decider.abandon`
s each grant itself.

**Floors.** A class with a floor is never priced out. So that it still gets tokens when the
period's budget is spent, a share of each period can be kept for floor requests
(``floor_ledger``): they reserve there first and in the shared budget when it is used up;
other requests only see the shared budget.

**Store outages.** A :class:`~shadowprice.ledger.LedgerError` from the shared ledger refuses
the request (``unavailable``, HTTP 503) unless the decider fails open. Failing open must not
let the replicas together pass the budget, and no replica can know what the others did just
before the store went away; so a replica that fails open *holds* its outage tokens ahead of
time: a standing reservation of ``fail_open_budget`` tokens in the shared ledger (its float,
renewed with the other reservations and taken anew each period), which nobody else can grant.
While the store is away the replica serves from an in-process ledger holding exactly its
float; when the store answers again the float is settled with what was used meanwhile (its
reservation may have lapsed during the outage and been charged in full: the late settlement
corrects it). A replica that never reached the store holds no float: it refuses until the
store answers. The cost: each replica's float is not available to ordinary requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..ledger import (
    Ledger,
    LedgerError,
    LedgerState,
    MemoryLedger,
    Periodic,
    Reservation,
    SharedLedger,
)
from ..online import DecisionCore, Offer, Ticket

log = logging.getLogger("shadowprice.serve")

__all__ = ["Decider", "Grant", "Refusal"]

GrantStatus = Literal["granted", "floor", "fallback"]
RefusalKind = Literal["priced_out", "budget_exhausted", "cap_too_small", "unavailable"]
#: Message of a refusal while the shared ledger cannot be reached (its address stays in logs).
_AWAY = "the budget ledger is unavailable; retry shortly"


@dataclass(eq=False)
class Grant:
    """A request that may be forwarded.

    Attributes
    ----------
    allowance : int
        Tokens reserved: the ``max_tokens`` to send.
    price : float
        Shadow price of the decision.
    status : {'granted', 'floor', 'fallback'}
    tau_hat : float
        Predicted threshold (before the prior's correction), tokens.
    holds : list of (Ledger, Reservation)
        The reservations to settle (the gateway's, and the tenant's where it has a budget).
    ticket : Ticket, optional
        The decision core's record of the grant.
    settled : bool
        Settled already (settling again charges nothing).
    """

    allowance: int
    price: float
    status: GrantStatus
    tau_hat: float
    holds: list[tuple[Ledger, Reservation]] = field(default_factory=list)
    ticket: Ticket | None = None
    settled: bool = False


@dataclass(frozen=True)
class Refusal:
    """A request that is not forwarded.

    Attributes
    ----------
    kind : {'priced_out', 'budget_exhausted', 'cap_too_small', 'unavailable'}
    message : str
    price : float
    retry_after : int or None
        Seconds a client should wait before retrying; None when waiting will not help
        (``cap_too_small``: the request itself must change).
    """

    kind: RefusalKind
    message: str
    price: float
    retry_after: int | None


class Decider:
    """Prices, reserves and settles requests against one budget.

    Parameters
    ----------
    core : DecisionCore
        Decides each request (its pricer holds the shared budget's total and period).
    ledger : Ledger
        The shared budget (``total`` per period).
    floor_ledger : Ledger, optional
        Tokens kept each period for requests with a floor (see the module docstring).
    tenant_ledgers : dict of str to Ledger, optional
        Budgets of tenants that have their own.
    ttl : float
        Reservation lifetime in seconds without renewal (> 0).
    fail_open : bool
        Serve from this replica's float while ``ledger`` raises :class:`LedgerError` (see the
        module docstring); else refuse (``unavailable``).
    fail_open_budget : int
        Tokens of the float held in ``ledger`` each period (with ``fail_open``; > 0).
    clock : callable
        Wall clock, seconds since the epoch.
    """

    def __init__(
        self,
        core: DecisionCore,
        ledger: Ledger,
        *,
        floor_ledger: Ledger | None = None,
        tenant_ledgers: dict[str, Ledger] | None = None,
        ttl: float = 120.0,
        fail_open: bool = False,
        fail_open_budget: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.core = core
        self.ledger = ledger
        self.floor_ledger = floor_ledger
        self.tenant_ledgers = dict(tenant_ledgers or {})
        self.ttl = float(ttl)
        if fail_open and not fail_open_budget > 0:
            raise ValueError("fail_open needs a positive fail_open_budget (the float)")
        self.fail_open = bool(fail_open)
        self.fail_open_budget = int(fail_open_budget)
        self.tick = core.tick
        self.clock = clock
        self.store_ok = True
        #: The float held in the shared ledger for an outage (fail open), once taken.
        self.float: Reservation | None = None
        #: The in-process ledger serving from the float during an outage, else None.
        self.local: MemoryLedger | None = None
        #: Totals of the shared budget (and of the floor share) at the latest refresh.
        self.state: LedgerState | None = None
        self.floor_state: LedgerState | None = None
        # Open grants and the task of the request that holds each (see renew()).
        self._open: dict[Grant, asyncio.Task[object] | None] = {}

    @property
    def ledgers(self) -> list[Ledger]:
        """Every ledger the decider reserves in (each once)."""
        found = [self.ledger, self.floor_ledger, *self.tenant_ledgers.values(), self.local]
        return list({id(x): x for x in found if x is not None}.values())

    @property
    def price(self) -> float:
        """The price decisions are taken at."""
        return self.core.price

    def refuse(self, kind: RefusalKind, message: str) -> Refusal:
        """A refusal of the adapter's own (a tenant's spent budget, an unreachable store) at
        the current price, with the wait the core gives."""
        wait_as = "budget_exhausted" if kind == "budget_exhausted" else "priced_out"
        wait = self.core.retry_after(self.clock(), wait_as)
        return Refusal(kind, message, self.core.price, wait)

    # -- one request --------------------------------------------------------------------------
    async def decide(
        self,
        tau_hat: float,
        cap: int,
        *,
        floor: int = 0,
        tenant: str | None = None,
        track: bool = True,
    ) -> Grant | Refusal:
        """Decide (the core), then reserve; never forwards anything itself.

        Parameters
        ----------
        tau_hat : float
            Predicted threshold, tokens.
        cap : int
            The client's ``max_tokens`` after the ceiling.
        floor : int
            Guaranteed tokens of the request's class or tenant.
        tenant : str, optional
            Tenant name (its own budget is reserved too when it has one).
        track : bool
            Tie the grant to the calling task (see :meth:`renew`). False: the caller owns its
            lifetime (a host whose hooks run in other tasks): it is renewed until settled or
            :meth:`abandon` ed.
        """
        now = self.clock()
        offer = self.core.arrive(now, tau_hat, cap, floor)
        if not offer.admitted:
            return _refusal(offer)
        holds = await self._reserve(offer.allowance, offer.least, floor > 0, tenant)
        if holds is None:  # the shared budget could not hold even the least
            return _refusal(self.core.refused_by_ledger(now, offer))
        if isinstance(holds, Refusal):
            self.core.dropped(offer)
            return holds
        allowance = min(r.tokens for _, r in holds)
        shared = [(led, r) for led, r in holds if self._shared_pool(led)]
        ticket = self.core.granted(
            offer,
            allowance,
            held=shared[0][1].tokens if shared else allowance,
            period=shared[0][1].period if shared and shared[0][0] is self.ledger else None,
        )
        status: GrantStatus = offer.status  # type: ignore[assignment]  # admitted: a grant kind
        grant = Grant(allowance, offer.price, status, tau_hat, holds, ticket)
        self._open[grant] = asyncio.current_task() if track else None
        return grant

    async def _reserve(
        self, allowance: int, least: int, has_floor: bool, tenant: str | None
    ) -> list[tuple[Ledger, Reservation]] | Refusal | None:
        """Reserve in the tenant's budget (if it has one), then in the floor share (floor
        requests) or the shared budget; all or nothing. None: the shared budget (or floor
        share) could not hold ``least``."""
        holds: list[tuple[Ledger, Reservation]] = []
        own = self.tenant_ledgers.get(tenant) if tenant is not None else None
        if own is not None:
            got = await self._hold(own, allowance, least)
            if not isinstance(got, tuple):
                return got or self.refuse(
                    "budget_exhausted", f"tenant {tenant!r} has spent its budget for this period"
                )
            holds.append(got)
            allowance, least = got[1].tokens, min(least, got[1].tokens)
        pools = [self.ledger]
        if has_floor and self.floor_ledger is not None:
            pools.insert(0, self.floor_ledger)
        for pool in pools:  # a floor share that is spent (or away) leaves the shared budget
            got = await self._hold(pool, allowance, least)
            if isinstance(got, tuple):
                break
        if not isinstance(got, tuple):
            for led, r in holds:
                await self._quiet_release(led, r)
            return got
        holds.append(got)
        return holds

    async def _hold(
        self, ledger: Ledger, tokens: int, least: int
    ) -> tuple[Ledger, Reservation] | Refusal | None:
        """One reservation; the fail-open ledger stands in for an unreachable shared one."""
        try:
            res = await ledger.reserve(tokens, min_tokens=least, ttl=self.ttl)
        except LedgerError as exc:
            self._away(exc)
            local = self._fallback() if ledger is self.ledger else None
            if local is None:
                return self.refuse("unavailable", _AWAY)
            ledger = local
            res = await ledger.reserve(tokens, min_tokens=least, ttl=self.ttl)
        else:
            self.store_ok = True
        return None if res is None else (ledger, res)

    def _away(self, exc: Exception) -> None:
        """Note that the shared store did not answer (logged once per outage)."""
        if self.store_ok:
            log.error("budget ledger unreachable: %s", exc)
        self.store_ok = False

    def _fallback(self) -> MemoryLedger | None:
        """The in-process ledger of this outage, holding the float (made on first need), or
        None when this replica cannot fail open now (no float for the current period)."""
        if not self.fail_open:
            return None
        if self.local is not None:
            return self.local
        held = self.float
        period = self.ledger.period if isinstance(self.ledger, Periodic) else None
        index = int(self.clock() // period) if period else 0
        if held is None or held.period != index:
            log.error(
                "budget ledger unreachable and no outage float held for this period: "
                "refusing requests until it answers"
            )
            return None
        self.local = MemoryLedger(held.tokens, clock=self.clock)
        log.error(
            "serving from this replica's outage float of %d tokens until the ledger answers",
            held.tokens,
        )
        return self.local

    async def _keep_float(self, state: LedgerState) -> None:
        """Settle an outage's use of the float; hold a float in the current period."""
        local, self.local = self.local, None
        held = self.float
        if local is not None and held is not None:
            used = local.state_now()
            await self.ledger.settle(held, used.spent + used.reserved)
            log.warning(
                "budget ledger reachable again: %d tokens of the float used meanwhile",
                used.spent + used.reserved,
            )
            self.float = held = None
        if held is not None and held.period != state.period:
            await self.ledger.release(held)  # last period's: its tokens are of no use now
            self.float = held = None
        if held is None:
            self.float = await self.ledger.reserve(
                self.fail_open_budget, min_tokens=1, tag="fail-open float", ttl=self.ttl
            )

    async def _quiet_release(self, ledger: Ledger, res: Reservation) -> None:
        try:
            await ledger.release(res)
        except LedgerError:
            pass  # the reservation lapses after its TTL (charged in full: nothing was sent)

    def _shared_pool(self, ledger: Ledger) -> bool:
        """Whether ``ledger`` holds the shared budget (or an outage's local part of it)."""
        return ledger is not self.floor_ledger and all(
            ledger is not t for t in self.tenant_ledgers.values()
        )

    async def settle(self, grant: Grant, used: int, finish_reason: str = "stop") -> int:
        """Charge ``used`` tokens to every reservation of ``grant`` (once) and teach the prior.

        Returns the tokens charged. A store that is away leaves the reservation to lapse.
        """
        if grant.settled:
            return 0
        grant.settled = True
        self._open.pop(grant, None)
        used = max(0, int(used))
        for ledger, res in grant.holds:
            try:
                await ledger.settle(res, used)
            except LedgerError as exc:
                self._away(exc)
        if grant.ticket is not None:
            self.core.settled(grant.ticket, used, finish_reason)
        return used

    def abandon(self, grant: Grant) -> None:
        """Stop renewing an unsettled grant whose request will not report back: its
        reservations lapse (charged in full, unless the budget releases lapsed tokens)."""
        if grant.settled or self._open.pop(grant, False) is False:
            return
        if grant.ticket is not None:
            self.core.lapsed(grant.ticket)

    # -- background work ------------------------------------------------------------------------
    async def renew(self) -> int:
        """Extend the reservations of grants whose request is still running (see the module
        docstring); forget the others, whose reservations lapse. Returns the grants renewed."""
        running = []
        for grant, task in list(self._open.items()):
            if task is not None and task.done():
                del self._open[grant]  # ended without settling: let its reservation lapse
                if grant.ticket is not None:
                    self.core.lapsed(grant.ticket)
            else:
                running.append(grant)
        for grant in running:
            for ledger, res in grant.holds:
                try:
                    await ledger.extend(res, self.ttl)
                except LedgerError as exc:
                    self._away(exc)
        if self.float is not None and self.local is None:
            await self._renew_float(self.float)
        return len(running)

    async def aclose(self) -> None:
        """Give back the outage float (an orderly shutdown), then close every ledger."""
        held, self.float = self.float, None
        if held is not None and self.local is None:
            await self._quiet_release(self.ledger, held)
        for led in self.ledgers:
            await led.aclose()

    async def _renew_float(self, held: Reservation) -> None:
        try:
            if await self.ledger.extend(held, self.ttl) is None:
                # It lapsed (a stalled loop) and was charged in full: nothing was used.
                await self.ledger.settle(held, 0)
                self.float = None
        except LedgerError as exc:
            self._away(exc)

    async def refresh(self) -> float:
        """One price update from the ledger's totals (all replicas); returns the price.

        A replica that fails open also keeps its float (see the module docstring). With a
        shared ledger that agrees on values (Redis) the first replica to publish a price
        within a tick sets the price every replica uses.
        """
        shared = self.ledger if isinstance(self.ledger, SharedLedger) else None
        try:
            state = await self.ledger.state()
            if self.floor_ledger is not None:
                self.floor_state = await self.floor_ledger.state()
            if self.fail_open:
                await self._keep_float(state)
            self.store_ok = True
        except LedgerError as exc:
            self._away(exc)
            local = self._fallback()
            if local is None:
                return self.core.price
            state = local.state_now()
        else:
            self.state = state
        price = self.core.update(self.clock(), state.spent, state.reserved, state.period)
        if shared is not None and self.store_ok:
            try:
                price = self.core.agree(await shared.agree(price, self.tick))
            except LedgerError as exc:
                self._away(exc)
        return price


def _refusal(offer: Offer) -> Refusal:
    """The core's refusal as the gateway answers it."""
    kind: RefusalKind = offer.status  # type: ignore[assignment]  # not admitted: a refusal kind
    return Refusal(kind, offer.message, offer.price, offer.retry_after)
