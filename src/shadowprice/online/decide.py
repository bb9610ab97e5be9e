"""The online decision core: price, pace and ration each request; synchronous, no I/O.

One object decides for one gateway replica. It never touches a ledger, a socket or a clock:
the caller passes the time in and reports what the ledger did, so the ASGI gateway
(:mod:`shadowprice.serve`) and the traffic simulator (:mod:`shadowprice.evaluate.traffic`)
drive the same code, and what the benchmark measures is what the gateway does::

    offer = core.arrive(now, tau_hat, cap, floor)       # Offer: allowance, least, status, ...
    if offer.admitted:
        res = ledger.reserve(offer.allowance, min_tokens=offer.least)
        if res is None:
            offer = core.refused_by_ledger(now, offer)  # budget_exhausted, with its wait
        else:
            ticket = core.granted(offer, res.tokens, period=res.period)
            ...                                         # forward, count the tokens used
            core.settled(ticket, used, finish_reason)
    every tick:  s = ledger.state();  core.update(now, s.spent, s.reserved, s.period)
                 core.agree(ledger.agree(core.price, tick))   # replicas sharing a store

**The price.** Every request's predicted curve is the population's shape shifted by its
threshold tau (:mod:`.shape`). At a price lambda a request is worth funding while its
threshold is below the cut-off T(lambda), and is then granted tau + x(lambda), x maximising
the curve's gain less lambda times the tokens the grant is expected to *spend* (unused tokens
return: :mod:`.spend`). At each update the price is the one at which the last ``window``
requests' mean expected spend meets a *target*, the tokens each coming request may spend on
average (:class:`~.paced.PacedPricer`).

**The pace line.** The target starts from the forecast: the budget left over the requests
still to come in the period (:mod:`.arrivals` plans for the quiet rate, so a burst is
rationed against what is left rather than saved for bursts that may not come). The pace line
then bounds it (:mod:`.pace`): with D(t) = B t / P the tokens that should be committed by
t, and h a twelfth of the period, the requests expected over the next h seconds should spend
at least D(t + h) - committed (back on the line) and at most D(t + h) + margin B - committed.
Behind the line the least is at least B h / P: the price falls until the budget's rate is
offered to whoever arrives, so no stretch of traffic is refused while spending lags; more
than a margin ahead, nothing is admitted until the line catches up (``Retry-After`` says
when). Between two updates the core also counts each grant against that ceiling
(:meth:`~.paced.PacedPricer.within_pace`), so a burst the price has not yet seen, at a fresh
start or after a quiet spell that left the price at 0, cannot take more than the margin
allows. A forecast that is wrong (a burst taken for the new rate, another replica's traffic
not yet counted) is corrected by the line within a horizon; the ledger, not the price, keeps
the budget, so a wrong price costs accuracy, never an overspend.

**Rationing at the cut.** When many requests share a curve (one prompt template, one product
feature), demand at lambda is a step: at the price where it crosses the target, everyone is
funded just below and no one just above. A request is *marginal* when its surplus at lambda
is within ``band`` (1 %) of that of a request without a threshold, lambda T, either way: for a
request its cap does not bind, a threshold within 1 % of T(lambda); for one it does, a
truncated curve just worth its cost (many requests with one small cap are a step too). The
band is far wider than the price's precision, so a step always falls in it, and narrow, so that
among requests that do differ the price, not the ration, still picks those worth more. The
update computes the share of the marginal requests, r, that makes the expected
spend meet the target exactly (inframarginal spend + r x marginal spend = target), and the
core admits marginal arrivals by a stride: each adds r to a credit and is admitted when the
credit reaches one. Equal requests are treated alike in expectation, the admitted share moves
smoothly with demand, and a share r lets through exactly one marginal request in every 1/r.

**Refusals** (:class:`Offer` ``status``): ``priced_out`` (the price or the ration; retry
after a few ticks, or when the line has caught up), ``budget_exhausted`` (the period's budget
is spent or held; retry next period, or shortly when open reservations will return tokens),
``cap_too_small`` (the client's ``max_tokens`` cuts the curve below where it is worth its
cost: the request is priced on its curve truncated at the cap, and retrying will not help;
no ``Retry-After``). A request with a ``floor`` is never priced out; with ``fallback_tokens``
a priced-out request gets that small allowance instead.

**Replicas** share a ledger, so each sees every replica's spending but only its own arrivals.
The core estimates its share of the period's consumption from the grants it reports
(:meth:`DecisionCore.granted`, :meth:`DecisionCore.settled`) and the ledger's totals, and
scales its arrival forecast by it; :meth:`DecisionCore.agree` adopts the price the replicas
agreed on (the first to publish in a tick).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .pricer import OnlinePricer

__all__ = ["DecisionCore", "Offer", "OfferStatus", "Ticket"]

OfferStatus = Literal[
    "granted", "floor", "fallback", "priced_out", "budget_exhausted", "cap_too_small"
]

#: Ticks a priced-out client is told to wait (the price and the ration move every tick).
_RETRY_TICKS = 4
#: Share of the budget the ledger must have seen spent before a replica's share is measured.
_SHARE_MIN_SEEN = 0.02
#: Weight of a new measurement in the share's moving average.
_SHARE_STEP = 0.2
#: A replica's share is never taken below this.
_SHARE_FLOOR = 0.02

_SPENT = "the token budget of this period is spent; retry after it"


@dataclass(frozen=True)
class Offer:
    """The core's decision for one request.

    Attributes
    ----------
    status : {'granted', 'floor', 'fallback', 'priced_out', 'budget_exhausted', 'cap_too_small'}
        The first three admit the request (reserve ``allowance``, accept down to ``least``).
    allowance : int
        Tokens to reserve and send as ``max_tokens``; 0 for a refusal.
    least : int
        Smallest partial grant still worth sending (the ledger's ``min_tokens``); 0 for a
        refusal.
    price : float
        The shadow price the decision was taken at (utility per token).
    tau : float
        The request's threshold after the population prior's correction, tokens.
    tau_hat : float
        The predicted threshold it arrived with, tokens.
    retry_after : int or None
        Seconds a refused client should wait before retrying; None for grants and for
        ``cap_too_small`` (waiting will not help).
    message : str
        Why it was refused, for the client; empty for grants.
    """

    status: OfferStatus
    allowance: int
    least: int
    price: float
    tau: float
    tau_hat: float
    retry_after: int | None = None
    message: str = ""

    @property
    def admitted(self) -> bool:
        """Whether the request may be forwarded once its allowance is reserved."""
        return self.status in ("granted", "floor", "fallback")


@dataclass
class Ticket:
    """A grant the ledger reserved, until it is settled or lapses.

    Attributes
    ----------
    tau_hat : float
        The request's predicted threshold, tokens.
    allowance : int
        Tokens sent as ``max_tokens``.
    held : int
        Tokens held in the shared budget (counted toward this replica's share).
    period : int or None
        Ledger period of that hold; None when the grant holds nothing in the shared budget
        (a floor share), so it does not count toward the share.
    closed : bool
        Settled or lapsed already (a second report is ignored).
    """

    tau_hat: float
    allowance: int
    held: int
    period: int | None
    closed: bool = False


class DecisionCore:
    """Decides every request of one replica against a per-period token budget (no I/O).

    Parameters
    ----------
    pricer : OnlinePricer
        The price: a :class:`~.paced.PacedPricer` (paced, rationed). A plain
        :class:`~.pricer.OnlinePricer` reproduces the decisions of the unpaced gateway, kept
        as the benchmarks' baseline.
    fallback_tokens : int
        Allowance given to a priced-out request instead of refusing it (0: refuse).
    tick : float
        Seconds between price updates (> 0): sets the wait a priced-out client is told.

    Attributes
    ----------
    share : float
        This replica's estimated share of the period's consumption, in (0, 1].
    """

    def __init__(
        self, pricer: OnlinePricer, *, fallback_tokens: int = 0, tick: float = 0.25
    ) -> None:
        if isinstance(fallback_tokens, bool) or not isinstance(fallback_tokens, int):
            raise ValueError(f"fallback_tokens must be an integer, got {fallback_tokens!r}")
        if fallback_tokens < 0:
            raise ValueError(f"fallback_tokens must be >= 0, got {fallback_tokens}")
        if not (isinstance(tick, (int, float)) and tick > 0 and math.isfinite(tick)):
            raise ValueError(f"tick must be a positive number of seconds, got {tick!r}")
        self.pricer = pricer
        self.fallback_tokens = fallback_tokens
        self.tick = float(tick)
        self.share = 1.0
        self._period = -1  # ledger period of the counts below
        self._open = 0  # tokens this replica holds in the shared budget
        self._spent = 0  # tokens this replica settled in it
        self._returning = 0.0  # tokens open reservations are expected to give back

    @property
    def price(self) -> float:
        """The price decisions are taken at."""
        return self.pricer.price

    @property
    def period(self) -> float:
        """The budget period, seconds."""
        return self.pricer.period

    # -- one request --------------------------------------------------------------------------
    def arrive(self, now: float, tau_hat: float, cap: int, floor: int = 0) -> Offer:
        """Observe an arriving request and decide it at the current price.

        Parameters
        ----------
        now : float
            Seconds since the epoch.
        tau_hat : float
            Predicted threshold, tokens (>= 0).
        cap : int
            The client's ``max_tokens`` after the gateway's ceiling (>= 1).
        floor : int
            Guaranteed tokens of its class or tenant (0: none); a request with a floor is
            never priced out.
        """
        _check_request(tau_hat, cap, floor)
        self.pricer.observe(now, tau_hat, cap)
        q = self.pricer.quote(tau_hat, cap, floor)
        ahead = False
        if q.status in ("granted", "floor"):
            if self.pricer.within_pace(now, q.allowance, force=q.status == "floor"):
                return Offer(q.status, q.allowance, q.least, q.price, q.tau, tau_hat)
            ahead = True  # worth its price, but the price has not yet seen this burst
            if floor > 0:  # never priced out: its guaranteed floor, counted all the same
                f = min(floor, cap)
                self.pricer.within_pace(now, f, force=True)
                return Offer("floor", f, f, q.price, q.tau, tau_hat)
        if q.status == "cap_too_small":
            x, _ = self.pricer.terms(q.price)
            return Offer(
                "cap_too_small",
                0,
                0,
                q.price,
                q.tau,
                tau_hat,
                None,
                f"max_tokens ({cap}) is too small for this request: it is predicted to need "
                f"about {q.tau:.0f} tokens before its answer is worth anything, and at the "
                f"current price it would be granted {math.ceil(q.tau + x)}; raise max_tokens "
                "or leave it unset (retrying as is will not help)",
            )
        if self.pricer.exhausted:
            return self.refusal(now, "budget_exhausted", _SPENT, q.tau, tau_hat)
        if self.fallback_tokens > 0:
            a = min(self.fallback_tokens, cap)
            self.pricer.within_pace(now, a, force=True)
            return Offer("fallback", a, a, q.price, q.tau, tau_hat)
        if ahead or self.pricer.paused_for > 0:
            why = "spending is ahead of this period's pace"
        elif q.rationed:
            why = (
                f"at the current price ({q.price:.4g}) requests like this one are admitted in "
                "turn, as many as the budget's pace allows"
            )
        else:
            why = (
                f"at the current price ({q.price:.4g}) this request's predicted threshold "
                f"({q.tau:.0f} tokens) is not worth its entry cost"
            )
        return self.refusal(
            now,
            "priced_out",
            f"priced out: {why}; retry later or with a priority class",
            q.tau,
            tau_hat,
        )

    def refusal(
        self,
        now: float,
        status: Literal["priced_out", "budget_exhausted"],
        message: str,
        tau: float = 0.0,
        tau_hat: float = 0.0,
    ) -> Offer:
        """A refusal at the current price with the wait :meth:`retry_after` gives (for the
        caller's own refusals too: a tenant's spent budget, an unreachable store)."""
        return Offer(status, 0, 0, self.price, tau, tau_hat, self.retry_after(now, status), message)

    def retry_after(self, now: float, status: str) -> int | None:
        """Seconds a client refused with ``status`` at ``now`` should wait (>= 1), or None for
        ``cap_too_small``.

        ``budget_exhausted``: until the period ends. Otherwise: until spending is back within
        the pace line's margin when that is why nobody is admitted, else a few ticks (the
        price and the ration move every tick), never past the period's end.
        """
        if status == "cap_too_small":
            return None
        left = self.period - (now % self.period)
        if status == "budget_exhausted":
            wait = left
        elif self.pricer.paused_for > 0:
            wait = min(left, self.pricer.paused_for)
        else:
            wait = min(left, _RETRY_TICKS * self.tick)
        return max(1, math.ceil(wait))

    def refused_by_ledger(self, now: float, offer: Offer) -> Offer:
        """The answer to an admitted ``offer`` the ledger could not reserve (not even its
        ``least``): ``budget_exhausted``, with a short wait when open reservations are
        expected to give back at least that many tokens, else until the period ends."""
        self.dropped(offer)
        if self._returning >= max(offer.least, 1):
            wait = max(1, math.ceil(_RETRY_TICKS * self.tick))
            return Offer(
                "budget_exhausted",
                0,
                0,
                offer.price,
                offer.tau,
                offer.tau_hat,
                wait,
                "the token budget of this period is held by requests still running; retry shortly",
            )
        return self.refusal(now, "budget_exhausted", _SPENT, offer.tau, offer.tau_hat)

    def dropped(self, offer: Offer) -> None:
        """Record that an admitted ``offer`` was refused by the caller for its own reasons (a
        tenant's spent budget, an unreachable store): it reserved nothing."""
        self.pricer.withdraw(offer.allowance)

    def granted(
        self, offer: Offer, allowance: int, *, held: int | None = None, period: int | None = None
    ) -> Ticket:
        """Record that the ledger reserved ``allowance`` tokens for ``offer``.

        Parameters
        ----------
        offer : Offer
            The admitted offer.
        allowance : int
            Tokens reserved and sent as ``max_tokens`` (``offer.allowance`` or a partial grant).
        held : int, optional
            Tokens held in the shared budget (default ``allowance``).
        period : int, optional
            The shared ledger's period index of that hold; None when the grant holds nothing
            in the shared budget (it is then not counted toward this replica's share).
        """
        held = allowance if held is None else held
        self.pricer.withdraw(offer.allowance - allowance)  # a partial grant holds less
        if period is not None:
            self._count(period, opened=held)
        return Ticket(offer.tau_hat, int(allowance), int(held), period)

    def settled(self, ticket: Ticket, used: int, finish_reason: str = "stop") -> None:
        """Record a grant's outcome: ``used`` tokens charged, ``finish_reason`` the upstream's
        (``stop``, ``length``, or anything else for an error). Teaches the population prior
        and the spend model; a second report for the same ticket is ignored."""
        if ticket.closed:
            return
        ticket.closed = True
        used = max(0, int(used))
        if ticket.period is not None:
            self._count(ticket.period, closed=ticket.held, used=used)
        self.pricer.learn(ticket.tau_hat, ticket.allowance, used, finish_reason)

    def lapsed(self, ticket: Ticket) -> None:
        """Record a grant whose reservation was given up without a settlement (its request
        ended without reporting usage): its hold stops counting, nothing is learned."""
        if ticket.closed:
            return
        ticket.closed = True
        if ticket.period is not None:
            self._count(ticket.period, closed=ticket.held)

    def _count(self, period: int, *, opened: int = 0, closed: int = 0, used: int = 0) -> None:
        """This replica's open and settled tokens in the shared budget's current period."""
        if period > self._period:
            self._period, self._open, self._spent = period, 0, 0
        if period == self._period:
            self._open += opened - closed
            self._spent += used

    # -- the price ------------------------------------------------------------------------------
    def update(self, now: float, spent: int, reserved: int, period: int | None = None) -> float:
        """Re-price from the shared ledger's totals of the current period; returns the price.

        Parameters
        ----------
        now : float
            Seconds since the epoch.
        spent, reserved : int
            Tokens settled and held in the shared budget's current period (all replicas).
        period : int, optional
            That period's index as the ledger counts it (default ``now // period``); this
            replica's share is measured only within the period its counts belong to.
        """
        index = int(now // self.period) if period is None else int(period)
        if index == self._period:
            mine, total = self._open + self._spent, spent + reserved
            if total > _SHARE_MIN_SEEN * self.pricer.budget and mine > 0:
                seen = min(1.0, max(_SHARE_FLOOR, mine / total))
                self.share += _SHARE_STEP * (seen - self.share)
        self._returning = (1.0 - self.pricer.prior.usage) * reserved
        return self.pricer.update(now, spent, reserved, self.share)

    def agree(self, price: float) -> float:
        """Use ``price``, the one the replicas agreed on, for the next decisions (the ration
        stays this replica's own)."""
        return self.pricer.set_price(price)


def _check_request(tau_hat: float, cap: int, floor: int) -> None:
    if not (isinstance(tau_hat, (int, float)) and math.isfinite(tau_hat) and tau_hat >= 0):
        raise ValueError(f"tau_hat must be a finite number of tokens >= 0, got {tau_hat!r}")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"cap must be an integer number of tokens >= 1, got {cap!r}")
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise ValueError(f"floor must be an integer number of tokens >= 0, got {floor!r}")
