"""The decision for one request: price its curve, reserve its allowance, settle what it used.

No HTTP here: :class:`Decider` is what the gateway calls around forwarding, and what the
benchmark times on its own ("the decision itself"). The price comes from
:class:`~shadowprice.online.OnlinePricer`; the ledger (in-process or Redis) enforces the budget.
A tenant with its own budget reserves in its own ledger too (both or neither).

**Reservations lapse unless renewed.** Every reservation is made with a TTL; the gateway calls
:meth:`Decider.renew` every third of it, which extends the reservations of requests whose task
is still running. A request whose task ended without settling (cancelled, crashed) is not
renewed, so its reservation lapses and its tokens return, in process as in Redis (where a
replica that died stops renewing the same way).

**Floors.** A class with a floor is never priced out. So that it still gets tokens when the
period's budget is spent, a share of each period can be kept for floor requests
(``floor_ledger``): they reserve there first and in the shared budget when it is used up;
other requests only see the shared budget.

**Store outages.** A :class:`~shadowprice.ledger.LedgerError` from the shared ledger refuses
the request (``unavailable``, HTTP 503) unless the decider fails open: then a per-replica
in-process ledger takes over until the store answers again. So that the replicas together stay
within the budget, each takes its share of what was left: with N replicas alive at the last
heartbeat (:meth:`~shadowprice.ledger.SharedLedger.heartbeat`), a replica may spend 1/N of
the period's tokens not yet spent or reserved, and 1/N of the budget in each later period of
the outage. When the store answers again, what the replica spent or holds locally is booked
there (:meth:`~shadowprice.ledger.SharedLedger.book`, once), so the shared books count it. A
replica that never reached the store knows neither N nor what was spent: it refuses until the
store answers, unless given an explicit ``fail_open_budget`` (per replica, per period: the
replicas together may then spend N times it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..ledger import Ledger, LedgerError, LedgerState, MemoryLedger, Reservation, SharedLedger
from ..online import OnlinePricer

log = logging.getLogger("shadowprice.serve")

__all__ = ["Decider", "Grant", "Refusal"]

GrantStatus = Literal["granted", "floor", "fallback"]
RefusalKind = Literal["priced_out", "budget_exhausted", "unavailable"]

#: Message of a refusal for an empty budget.
_SPENT = "the token budget of this period is spent; retry after it"
#: Message of a refusal while the shared ledger cannot be reached (its address stays in logs).
_AWAY = "the budget ledger is unavailable; retry shortly"
#: Seconds a replica counts as alive after its last heartbeat (several price ticks).
HEARTBEAT_TTL = 10.0


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
    settled : bool
        Settled already (settling again charges nothing).
    """

    allowance: int
    price: float
    status: GrantStatus
    tau_hat: float
    holds: list[tuple[Ledger, Reservation]] = field(default_factory=list)
    settled: bool = False


@dataclass(frozen=True)
class Refusal:
    """A request that is not forwarded.

    Attributes
    ----------
    kind : {'priced_out', 'budget_exhausted', 'unavailable'}
    message : str
    price : float
    retry_after : int
        Seconds a client should wait before retrying.
    """

    kind: RefusalKind
    message: str
    price: float
    retry_after: int


