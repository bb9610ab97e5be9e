"""Online length calibration: fit the scale and spread of the lengths from what finished.

Curves predicted for one model (e.g. a text predictor trained on Qwen2.5-Math solutions) rank
queries usefully on another model but can get the length scale badly wrong: a reasoning model
may write ten times longer. The live planner sees, for every request that ends, either the
length L (it finished) or a lower bound (it stopped on its cap a: L > a, a censored
observation). This module fits a two-parameter correction of all lengths,

    log L = log m_i + theta + kappa (log L0 - log m_i),

where L0 follows the curves' own length law and m_i is its median: ``theta`` moves every
length by the factor e^theta and ``kappa`` stretches the spread of each query's lengths around
its median. Values move with their lengths (V(b) = V0(phi_i(b)), phi_i the inverse map), so
a query predicted to need 300 tokens that in fact needs 3000 has its whole curve moved there.

The fit is a censored maximum likelihood on a grid of (theta, log kappa) with weak normal
priors centred on "no correction", and a correction is only adopted when it is significantly
better than the one in use (likelihood-ratio test): curves fitted to the same model are left
alone, while lengths several times off are caught after a handful of observations.

Requests that end early are short ones, so the requests that have ended by some time are a
sample biased toward short lengths (and so is any set cut off by what is still running). The
fit therefore uses fixed cohorts: the first k queries started, each by the outcome of its
*first* request, once every one of those k first requests has ended, for k = 8, 16, 32, ...
Which queries are in a cohort does not depend on their lengths, and waiting for all of them
conditions on nothing, so each cohort is an unbiased (censored) sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .tables import CurveTables

__all__ = ["LengthCalibrator", "LengthShift", "median_lengths", "shift_tables"]

FloatArray = NDArray[np.float64]

#: Coarse grid of the fit (log scale theta, log spread log kappa), refined around its best
#: point to steps of 0.1.
THETAS = np.round(np.arange(-3.0, 3.0 + 1e-9, 0.3), 10)
LOG_KAPPAS = np.round(np.arange(-0.6, 0.6 + 1e-9, 0.2), 10)
_FINE = 0.1
#: Likelihood-ratio statistic a correction must exceed (chi-square, 2 df, 0.1 %: it is
#: tested at every cohort, so each test must rarely fire by chance).
LR_THRESHOLD = 13.8
#: Half-width (in log tokens) of the bin a finished length is scored in.
_BIN = 0.05
#: Floor of every probability in the likelihood (robust to a few wild observations).
_FLOOR = 1e-4
#: Observations used in one fit (a deterministic subsample beyond this).
_MAX_OBS = 512


@dataclass(frozen=True)
class LengthShift:
    """A correction of all lengths: L = m e^theta (L0 / m)^kappa (see module docstring).

    Attributes
    ----------
    log_scale : float
        theta; lengths are e^theta times the curves' (at the median).
    log_spread : float
        log kappa; each query's log-lengths spread kappa times as wide.
    """

    log_scale: float = 0.0
    log_spread: float = 0.0

    @property
    def identity(self) -> bool:
        return self.log_scale == 0.0 and self.log_spread == 0.0

    @property
    def scale(self) -> float:
        return float(np.exp(self.log_scale))

    @property
    def spread(self) -> float:
        return float(np.exp(self.log_spread))


def median_lengths(tables: CurveTables) -> FloatArray:
    """Median of each query's length law (tokens, (N,)): where survival crosses 1/2,
    interpolated in log budget; the grid's ends where it never does."""
    g = tables.grid.astype(float)
    s = tables.survival
    below = s <= 0.5
    j = np.where(below.any(axis=1), np.argmax(below, axis=1), g.size - 1)
    j = np.maximum(j, 1)
    rows = np.arange(tables.n)
    s0, s1 = s[rows, j - 1], s[rows, j]
    lg0 = np.log(np.maximum(g[j - 1], g[1]))
    lg1 = np.log(g[j])
    w = np.clip((s0 - 0.5) / np.maximum(s0 - s1, 1e-12), 0.0, 1.0)
    return np.exp(lg0 + w * (lg1 - lg0))


def _interp_rows(
    table: FloatArray, grid: FloatArray, rows: NDArray[np.intp], x: FloatArray
) -> FloatArray:
    """Linear interpolation of table[rows] at budgets x (same leading shape as rows, any
    trailing shape); flat beyond the grid's ends."""
    j = np.clip(np.searchsorted(grid, x), 1, grid.size - 1)
    g0, g1 = grid[j - 1], grid[j]
    w = np.clip((x - g0) / (g1 - g0), 0.0, 1.0)
    r = rows.reshape(rows.shape + (1,) * (np.ndim(x) - rows.ndim))
    return table[r, j - 1] + w * (table[r, j] - table[r, j - 1])


