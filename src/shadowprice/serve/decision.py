"""The decision for one request: price its curve, reserve its allowance, settle what it used.

No HTTP here: :class:`Decider` is what the gateway calls around forwarding, and what the
benchmark times on its own ("the decision itself"). The price comes from
:class:`~shadowprice.online.OnlinePricer`; the ledger (in-process or Redis) enforces the budget.
A tenant with its own budget reserves in its own ledger too (both or neither).

Store outages: a :class:`~shadowprice.ledger.LedgerError` from the shared ledger refuses the
request (``unavailable``, HTTP 503) unless the decider has a ``fail_open`` ledger, a
per-replica in-process budget that takes over until the store answers again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..ledger import Ledger, LedgerError, Reservation
from ..online import OnlinePricer

__all__ = ["Decider", "Grant", "Refusal"]

GrantStatus = Literal["granted", "floor", "fallback"]
RefusalKind = Literal["priced_out", "budget_exhausted", "unavailable"]


@dataclass
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
        The gateway's budget (``total`` per period).
    tenant_ledgers : dict of str to Ledger, optional
        Budgets of tenants that have their own.
    fallback_tokens : int
        Allowance given instead of refusing a priced-out request (0: refuse).
    ttl : float, optional
        Reservation lifetime in seconds (shared state; None: never lapses).
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
        tenant_ledgers: dict[str, Ledger] | None = None,
        fallback_tokens: int = 0,
        ttl: float | None = None,
        fail_open: Ledger | None = None,
        tick: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tick = float(tick)
        self.pricer = pricer
        self.ledger = ledger
        self.tenant_ledgers = dict(tenant_ledgers or {})
        self.fallback_tokens = int(fallback_tokens)
        self.ttl = ttl
        self.fail_open = fail_open
        self.clock = clock
        self.store_ok = True
        # This replica's consumption in the current period, for its traffic share.
        self._local_period = -1
        self._local_open = 0
        self._local_spent = 0
        self.share = 1.0

    def _retry_after(self, kind: RefusalKind) -> int:
        period = self.pricer.period
        left = period - (self.clock() % period)
        if kind == "budget_exhausted":
            return max(1, math.ceil(left))
        return max(1, math.ceil(min(left, 4 * self.tick)))

    def refuse(self, kind: RefusalKind, message: str) -> Refusal:
        return Refusal(kind, message, self.pricer.price, self._retry_after(kind))

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
        now = self.clock()
        self.pricer.observe(now, tau_hat, cap)
        q = self.pricer.quote(tau_hat, cap, floor)
        status: GrantStatus = "floor" if q.status == "floor" else "granted"
        allowance, least = q.allowance, q.least
        if q.status == "priced_out":
            if q.price >= self.pricer.shape.price_ceiling:  # the update saw nothing left
                return self.refuse(
                    "budget_exhausted", "the token budget of this period is spent; retry after it"
                )
            if self.fallback_tokens <= 0:
                return self.refuse(
                    "priced_out",
                    f"priced out: at the current price ({q.price:.4g}) this request's predicted "
                    f"threshold ({q.tau:.0f} tokens) is not worth its entry cost; retry later "
                    "or with a priority class",
                )
            allowance = least = min(self.fallback_tokens, cap)
            status = "fallback"
        holds = await self._reserve(allowance, least, tenant)
        if isinstance(holds, Refusal):
            return holds
        granted = min(r.tokens for _, r in holds)
        return Grant(granted, q.price, status, tau_hat, holds)

    async def _reserve(
        self, allowance: int, least: int, tenant: str | None
    ) -> list[tuple[Ledger, Reservation]] | Refusal:
        holds: list[tuple[Ledger, Reservation]] = []
        own = self.tenant_ledgers.get(tenant) if tenant is not None else None
        if own is not None:
            res = await self._hold(own, allowance, least)
            if isinstance(res, Refusal) or res is None:
                return res or self.refuse(
                    "budget_exhausted", f"tenant {tenant!r} has spent its budget for this period"
                )
            holds.append((own, res))
            allowance, least = res.tokens, min(least, res.tokens)
        res = await self._hold(self.ledger, allowance, least)
        if isinstance(res, Refusal) or res is None:
            for led, r in holds:
                await self._quiet_release(led, r)
            return res or self.refuse(
                "budget_exhausted", "the token budget of this period is spent; retry after it"
            )
        self._count_open(res.period, res.tokens)
        holds.append((self._ledger_of(res), res))
        return holds

    def _ledger_of(self, res: Reservation) -> Ledger:
        return self.fail_open if res.tag == "fail-open" and self.fail_open else self.ledger

    async def _hold(self, ledger: Ledger, tokens: int, least: int) -> Reservation | Refusal | None:
        try:
            res = await ledger.reserve(tokens, min_tokens=least, ttl=self.ttl)
            self.store_ok = True
            return res
        except LedgerError as exc:
            self.store_ok = False
            if self.fail_open is None or ledger is not self.ledger:
                return self.refuse("unavailable", f"budget ledger unavailable: {exc}")
            return await self.fail_open.reserve(tokens, min_tokens=least, tag="fail-open")

    async def _quiet_release(self, ledger: Ledger, res: Reservation) -> None:
        try:
            await ledger.release(res)
        except LedgerError:
            pass  # the reservation lapses after its TTL

    def _count_open(self, period: int, tokens: int) -> None:
        if period != self._local_period:
            self._local_period, self._local_open, self._local_spent = period, 0, 0
        self._local_open += tokens

    async def settle(self, grant: Grant, used: int, finish_reason: str = "stop") -> int:
        """Charge ``used`` tokens to every reservation of ``grant`` (once) and teach the prior.

        Returns the tokens charged. A store that is away leaves the reservation to lapse.
        """
        if grant.settled:
            return 0
        grant.settled = True
        used = max(0, int(used))
        for ledger, res in grant.holds:
            try:
                await ledger.settle(res, used)
            except LedgerError:
                self.store_ok = False
            if res.period == self._local_period and ledger is self.ledger:
                self._local_open -= res.tokens
                self._local_spent += used
        self.pricer.learn(grant.tau_hat, grant.allowance, used, finish_reason)
        return used

    async def extend(self, grant: Grant) -> None:
        """Renew the grant's reservations (long requests on a shared ledger)."""
        if self.ttl is None:
            return
        for ledger, res in grant.holds:
            renew = getattr(ledger, "extend", None)
            if renew is not None:
                try:
                    await renew(res, self.ttl)
                except LedgerError:
                    self.store_ok = False

    async def refresh(self) -> float:
        """One price update from the ledger's totals (all replicas); returns the price.

        With a shared ledger that can agree on a value (Redis), the first replica to publish
        within a tick sets the price every replica uses.
        """
        try:
            state = await self.ledger.state()
            self.store_ok = True
        except LedgerError:
            self.store_ok = False
            if self.fail_open is None:
                return self.pricer.price
            state = await self.fail_open.state()
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
