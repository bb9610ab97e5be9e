"""One price for a stream of requests under a budget of B tokens per period P (no I/O).

**Re-clearing over a sliding window.** Batch CLEAR finds the price at which the queries'
demand equals the budget. Online, the queries of the rest of the period have not arrived, so
the pricer clears against a forecast: the last ``window`` requests' predicted curves stand for
the population, their arrival times give the arrival rate, and the budget to clear against is
what is left in the period. At each :meth:`OnlinePricer.update` (every ``tick`` seconds), with
``now`` in period k:

    R       = B - spent - usage * reserved          (tokens left, open reservations forecast)
    N_rest  = rate * (end of period - now)          (requests still to come)
    lambda  = the price at which  N_rest * usage * mean_window b_i(lambda) = R

where b_i(lambda) = min(cap_i, tau_i + x*(lambda)) if the request is funded at lambda (see
:mod:`.shape`) and ``usage`` is the share of an allowance requests actually spend (learned by
:class:`~shadowprice.online.prior.PopulationPrior`): unused tokens return to the pool, so
allowances may add up to more than what is left. If demand at price 0 fits, the price is 0 and
everyone gets the peak of its curve. The ledger enforces the budget; the price only decides
who gets how much, so a forecast error costs accuracy, never an overshoot.

Replicas: each sees only its share of the traffic but the whole ledger; ``share`` (this
replica's part of the period's spending, or 1) scales the locally observed arrival rate to the
global one, so every replica computes the same price from the same shared totals.

**Decisions.** :meth:`OnlinePricer.quote` is O(1): the price's x* and cut-off T are cached at
each update; a request is priced out when tau >= T (or when the client's ``max_tokens`` is
below what its curve needs), unless it has a floor.

The alternative, dual ascent on the spend rate (:class:`DualAscentPricer`), raises the price
when tokens are spent faster than B/P and lowers it otherwise; it needs no forecast but reacts
only as fast as its step size allows (see ``docs/benchmarks.md`` for the comparison).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .prior import PopulationPrior
from .shape import FloatArray, Shape, SurgeShape, TermsTable

__all__ = ["DualAscentPricer", "OnlinePricer", "Quote"]

QuoteStatus = Literal["granted", "priced_out", "floor"]

#: Bisection steps of a price update (relative precision ~1e-4 on a log-price bracket).
_STEPS = 30
#: Below this many observed arrivals the rate is unknown: price 0.
_MIN_ARRIVALS = 8


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
    status : {'granted', 'priced_out', 'floor'}
        ``floor``: the curve would have priced it out but its class has a guaranteed floor.
    tau : float
        The (corrected) threshold the decision used, tokens.
    """

    allowance: int
    least: int
    price: float
    status: QuoteStatus
    tau: float


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
        Recent requests the forecast uses (>= 16).
    min_tokens : int
        Smallest allowance ever sent (>= 1).
    prior : PopulationPrior, optional
        Usage ratio and threshold scale learner (default: a fresh one for ``shape``).
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
        self.min_tokens = int(min_tokens)
        self._t = np.zeros(window)
        self._tau = np.zeros(window)
        self._cap = np.zeros(window)
        self._n = 0  # arrivals observed in total (ring position = _n % window)
        self.terms = TermsTable(self.shape)
        self.price = 0.0
        self._x, self._cut = self.terms(0.0)

    # -- observations -----------------------------------------------------------------------
    def observe(self, now: float, tau_hat: float, cap: int) -> None:
        """Record an arrival (priced out or not): its time, predicted threshold and cap."""
        i = self._n % self._t.size
        self._t[i], self._tau[i], self._cap[i] = now, tau_hat, cap
        self._n += 1

    def learn(self, tau_hat: float, allowance: int, used: int, finish_reason: str) -> None:
        """Feed a finished request to the population prior (see :class:`PopulationPrior`)."""
        self.prior.observe(tau_hat, allowance, used, finish_reason)

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
        lam, x = self.price, self._x
        want = 0.0
        if lam <= 0.0:
            want = min(cap, tau + x)
        elif tau < self._cut:
            want = tau + x
            # Capped below its demand: worth it only if the capped surplus stays positive.
            if want > cap:
                want = cap if self.shape.gain(cap - tau) - lam * cap > 0 else 0.0
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

    # -- the price ----------------------------------------------------------------------------
    def rate(self, now: float) -> float:
        """Arrivals per second over the window (this replica's), 0 if too few."""
        n = min(self._n, self._t.size)
        if n < _MIN_ARRIVALS:
            return 0.0
        oldest = float(self._t.min()) if n == self._t.size else float(self._t[:n].min())
        return n / max(now - oldest, 1e-3)

    def demand(self, price: float) -> float:
        """Mean allowance of the window's requests at ``price`` (tokens)."""
        n = min(self._n, self._t.size)
        if n == 0:
            return 0.0
        tau = self.prior.threshold(1.0) * self._tau[:n]
        cap = self._cap[:n]
        return float(np.mean(_allowances(self.shape, self.terms(price), tau, cap, price)))

    def update(self, now: float, spent: int, reserved: int, share: float = 1.0) -> float:
        """Re-clear: the price at which the forecast demand of the period's rest fits.

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
        rate = self.rate(now) / min(max(share, 1e-3), 1.0)
        left = self.period - (now % self.period)
        rho = self.prior.usage
        budget_left = self.budget - spent - rho * reserved
        expected = rate * left * rho  # tokens spent per token of mean allowance
        if rate <= 0.0:
            return self.set_price(0.0)
        if budget_left <= 0.0:
            return self.set_price(self.shape.price_ceiling)
        target = budget_left / expected
        if self.demand(0.0) <= target:
            return self.set_price(0.0)
        # Bisection in log price between a tiny price and the ceiling (demand falls with price).
        lo, hi = math.log(self.shape.price_ceiling * 1e-9), math.log(self.shape.price_ceiling)
        for _ in range(_STEPS):
            mid = 0.5 * (lo + hi)
            if self.demand(math.exp(mid)) > target:
                lo = mid
            else:
                hi = mid
        return self.set_price(math.exp(hi))

    def set_price(self, price: float) -> float:
        """Use ``price`` (e.g. one agreed with other replicas) for the next decisions."""
        self.price = max(0.0, float(price))
        self._x, self._cut = self.terms(self.price)
        return self.price


def _allowances(
    shape: Shape, terms: tuple[float, float], tau: FloatArray, cap: FloatArray, price: float
) -> FloatArray:
    """Vectorised :meth:`OnlinePricer.quote` without floors or minimum sizes, shape (N,)."""
    x, cut = terms
    want = tau + x
    if price <= 0.0:
        return np.minimum(want, cap)
    capped = want > cap
    ok_capped = shape.gains(cap - tau) - price * cap > 0
    funded = (tau < cut) & (~capped | ok_capped)
    return np.where(funded, np.minimum(want, cap), 0.0)


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
        elapsed = (now % self.period) / self.period
        used = (spent + self.prior.usage * reserved) / self.budget
        error = used - elapsed
        lam = max(self.price, self.floor_price * self.shape.price_ceiling)
        lam *= math.exp(self.eta * error)
        if lam <= self.floor_price * self.shape.price_ceiling and error < 0:
            lam = 0.0
        return self.set_price(min(lam, self.shape.price_ceiling))
