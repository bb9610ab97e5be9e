"""The online price with pacing and rationing at the cut (no I/O).

:class:`PacedPricer` decides like :class:`~shadowprice.online.pricer.OnlinePricer` (the same
window of curves, spend model, arrival forecast and population prior) with four changes; the
reasons and the arithmetic are in :mod:`shadowprice.online.decide`, the decision core that
drives it:

- the spend each coming request may expect is the forecast's (budget left over requests still
  to come), kept between the pace line's least and most (:class:`~.pace.PaceLine`);
- requests whose surplus at the price is within ``band`` of zero (relative to the surplus
  lambda T(lambda) of a request without a threshold; for an uncapped request, a threshold within
  ``band`` of the cut-off T) are *marginal*: a share of them, the one that makes the expected
  spend meet that target, is admitted, by a deterministic stride over the marginal arrivals (a
  seeded phase), so demand that jumps across the price (many requests with the same curve) is
  rationed instead of flipping between everyone and no one;
- a request whose ``max_tokens`` is below what its curve needs is priced on the curve truncated
  at that cap, and refused as ``cap_too_small`` when even that is not worth its cost.
- between two updates, grants are counted against the pace line's ceiling
  (:meth:`PacedPricer.within_pace`): the price has not yet seen a burst that arrives at a fresh
  start or after a quiet spell, and would otherwise admit all of it.
"""

from __future__ import annotations

import math

import numpy as np

from .arrivals import ArrivalForecast
from .pace import PaceLine
from .pricer import OnlinePricer, Quote, QuoteStatus
from .prior import PopulationPrior
from .shape import FloatArray, Shape
from .spend import SpendModel

__all__ = ["PacedPricer"]

#: Share of the marginal requests admitted when the window holds none to measure it on.
_UNKNOWN_SHARE = 0.5
#: Bisection steps of a price update: log-price precision ln(1e9) / 2^17, about 1.6e-4 (the
#: ration absorbs what is left).
_STEPS = 17