class Decider:
    """Prices, reserves and settles requests against one budget.

    Parameters
    ----------
    pricer : OnlinePricer
    ledger : Ledger
        The shared budget (``total`` per period).
    floor_ledger : Ledger, optional
        Tokens kept each period for requests with a floor (see the module docstring).
    tenant_ledgers : dict of str to Ledger, optional
        Budgets of tenants that have their own.
    fallback_tokens : int
        Allowance given instead of refusing a priced-out request (0: refuse).
    ttl : float
        Reservation lifetime in seconds without renewal (> 0).
    fail_open : bool
        Serve from a per-replica in-process ledger while ``ledger`` raises
        :class:`LedgerError` (see the module docstring); else refuse (``unavailable``).
    fail_open_budget : int, optional
        Tokens per period of that ledger, regardless of the replicas' share (see the module
        docstring).
    tick : float
        Seconds between price updates (how long an agreed price holds).
    clock : callable
        Wall clock, seconds since the epoch.
    """

    def __init__(
        self,
        pricer: OnlinePricer,
        ledger: Ledger,
        *,
        floor_ledger: Ledger | None = None,
        tenant_ledgers: dict[str, Ledger] | None = None,
        fallback_tokens: int = 0,
        ttl: float = 120.0,
        fail_open: bool = False,
        fail_open_budget: int | None = None,
        tick: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self.pricer = pricer
        self.ledger = ledger
        self.floor_ledger = floor_ledger
        self.tenant_ledgers = dict(tenant_ledgers or {})
        self.fallback_tokens = int(fallback_tokens)
        self.ttl = float(ttl)
        self.fail_open = bool(fail_open)
        self.fail_open_budget = fail_open_budget
        self.tick = float(tick)
        self.clock = clock
        self.store_ok = True
        #: The in-process ledger serving during a store outage (fail open), else None.
        self.local: MemoryLedger | None = None
        self._local_base = (0, 0)  # (period, tokens) of shared spending it started with
        self._outages = 0
        #: Processes spending the shared ledger (1 without one), from their heartbeats.
        self.members = 1
        self.member_id = uuid.uuid4().hex
        #: Totals of the shared budget (and of the floor share) at the latest refresh.
        self.state: LedgerState | None = None
        self.floor_state: LedgerState | None = None
        # Open grants and the task of the request that holds each (see renew()).
        self._open: dict[Grant, asyncio.Task[object] | None] = {}
        # This replica's consumption in the current period, for its traffic share.
        self._local_period = -1
        self._local_open = 0
        self._local_spent = 0
        self.share = 1.0

    @property
    def ledgers(self) -> list[Ledger]:
        """Every ledger the decider reserves in (each once)."""
        found = [self.ledger, self.floor_ledger, *self.tenant_ledgers.values(), self.local]
        return list({id(x): x for x in found if x is not None}.values())

    def refuse(self, kind: RefusalKind, message: str) -> Refusal:
        """A refusal at the current price, with the wait a client should observe."""
        period = self.pricer.period
        left = period - (self.clock() % period)
        wait = left if kind == "budget_exhausted" else min(left, 4 * self.tick)
        return Refusal(kind, message, self.pricer.price, max(1, math.ceil(wait)))

    # -- one request --------------------------------------------------------------------------
    async def decide(
        self, tau_hat: float, cap: int, *, floor: int = 0, tenant: str | None = None
    ) -> Grant | Refusal:
        """Quote, then reserve; never forwards anything itself.

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
        """
        self.pricer.observe(self.clock(), tau_hat, cap)
        q = self.pricer.quote(tau_hat, cap, floor)
        status: GrantStatus = "floor" if q.status == "floor" else "granted"
        allowance, least = q.allowance, q.least
        if q.status == "priced_out":
            if q.price >= self.pricer.shape.price_ceiling:  # the update saw nothing left
                return self.refuse("budget_exhausted", _SPENT)
            if self.fallback_tokens <= 0:
                return self.refuse(
                    "priced_out",
                    f"priced out: at the current price ({q.price:.4g}) this request's predicted "
                    f"threshold ({q.tau:.0f} tokens) is not worth its entry cost; retry later "
                    "or with a priority class",
                )
            allowance = least = min(self.fallback_tokens, cap)
            status = "fallback"
        holds = await self._reserve(allowance, least, floor > 0, tenant)
        if isinstance(holds, Refusal):
            return holds
        grant = Grant(min(r.tokens for _, r in holds), q.price, status, tau_hat, holds)
        self._open[grant] = asyncio.current_task()
        return grant

    async def _reserve(
        self, allowance: int, least: int, has_floor: bool, tenant: str | None
    ) -> list[tuple[Ledger, Reservation]] | Refusal:
        """Reserve in the tenant's budget (if it has one), then in the floor share (floor
        requests) or the shared budget; all or nothing."""
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
            return got or self.refuse("budget_exhausted", _SPENT)
        if got[0] is not self.floor_ledger:
            self._count(got[1].period, opened=got[1].tokens)
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
        """The in-process ledger of this outage (made on first need), or None when this
        replica may not fail open (see the module docstring)."""
        if not self.fail_open:
            return None
        if self.local is not None:
            return self.local
        period = getattr(self.ledger, "period", None)
        index = int(self.clock() // period) if period else 0
        if self.fail_open_budget is not None:
            total, base = self.fail_open_budget, 0
        elif self.state is None:
            log.error(
                "budget ledger unreachable and never reached: this replica knows neither how "
                "many replicas share the budget nor what they spent, so it refuses requests "
                "until the ledger answers (--fail-open-budget sets a local budget instead)"
            )
            return None
        else:
            n = max(1, self.members)
            total = self.ledger.total // n
            used = self.state.spent + self.state.reserved if self.state.period == index else 0
            base = min(total, math.ceil(used / n))
        self.local = MemoryLedger(total, period=period, spent=base, clock=self.clock)
        self._local_base = (index, base)
        self._outages += 1
        log.error(
            "serving from a local budget of %d tokens per period (1/%d of the budget) until the "
            "ledger answers again",
            total,
            max(1, self.members),
        )
        return self.local

    async def _book_outage(self) -> None:
        """Book in the shared ledger what was spent or held locally during an outage, then
        go back to it (grants still open locally settle there)."""
        local, self.local = self.local, None
        if local is None or not isinstance(self.ledger, SharedLedger):
            return
        base_period, base = self._local_base
        booked = 0
        for s in local.history():
            tokens = s.spent + s.reserved - (base if s.period == base_period else 0)
            if tokens > 0:
                key = f"outage:{self.member_id}:{self._outages}:{s.period}"
                booked += await self.ledger.book(tokens, s.period, key)
        log.warning("budget ledger reachable again: %d tokens used meanwhile booked", booked)

    async def _quiet_release(self, ledger: Ledger, res: Reservation) -> None:
        try:
            await ledger.release(res)
        except LedgerError:
            pass  # the reservation lapses after its TTL

    def _shared_pool(self, ledger: Ledger) -> bool:
        """Whether ``ledger`` holds the shared budget (or an outage's local part of it)."""
        return ledger is not self.floor_ledger and all(
            ledger is not t for t in self.tenant_ledgers.values()
        )

    def _count(self, period: int, *, opened: int = 0, closed: int = 0, used: int = 0) -> None:
        """This replica's open and settled tokens in the current period (its share)."""
        if period > self._local_period:
            self._local_period, self._local_open, self._local_spent = period, 0, 0
        if period == self._local_period:
            self._local_open += opened - closed
            self._local_spent += used

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
            except LedgerError:
                self.store_ok = False
            if self._shared_pool(ledger):
                self._count(res.period, closed=res.tokens, used=used)
        self.pricer.learn(grant.tau_hat, grant.allowance, used, finish_reason)
        return used

    # -- background work ------------------------------------------------------------------------
    async def renew(self) -> int:
        """Extend the reservations of grants whose request is still running (see the module
        docstring); forget the others, whose reservations lapse. Returns the grants renewed."""
        running = []
        for grant, task in list(self._open.items()):
            if task is not None and task.done():
                del self._open[grant]  # ended without settling: let its reservation lapse
                for ledger, res in grant.holds:
                    if self._shared_pool(ledger):
                        self._count(res.period, closed=res.tokens)
            else:
                running.append(grant)
        for grant in running:
            for ledger, res in grant.holds:
                try:
                    await ledger.extend(res, self.ttl)
                except LedgerError as exc:
                    self._away(exc)
        return len(running)

    async def refresh(self) -> float:
        """One price update from the ledger's totals (all replicas); returns the price.

        With a shared ledger (Redis) the replica also says it is alive (the count of replicas
        sizes each one's share during an outage), books what it spent during an outage that
        just ended, and agrees on the price: the first replica to publish within a tick sets
        the price every replica uses.
        """
        shared = self.ledger if isinstance(self.ledger, SharedLedger) else None
        try:
            state = await self.ledger.state()
            if self.floor_ledger is not None:
                self.floor_state = await self.floor_ledger.state()
            if shared is not None:
                self.members = await shared.heartbeat(self.member_id, HEARTBEAT_TTL)
            if self.local is not None:
                await self._book_outage()
                state = await self.ledger.state()
            self.store_ok = True
        except LedgerError as exc:
            self._away(exc)
            local = self._fallback()
            if local is None:
                return self.pricer.price
            state = local.state_now()
        else:
            self.state = state
        if state.period == self._local_period:
            mine = self._local_open + self._local_spent
            total = state.spent + state.reserved
            if total > 0.02 * state.total and mine > 0:
                self.share = 0.8 * self.share + 0.2 * min(1.0, max(0.02, mine / total))
        price = self.pricer.update(self.clock(), state.spent, state.reserved, self.share)
        if shared is not None and self.store_ok:
            try:
                price = self.pricer.set_price(await shared.agree(price, self.tick))
            except LedgerError as exc:
                self._away(exc)
        return price