def _base_budget(
    x: FloatArray, log_m: FloatArray, theta: float | FloatArray, kappa: float | FloatArray
) -> FloatArray:
    """phi(x): the budget under the curves' own law equivalent to x under the shifted one."""
    lx = np.log(np.maximum(x, 1e-9))
    return np.exp(log_m + (lx - log_m - theta) / kappa)


#: Sub-intervals per grid step when integrating survival into spend.
_SUBSTEPS = 4


def shift_tables(
    base: CurveTables, medians: FloatArray, shift: LengthShift, max_tokens: int | None = None
) -> CurveTables:
    """The tables under a length correction, on the base grid scaled by e^theta (so the
    grid keeps covering the lengths wherever they moved).

    A pure scale change is exact: value and survival at b e^theta are the base's at b, spend
    is e^theta times the base's. With a spread change, value and survival are read at the
    equivalent budget and spend is re-integrated from survival (trapezoid, refined grid).
    """
    if shift.identity:
        return base
    scale = shift.scale
    g = np.unique(np.round(base.grid * scale)).astype(np.int64)
    if max_tokens is not None:
        g = np.unique(np.minimum(g, int(max_tokens)))
    if shift.log_spread == 0.0 and g.size == base.grid.size:
        return CurveTables(g, base.value, base.spend * scale, base.survival)
    gb = base.grid.astype(float)
    gf = g.astype(float)
    n = base.n
    rows = np.arange(n)
    log_m = np.log(np.maximum(medians, 1.0))[:, None]
    theta, kappa = shift.log_scale, shift.spread

    def read(table: FloatArray, budgets: FloatArray) -> FloatArray:
        phi = _base_budget(np.broadcast_to(budgets, (n, budgets.size)), log_m, theta, kappa)
        phi[:, 0] = 0.0
        return _interp_rows(table, gb, rows, phi)

    value = read(base.value, gf)
    surv = read(base.survival, gf)
    surv[:, 0] = 1.0
    # Integrate survival over a finer grid so that spend stays accurate between grid points.
    t = np.linspace(0.0, 1.0, _SUBSTEPS + 1)[:-1]
    fine = np.concatenate([(gf[:-1, None] + t[None, :] * np.diff(gf)[:, None]).ravel(), gf[-1:]])
    surv_f = read(base.survival, fine)
    surv_f[:, 0] = 1.0
    area = 0.5 * (surv_f[:, 1:] + surv_f[:, :-1]) * np.diff(fine)
    spend_f = np.concatenate([np.zeros((n, 1)), np.cumsum(area, axis=1)], axis=1)
    spend = spend_f[:, ::_SUBSTEPS]
    return CurveTables(
        g,
        np.maximum.accumulate(value, axis=1),
        np.maximum.accumulate(spend, axis=1),
        np.minimum.accumulate(np.clip(surv, 0.0, 1.0), axis=1),
    )