class PacedPricer(OnlinePricer):
    """Re-clearing price kept on the period's pace line, rationing marginal requests.

    Parameters
    ----------
    budget, period, shape, window, min_tokens, prior, arrivals, spend
        As for :class:`~shadowprice.online.pricer.OnlinePricer`.
    margin : float
        Share of the budget spending may run ahead of the pace line, in [0, 1].
    horizon : float, optional
        Seconds over which spending is brought back to the pace line (default: period / 12).
    band : float
        Relative width of the marginal band, in [0, 1): requests whose surplus lies in
        [-band, band) x lambda T (thresholds in [T (1 - band), T (1 + band)) when the cap does
        not bind) are rationed.
    seed : int
        Seeds the stride's phase.
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
        margin: float = 0.2,
        horizon: float | None = None,
        band: float = 0.01,
        seed: int = 0,
    ) -> None:
        super().__init__(
            budget,
            period,
            shape,
            window=window,
            min_tokens=min_tokens,
            prior=prior,
            arrivals=arrivals,
            spend=spend,
        )
        if not 0.0 <= band < 1.0:
            raise ValueError(f"band must be in [0, 1), got {band!r}")
        self.pace = PaceLine(budget, period, margin=margin, horizon=horizon)
        self.band = float(band)
        #: Share of the marginal requests admitted at the current price, in [0, 1].
        self.ration = 1.0
        #: Tokens committed at the latest update (settled + expected spend of reservations).
        self.committed = 0.0
        self._scale = self.prior.threshold(1.0)
        empty = np.zeros(0)
        self._win: tuple[FloatArray, ...] = (empty, empty, empty, empty)
        self._prepared = False
        self._credit = float(np.random.default_rng(seed).random())
        #: Ledger period (index) of :attr:`committed`, the latest update's.
        self._basis = -1
        #: Expected spend of the grants counted since the latest update, and their period.
        self._since, self._since_period = 0.0, -1
        self._share = 1.0

    # -- decisions --------------------------------------------------------------------------
    def quote(self, tau_hat: float, cap: int, floor: int = 0) -> Quote:
        """Allowance of one request at the current price and ration (O(1), no I/O).

        Parameters are those of :meth:`OnlinePricer.quote`. Each call for a marginal request
        advances the ration's stride, so call it once per arriving request.
        """
        tau = self._scale * tau_hat
        lam = self.price
        want, status, rationed = self._want(tau, cap, lam)
        b = int(want)
        if 0 < b < self.min_tokens:
            b = min(self.min_tokens, cap)
        if floor > 0 and b < min(floor, cap):
            f = min(floor, cap)
            return Quote(f, f, lam, "floor", tau)
        if b <= 0:
            return Quote(0, 0, lam, status, tau, rationed)
        least = min(b, max(self.min_tokens, math.ceil(tau + 0.5 * max(b - tau, 0.0))))
        return Quote(b, least, lam, "granted", tau)

    def within_pace(self, now: float, allowance: int, *, force: bool = False) -> bool:
        """Count a grant of ``allowance`` tokens at ``now`` against the pace line's ceiling.

        The price moves only at updates; in between, the grants this replica counted since
        the latest one (each expected to spend ``usage`` x its allowance, as :attr:`committed`
        counts open reservations) may fill its share of the room under the pace line's
        :meth:`~.pace.PaceLine.ceiling` left at that update, and no more: a burst the price
        has not yet seen takes what the margin allows, not the period's budget. One grant is
        always counted after an update while there is room, so that a request larger than the
        room is paced rather than never served.

        Parameters
        ----------
        now : float
            Seconds since the epoch.
        allowance : int
            Tokens of the grant.
        force : bool
            Count it whatever the room (a guaranteed floor).

        Returns
        -------
        bool
            Whether the grant was counted (False: refuse it, spending is ahead of the pace).
        """
        index = int(now // self.period)
        if index != self._since_period:
            self._since_period, self._since = index, 0.0
        committed = self.committed if index == self._basis else 0.0
        room = self._share * (self.pace.ceiling(now) - committed)
        expect = self.prior.usage * allowance
        if not force and (room <= 0.0 or (self._since > 0.0 and self._since + expect > room)):
            return False
        self._since += expect
        return True

    def withdraw(self, allowance: int) -> None:
        """Uncount ``allowance`` tokens of a grant :meth:`within_pace` counted that the ledger
        did not reserve (a refusal, or the part of a partial grant it could not hold)."""
        self._since = max(0.0, self._since - self.prior.usage * max(0, allowance))

    def _want(self, tau: float, cap: int, lam: float) -> tuple[float, QuoteStatus, bool]:
        """Tokens wanted at price ``lam`` (0 when refused), the refusal's status, and whether
        the ration refused it."""
        if lam <= 0.0:
            return min(cap, tau + self._x), "granted", False
        if cap <= tau:  # the truncated curve is worth nothing at any allowance
            return 0.0, "cap_too_small", False
        top = lam * self._cut  # the surplus of a request without a threshold
        want, capped = tau + self._x, False
        surplus = top - lam * tau
        if want > cap:
            want, capped = float(cap), True
            surplus = self.shape.gain(cap - tau) - lam * (tau + self.spend.excess_one(cap - tau))
        if top <= 0.0 or surplus < -self.band * top:
            return 0.0, ("cap_too_small" if capped and tau < self._cut else "priced_out"), False
        if surplus < self.band * top and not self._admit_marginal():
            return 0.0, "priced_out", True
        return want, "granted", False

    def _admit_marginal(self) -> bool:
        """One marginal arrival: admitted when the stride's credit reaches a whole request."""
        self._credit += self.ration
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    # -- the price ----------------------------------------------------------------------------
    def expected_spend(self, price: float) -> float:
        """Mean tokens the window's requests are expected to spend at ``price`` (no ration)."""
        if price <= 0.0 or min(self._n, self._tau.size) == 0:
            return super().expected_spend(price)
        spends, surplus, _ = self._window(price)
        return float(spends[surplus > 0.0].sum()) / spends.size

    def observe(self, now: float, tau_hat: float, cap: int) -> None:
        super().observe(now, tau_hat, cap)
        self._prepared = False

    def _prepare(self) -> None:
        """What the window's expected spends need that does not depend on the price (once
        per update or new arrival)."""
        if self._prepared:
            return
        self._prepared = True
        n = min(self._n, self._tau.size)
        tau = self._scale * self._tau[:n]
        room = self._cap[:n] - tau  # tokens the cap leaves above the threshold
        m_cap = self.spend.excess(np.maximum(room, 0.0))
        self._win = (tau, room, m_cap, self.shape.gains(room))

    def _window(self, price: float) -> tuple[FloatArray, FloatArray, float]:
        """At ``price`` > 0, for each window request: its expected spend if admitted and its
        surplus (-inf where its cap leaves nothing above its threshold); and the surplus of a
        request without a threshold (0 when nobody is funded)."""
        self._prepare()
        tau, room, m_cap, g_cap = self._win
        grid = self._gains - price * self._cost
        k = int(np.argmax(grid))
        if k == 0 or grid[k] <= 0.0:
            return np.zeros_like(tau), np.full_like(tau, -np.inf), 0.0
        top = float(grid[k])
        fits = room >= self._grid[k]
        spends = tau + np.where(fits, self._cost[k], m_cap)
        surplus = np.where(fits, top - price * tau, g_cap - price * (tau + m_cap))
        return spends, np.where(room > 0.0, surplus, -np.inf), top

    def _band_spends(self, price: float) -> tuple[float, float]:
        """Mean expected spend of the window's inframarginal and marginal requests at
        ``price`` > 0 (each as if admitted)."""
        spends, surplus, top = self._window(price)
        inside = surplus >= self.band * top
        marginal = ~inside & (surplus >= -self.band * top)
        return float(spends[inside].sum()) / spends.size, float(
            spends[marginal].sum()
        ) / spends.size

    def update(self, now: float, spent: int, reserved: int, share: float = 1.0) -> float:
        """Re-clear against the forecast, kept between the pace line's bounds; ration at the cut.

        Parameters and result as for :meth:`OnlinePricer.update`; also sets :attr:`ration`,
        :attr:`paused_for` and :attr:`committed`.
        """
        self._scale = self.prior.threshold(1.0)
        self._prepared = False
        self.ration = 1.0
        self._basis = self._since_period = int(now // self.period)
        self._since, self._share = 0.0, min(max(share, 1e-3), 1.0)
        price = super().update(now, spent, reserved, share)
        if price >= self.shape.price_ceiling:
            self.ration = 0.0
        return price

    def _target(self, now: float, spent: int, reserved: int, share: float) -> float | None:
        """The forecast's target (:meth:`OnlinePricer._target`) kept between the least and the
        most the pace line allows each request expected over its horizon."""
        target = super()._target(now, spent, reserved, share)
        self.committed = committed = spent + self.prior.usage * reserved
        if target is None or target <= 0.0:
            return target
        soon = self.arrivals.expected(now, self.pace.span(now)) / share
        least, most = self.pace.bounds(now, committed, soon)
        target = min(max(target, least), most)
        if target <= 0.0:
            self.paused_for = self.pace.resume_in(now, committed)
        return target

    def _clear(self, target: float, steps: int = _STEPS) -> float:
        """The price at which the window's mean expected spend meets ``target``, and the share
        of the marginal requests that makes it meet it exactly (:attr:`ration`)."""
        price = super()._clear(target, steps)
        if price > 0.0:
            inside, marginal = self._band_spends(price)
            share = (target - inside) / marginal if marginal > 0 else _UNKNOWN_SHARE
            self.ration = min(1.0, max(0.0, share))
        return price
