"""One price for a stream of requests under a budget of B tokens per period P (no I/O).

**Re-clearing.** Batch CLEAR finds the price at which the queries' demand equals the budget.
Online, the rest of the period's requests have not arrived, so the pricer clears against a
forecast: the last ``window`` requests' predicted curves stand for the population, and at each
:meth:`OnlinePricer.update` (every ``tick`` seconds), with ``now`` in period k:

    R       = B - spent - usage * reserved        (tokens left; open reservations forecast)
    N       = arrivals expected before the period ends      (:mod:`.arrivals`)
    lambda  = the price at which  N * mean_window s_i(lambda) = R

where s_i(lambda) is what request i is expected to *spend* at that price, not the allowance it
is granted: an answer stops when it is done and the rest of its allowance returns to the pool
(:mod:`.spend`). If the demand at price 0 fits, the price is 0 and everyone gets the peak of
its curve. The ledger enforces the budget; the price only decides who gets how much, so a
forecast error costs accuracy, never an overshoot.

**Value per expected spend.** At price lambda a request with threshold tau maximises
g(x) - lambda (tau + m(x)): its curve's gain x tokens above the threshold against the tokens it
is expected to spend, m(x) = E[min(X, x)] for the excess X its answers run past the threshold.
m' = P(X > x) <= 1, so tokens that would come back cost less than tokens that are spent, and
allowances stay closer to the curve's peak than with a price on the allowance itself. For a
shift family (:mod:`.shape`) the best x is the same for every request, and a request is funded
iff tau < T(lambda) = max_x (g(x) - lambda m(x)) / lambda: both are computed on a grid of x at
each update, so each decision stays a comparison and an addition.

Replicas: each sees only its share of the traffic but the whole ledger; ``share`` (this
replica's part of the period's spending, or 1) scales the locally observed arrivals to the
global ones, so every replica computes the same price from the same shared totals.

The alternative, dual ascent on the spend rate (:class:`DualAscentPricer`), raises the price
when tokens are spent faster than B/P and lowers it otherwise; it needs no forecast but reacts
only as fast as its step size allows (see ``docs/benchmarks.md`` for the comparison).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .arrivals import ArrivalForecast
from .prior import PopulationPrior
from .shape import FloatArray, Shape, SurgeShape, shape_terms
from .spend import SpendModel

__all__ = ["DualAscentPricer", "OnlinePricer", "Quote"]

QuoteStatus = Literal["granted", "priced_out", "floor", "cap_too_small"]

#: Bisection steps of a price update: log-price precision ln(1e9) / 2^20, about 2e-5.
_STEPS = 20
#: Below this many observed arrivals the rate is unknown: price 0.
_MIN_ARRIVALS = 8
#: Points of the grid of tokens above the threshold on which the best excess is found.
_GRID = 257


@dataclass(frozen=True)
class Quote:
    """The pricer's decision for one request.

    Attributes
    ----------
    allowance : int
        Tokens to reserve and send as ``max_tokens``; 0 when priced out.
    least : int
        Smallest partial grant still worth sending (``min_tokens`` for the ledger).
    price : float
        The shadow price the decision was taken at (utility per token).
    status : {'granted', 'priced_out', 'floor', 'cap_too_small'}
        ``floor``: the curve would have priced it out but its class has a guaranteed floor;
        ``cap_too_small``: its curve truncated at the client's ``max_tokens`` is not worth
        serving at the price, though a larger cap would be (:class:`~.paced.PacedPricer`).
    tau : float
        The (corrected) threshold the decision used, tokens.
    rationed : bool
        Priced out by the ration: a marginal request at the price, like those admitted in turn
        (:class:`~.paced.PacedPricer`).
    """

    allowance: int
    least: int
    price: float
    status: QuoteStatus
    tau: float
    rationed: bool = False


class OnlinePricer:
    """Shadow price of a token budget renewed every period, from a sliding window of requests.

    Parameters
    ----------
    budget : int
        Tokens per period (> 0).
    period : float
        Period length in seconds (> 0), aligned to the epoch like the ledger's.
    shape : Shape
        The population's curve shape (default: the paper's surge, alpha 1.5, beta 0.005).
    window : int
        Recent requests whose curves stand for the population (>= 16).
    min_tokens : int
        Smallest allowance ever sent (>= 1).
    prior : PopulationPrior, optional
        Usage ratio and threshold scale learner (default: a fresh one for ``shape``).
    arrivals : ArrivalForecast, optional
        Arrival forecast (default: one for ``period``).
    spend : SpendModel, optional
        Expected spend of an allowance (default: a fresh one).
    """

    def __init__(
        self,
        budget: int,
        period: float,
        shape: Shape | None = None,
        *,
        window: int = 1024,
        min_tokens: int = 16,
        prior: PopulationPrior | None = None,
        arrivals: ArrivalForecast | None = None,
        spend: SpendModel | None = None,
    ) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"budget must be a positive integer of tokens, got {budget!r}")
        if not (isinstance(period, (int, float)) and period > 0):
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        if window < 16:
            raise ValueError(f"window must be at least 16 requests, got {window}")
        if min_tokens < 1:
            raise ValueError(f"min_tokens must be >= 1, got {min_tokens}")
        self.budget, self.period = budget, float(period)
        self.shape: Shape = shape or SurgeShape()
        self.prior = prior or PopulationPrior(short_excess=self.shape.short_excess)
        self.arrivals = arrivals or ArrivalForecast(self.period)
        self.spend = spend or SpendModel()
        self.min_tokens = int(min_tokens)
        self._tau = np.zeros(window)
        self._cap = np.zeros(window)
        self._n = 0  # arrivals observed in total (ring position = _n % window)
        peak, _ = shape_terms(self.shape, 0.0)
        self._grid = np.linspace(0.0, peak, _GRID)
        self._gains = self.shape.gains(self._grid)
        self._cost = self.spend.excess(self._grid)
        self.price = 0.0
        #: The latest update found the period's budget spent (or held by open reservations).
        self.exhausted = False
        #: Seconds after the latest update during which nobody is admitted though the budget
        #: is not spent (pacing: see :class:`~.paced.PacedPricer`); 0 here.
        self.paused_for = 0.0
        self._x, self._cut = peak, math.inf

    # -- observations -----------------------------------------------------------------------
    def observe(self, now: float, tau_hat: float, cap: int) -> None:
        """Record an arrival (priced out or not): its time, predicted threshold and cap."""
        i = self._n % self._tau.size
        self._tau[i], self._cap[i] = tau_hat, cap
        self._n += 1
        self.arrivals.observe(now)

    def learn(self, tau_hat: float, allowance: int, used: int, finish_reason: str) -> None:
        """Feed a finished request to the population prior and the spend model."""
        self.prior.observe(tau_hat, allowance, used, finish_reason)
        if allowance > 0:
            self.spend.observe(self.prior.threshold(tau_hat), used)

    # -- decisions --------------------------------------------------------------------------
    def quote(self, tau_hat: float, cap: int, floor: int = 0) -> Quote:
        """Allowance of one request at the current price (O(1), no I/O).

        Parameters
        ----------
        tau_hat : float
            Predicted threshold, tokens (the prior's scale is applied here).
        cap : int
            The client's ``max_tokens`` after the gateway's ceiling (>= 1).
        floor : int
            Guaranteed tokens of its class (0: none); a request with a floor is never priced
            out.
        """
        tau = self.prior.threshold(tau_hat)
        lam = self.price
        want = 0.0
        if lam <= 0.0:
            want = min(cap, tau + self._x)
        elif tau < self._cut:
            want = tau + self._x
            # Capped below its demand: worth it only if the capped surplus stays positive.
            if want > cap:
                spend = tau + self.spend.excess_one(cap - tau)
                want = cap if self.shape.gain(cap - tau) - lam * spend > 0 else 0.0
        b = int(want)
        if 0 < b < self.min_tokens:
            b = min(self.min_tokens, cap)
        if floor > 0 and b < min(floor, cap):
            f = min(floor, cap)
            return Quote(f, f, lam, "floor", tau)
        if b <= 0:
            return Quote(0, 0, lam, "priced_out", tau)
        # A partial grant is worth sending halfway between the threshold and the demand.
        least = min(b, max(self.min_tokens, math.ceil(tau + 0.5 * max(b - tau, 0.0))))
        return Quote(b, least, lam, "granted", tau)

    def within_pace(self, now: float, allowance: int, *, force: bool = False) -> bool:
        """Count a grant of ``allowance`` tokens at ``now`` against the pacing between price
        updates; False when it must wait. Always True here: this pricer does not pace (see
        :meth:`PacedPricer.within_pace <shadowprice.online.paced.PacedPricer.within_pace>`)."""
        return True

    def withdraw(self, allowance: int) -> None:
        """Uncount ``allowance`` tokens of a grant :meth:`within_pace` counted that the ledger
        did not reserve; nothing to do here."""

    # -- the price ----------------------------------------------------------------------------
    def terms(self, price: float) -> tuple[float, float]:
        """(x, T) at ``price``: tokens granted above the threshold and the largest threshold
        still funded (see the module docstring)."""
        if price <= 0.0:
            return float(self._grid[-1]), math.inf
        surplus = self._gains - price * self._cost
        k = int(np.argmax(surplus))
        if k == 0 or surplus[k] <= 0.0:
            return 0.0, 0.0
        return float(self._grid[k]), float(surplus[k]) / price

    def expected_spend(self, price: float) -> float:
        """Mean tokens the window's requests are expected to spend at ``price``."""
        n = min(self._n, self._tau.size)
        if n == 0:
            return 0.0
        tau = self.prior.threshold(1.0) * self._tau[:n]
        return float(np.mean(self._spends(tau, self._cap[:n], price)))

    def _spends(self, tau: FloatArray, cap: FloatArray, price: float) -> FloatArray:
        """Vectorised :meth:`quote` without floors or minimum sizes, as expected spends (N,)."""
        x, cut = self.terms(price)
        want = tau + x
        granted = np.minimum(want, cap)
        spends = tau + self.spend.excess(granted - tau)
        if price <= 0.0:
            return spends
        capped = want > cap
        worth_capped = self.shape.gains(cap - tau) - price * spends > 0
        funded = (tau < cut) & (~capped | worth_capped)
        return np.where(funded, spends, 0.0)

    def _learned(self) -> None:
        """Bring the spend model's latest requests into the cost grid."""
        self.spend.refresh()
        self._cost = self.spend.excess(self._grid)

    def update(self, now: float, spent: int, reserved: int, share: float = 1.0) -> float:
        """Re-clear: the price at which the forecast spending of the period's rest fits.

        Parameters
        ----------
        now : float
            Wall-clock seconds since the epoch.
        spent, reserved : int
            The ledger's totals of the current period (all replicas).
        share : float
            This replica's share of the traffic, in (0, 1] (1 for a single replica).

        Returns
        -------
        float
            The new price (also stored in :attr:`price`).
        """
        self._learned()
        self.exhausted, self.paused_for = False, 0.0
        target = self._target(now, spent, reserved, min(max(share, 1e-3), 1.0))
        if target is None:
            return self.set_price(0.0)
        if target <= 0.0:
            return self.set_price(self.shape.price_ceiling)
        return self._clear(target)

    def _target(self, now: float, spent: int, reserved: int, share: float) -> float | None:
        """Tokens each request still to come in the period may spend on average; None when
        there is nothing to forecast from (price 0), <= 0 to admit nobody (see :meth:`update`)."""
        left = self.period - (now % self.period)
        coming = self.arrivals.expected(now, left) / share
        if self._n < _MIN_ARRIVALS or coming <= 0.0:
            return None
        budget_left = self.budget - spent - self.prior.usage * reserved
        self.exhausted = budget_left <= 0.0
        return budget_left / coming

    def _clear(self, target: float, steps: int = _STEPS) -> float:
        """Set the price at which the window's mean expected spend meets ``target`` > 0."""
        if self.expected_spend(0.0) <= target:
            return self.set_price(0.0)
        # Bisection in log price between a tiny price and the ceiling (spending falls with it).
        lo, hi = math.log(self.shape.price_ceiling * 1e-9), math.log(self.shape.price_ceiling)
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            if self.expected_spend(math.exp(mid)) > target:
                lo = mid
            else:
                hi = mid
        return self.set_price(math.exp(hi))

    def set_price(self, price: float) -> float:
        """Use ``price`` (e.g. one agreed with other replicas) for the next decisions."""
        self.price = max(0.0, float(price))
        self._x, self._cut = self.terms(self.price)
        return self.price


class DualAscentPricer(OnlinePricer):
    """Price by dual ascent on the spend rate: lambda <- lambda * exp(eta * (pace error)).

    The pace error compares the share of the budget consumed (spent plus forecast use of open
    reservations) with the share of the period elapsed; the price rises multiplicatively when
    spending runs ahead and falls when it lags. Same decisions as :class:`OnlinePricer`.

    Parameters
    ----------
    eta : float
        Step size per update (log price per unit of pace error).
    floor_price : float
        Smallest positive price the ascent restarts from after reaching 0.
    """

    def __init__(
        self,
        budget: int,
        period: float,
        shape: Shape | None = None,
        *,
        eta: float = 2.0,
        floor_price: float = 1e-4,
        **kw: object,
    ) -> None:
        super().__init__(budget, period, shape, **kw)  # type: ignore[arg-type]
        self.eta, self.floor_price = float(eta), float(floor_price)

    def update(self, now: float, spent: int, reserved: int, share: float = 1.0) -> float:
        self._learned()
        elapsed = (now % self.period) / self.period
        used = (spent + self.prior.usage * reserved) / self.budget
        error = used - elapsed
        lam = max(self.price, self.floor_price * self.shape.price_ceiling)
        lam *= math.exp(self.eta * error)
        if lam <= self.floor_price * self.shape.price_ceiling and error < 0:
            lam = 0.0
        self.exhausted = lam >= self.shape.price_ceiling
        return self.set_price(min(lam, self.shape.price_ceiling))
