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

Store outages: a :class:`~shadowprice.ledger.LedgerError` from the shared ledger refuses the
request (``unavailable``, HTTP 503) unless the decider has a ``fail_open`` ledger, a
per-replica in-process budget that takes over until the store answers again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..ledger import Ledger, LedgerError, LedgerState, Reservation
from ..online import OnlinePricer

__all__ = ["Decider", "Grant", "Refusal"]

GrantStatus = Literal["granted", "floor", "fallback"]
RefusalKind = Literal["priced_out", "budget_exhausted", "unavailable"]

#: Message of a refusal for an empty budget.
_SPENT = "the token budget of this period is spent; retry after it"


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
    fail_open : Ledger, optional
        In-process ledger used while ``ledger`` raises :class:`LedgerError`.
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
        fail_open: Ledger | None = None,
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
        self.fail_open = fail_open
        self.tick = float(tick)
        self.clock = clock
        self.store_ok = True
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
        found = [self.ledger, self.floor_ledger, *self.tenant_ledgers.values()]
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
            self.store_ok = False
            if self.fail_open is None or ledger is not self.ledger:
                return self.refuse("unavailable", f"budget ledger unavailable: {exc}")
            ledger = self.fail_open
            res = await ledger.reserve(tokens, min_tokens=least, ttl=self.ttl)
        else:
            self.store_ok = True
        return None if res is None else (ledger, res)

    async def _quiet_release(self, ledger: Ledger, res: Reservation) -> None:
        try:
            await ledger.release(res)
        except LedgerError:
            pass  # the reservation lapses after its TTL

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
            if ledger is self.ledger or ledger is self.fail_open:
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
                    if ledger is self.ledger or ledger is self.fail_open:
                        self._count(res.period, closed=res.tokens)
            else:
                running.append(grant)
        for grant in running:
            for ledger, res in grant.holds:
                try:
                    await ledger.extend(res, self.ttl)
                except LedgerError:
                    self.store_ok = False
        return len(running)

    async def refresh(self) -> float:
        """One price update from the ledger's totals (all replicas); returns the price.

        With a shared ledger that can agree on a value (Redis), the first replica to publish
        within a tick sets the price every replica uses.
        """
        try:
            state = await self.ledger.state()
            if self.floor_ledger is not None:
                self.floor_state = await self.floor_ledger.state()
            self.store_ok = True
        except LedgerError:
            self.store_ok = False
            if self.fail_open is None:
                return self.pricer.price
            state = await self.fail_open.state()
        self.state = state
        if state.period == self._local_period:
            mine = self._local_open + self._local_spent
            total = state.spent + state.reserved
            if total > 0.02 * state.total and mine > 0:
                self.share = 0.8 * self.share + 0.2 * min(1.0, max(0.02, mine / total))
        price = self.pricer.update(self.clock(), state.spent, state.reserved, self.share)
        agree = getattr(self.ledger, "agree", None)
        if agree is not None and self.store_ok:
            try:
                price = self.pricer.set_price(await agree(price, self.tick))
            except LedgerError:
                self.store_ok = False
        return price