class LengthCalibrator:
    """Collects finished and capped requests and fits a :class:`LengthShift` to them.

    Parameters
    ----------
    base : CurveTables
        The curves as predicted (their survival is the length law L0).
    survival : callable, optional
        ``survival(rows, budgets)``: the exact P(L0 > b) of queries ``rows`` (R,) at budgets
        (R, C), e.g. from the curves themselves; default: interpolated in ``base``, which on
        a coarse grid widens narrow length laws and so biases the spread.
    prior_scale_sd : float
        Standard deviation of theta's normal prior (log units; 1.5 ~ a factor 4.5).
    prior_spread_sd : float
        Standard deviation of log kappa's normal prior.
    first : int
        Observations before the first fit; later fits each time the count doubles.
    last : int
        No fits once this many queries have been observed (the estimate has settled).
    """

    def __init__(
        self,
        base: CurveTables,
        survival: Callable[[NDArray[np.intp], FloatArray], FloatArray] | None = None,
        *,
        prior_scale_sd: float = 1.5,
        prior_spread_sd: float = 0.5,
        first: int = 8,
        last: int = 4096,
    ) -> None:
        self.base = base
        self.survival = survival
        self.log_m = np.log(np.maximum(median_lengths(base), 1.0))
        self.prior_scale_sd = float(prior_scale_sd)
        self.prior_spread_sd = float(prior_spread_sd)
        self.tokens = np.zeros(base.n)
        self.finished = np.zeros(base.n, dtype=bool)
        self.seen = np.zeros(base.n, dtype=bool)
        self.closed = np.zeros(base.n, dtype=bool)
        self.cohort: list[int] = []  # queries in the order they started
        self.ready = 0  # the first `ready` started queries have all ended
        self.first = int(first)
        self.next_fit = int(first)
        self.last = int(last)
        self.current = LengthShift()

    def started(self, query: int) -> None:
        """``query``'s first request was sent."""
        self.cohort.append(int(query))

    def ended(self, query: int, tokens: int, finished: bool) -> None:
        """``query``'s first request ended after ``tokens`` tokens: it finished (the length is
        ``tokens``) or stopped on its cap (the length exceeds ``tokens``)."""
        self.tokens[query] = tokens
        self.finished[query] = finished
        self.seen[query] = True
        self._end(query)

    def drop(self, query: int) -> None:
        """``query`` was given up without an outcome (its requests failed)."""
        self._end(query)

    def _end(self, query: int) -> None:
        self.closed[query] = True
        while self.ready < len(self.cohort) and self.closed[self.cohort[self.ready]]:
            self.ready += 1

    @property
    def count(self) -> int:
        """Size of the largest complete cohort."""
        return self.ready

    def due(self) -> bool:
        """True when a cohort twice the last one fitted is complete."""
        return self.next_fit <= self.ready <= self.last

    def loglik(
        self, thetas: FloatArray, kappas: FloatArray, rows: NDArray[np.intp] | None = None
    ) -> FloatArray:
        """Log-likelihood of the observations of ``rows`` (default: all observed queries)
        under each (theta, kappa) pair, shape (C,)."""
        q = np.flatnonzero(self.seen) if rows is None else np.asarray(rows)
        if q.size > _MAX_OBS:
            q = q[np.linspace(0, q.size - 1, _MAX_OBS).astype(np.int64)]
        g = self.base.grid.astype(float)
        t = np.maximum(self.tokens[q], 1.0)[:, None]
        lm = self.log_m[q][:, None]
        th, ka = thetas[None, :], kappas[None, :]

        def surv_at(x: FloatArray) -> FloatArray:
            b = _base_budget(x, lm, th, ka)
            if self.survival is not None:
                return self.survival(q, b)
            return _interp_rows(self.base.survival, g, q, b)

        fin = self.finished[q][:, None]
        hi = surv_at(t * np.exp(_BIN))
        lo = surv_at(t * np.exp(-_BIN))
        p = np.where(fin, lo - hi, surv_at(t))
        return np.log(np.maximum(p, 0.0) + _FLOOR).sum(axis=0)

    def _search(
        self, thetas: FloatArray, log_kappas: FloatArray, rows: NDArray[np.intp]
    ) -> tuple[float, float, float]:
        """Best (theta, log kappa, log-likelihood) by posterior over a product grid."""
        g_th, g_lk = np.meshgrid(thetas, log_kappas, indexing="ij")
        th, lk = g_th.ravel(), g_lk.ravel()
        ll = self.loglik(th, np.exp(lk), rows)
        prior = -0.5 * (th / self.prior_scale_sd) ** 2 - 0.5 * (lk / self.prior_spread_sd) ** 2
        best = int(np.argmax(ll + prior))
        return float(th[best]), float(lk[best]), float(ll[best])

    def fit(self) -> LengthShift | None:
        """Fit a shift to the complete cohort; return it if it beats the current one by the
        likelihood-ratio test (else None). Schedules the next fit."""
        members = np.asarray(self.cohort[: self.ready], dtype=np.int64)
        q = members[self.seen[members]]
        self.next_fit = max(2 * self.ready, self.next_fit + 1)
        if q.size < self.first:
            return None
        th, lk, _ = self._search(THETAS, LOG_KAPPAS, q)
        step = np.arange(-3, 4) * _FINE
        th, lk, ll = self._search(
            np.clip(th + step, THETAS[0], THETAS[-1]),
            np.clip(lk + step[1:-1], LOG_KAPPAS[0], LOG_KAPPAS[-1]),
            q,
        )
        cur = self.current
        ll_cur = float(
            self.loglik(np.array([cur.log_scale]), np.array([np.exp(cur.log_spread)]), q)[0]
        )
        if 2.0 * (ll - ll_cur) <= LR_THRESHOLD:
            return None
        self.current = LengthShift(round(th, 10), round(lk, 10))
        return self.current
