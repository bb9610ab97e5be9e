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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .tables import CurveTables

__all__ = ["LengthCalibrator", "LengthShift", "median_lengths", "shift_tables"]

FloatArray = NDArray[np.float64]

#: Grid of the fit: log scale theta and log spread log(kappa).
THETAS = np.round(np.arange(-3.0, 3.0 + 1e-9, 0.1), 10)
LOG_KAPPAS = np.round(np.arange(-0.7, 0.7 + 1e-9, 0.1), 10)
#: Likelihood-ratio statistic a correction must exceed (chi-square, 2 df, 1 %).
LR_THRESHOLD = 9.21
#: Half-width (in log tokens) of the bin a finished length is scored in.
_BIN = 0.05
#: Floor of every probability in the likelihood (robust to a few wild observations).
_FLOOR = 1e-4
#: Observations used in one fit (a deterministic subsample beyond this).
_MAX_OBS = 1024


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


def shift_tables(base: CurveTables, medians: FloatArray, shift: LengthShift) -> CurveTables:
    """The tables under a length correction: value and survival read at the equivalent
    budget, spend re-integrated from survival (trapezoid on a refined grid)."""
    if shift.identity:
        return base
    g = base.grid.astype(float)
    n = base.n
    rows = np.arange(n)
    log_m = np.log(np.maximum(medians, 1.0))[:, None]
    theta, kappa = shift.log_scale, shift.spread
    phi = _base_budget(np.broadcast_to(g, (n, g.size)), log_m, theta, kappa)
    phi[:, 0] = 0.0
    value = _interp_rows(base.value, g, rows, phi)
    surv = _interp_rows(base.survival, g, rows, phi)
    surv[:, 0] = 1.0
    # Integrate survival over a finer grid so that spend stays accurate between grid points.
    t = np.linspace(0.0, 1.0, _SUBSTEPS + 1)[:-1]
    fine = np.concatenate([(g[:-1, None] + t[None, :] * np.diff(g)[:, None]).ravel(), g[-1:]])
    phi_f = _base_budget(np.broadcast_to(fine, (n, fine.size)), log_m, theta, kappa)
    phi_f[:, 0] = 0.0
    surv_f = _interp_rows(base.survival, g, rows, phi_f)
    surv_f[:, 0] = 1.0
    area = 0.5 * (surv_f[:, 1:] + surv_f[:, :-1]) * np.diff(fine)
    spend_f = np.concatenate([np.zeros((n, 1)), np.cumsum(area, axis=1)], axis=1)
    spend = spend_f[:, ::_SUBSTEPS]
    return CurveTables(
        base.grid,
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
        *,
        prior_scale_sd: float = 1.5,
        prior_spread_sd: float = 0.5,
        first: int = 8,
        last: int = 4096,
    ) -> None:
        self.base = base
        self.log_m = np.log(np.maximum(median_lengths(base), 1.0))
        self.prior_scale_sd = float(prior_scale_sd)
        self.prior_spread_sd = float(prior_spread_sd)
        self.tokens = np.zeros(base.n)
        self.finished = np.zeros(base.n, dtype=bool)
        self.seen = np.zeros(base.n, dtype=bool)
        self.count = 0
        self.next_fit = int(first)
        self.last = int(last)
        self.current = LengthShift()

    def observe(self, query: int, tokens: int, finished: bool) -> None:
        """A request of ``query`` ended with ``tokens`` generated in all (finished, or stopped
        on its cap: then the length exceeds ``tokens``). Later observations of the same
        query replace earlier ones."""
        if not self.seen[query]:
            self.seen[query] = True
            self.count += 1
        self.tokens[query] = tokens
        self.finished[query] = finished

    def due(self) -> bool:
        """True when enough new observations arrived for another fit."""
        return self.count >= self.next_fit and self.count <= self.last

    def loglik(self, thetas: FloatArray, kappas: FloatArray) -> FloatArray:
        """Log-likelihood of the observations under each (theta, kappa) pair, shape (C,)."""
        q = np.flatnonzero(self.seen)
        if q.size > _MAX_OBS:
            q = q[np.linspace(0, q.size - 1, _MAX_OBS).astype(np.int64)]
        g = self.base.grid.astype(float)
        t = np.maximum(self.tokens[q], 1.0)[:, None]
        lm = self.log_m[q][:, None]
        th, ka = thetas[None, :], kappas[None, :]

        def surv_at(x: FloatArray) -> FloatArray:
            return _interp_rows(self.base.survival, g, q, _base_budget(x, lm, th, ka))

        fin = self.finished[q][:, None]
        hi = surv_at(t * np.exp(_BIN))
        lo = surv_at(t * np.exp(-_BIN))
        p = np.where(fin, lo - hi, surv_at(t))
        return np.log(np.maximum(p, 0.0) + _FLOOR).sum(axis=0)

    def fit(self) -> LengthShift | None:
        """Fit a shift to the observations; return it if it beats the current one by the
        likelihood-ratio test (else None). Schedules the next fit."""
        self.next_fit = max(2 * self.count, self.next_fit + 1)
        grid_th, grid_lk = np.meshgrid(THETAS, LOG_KAPPAS, indexing="ij")
        th, lk = grid_th.ravel(), grid_lk.ravel()
        ll = self.loglik(th, np.exp(lk))
        prior = -0.5 * (th / self.prior_scale_sd) ** 2 - 0.5 * (lk / self.prior_spread_sd) ** 2
        best = int(np.argmax(ll + prior))
        cur = self.current
        ll_cur = float(
            self.loglik(np.array([cur.log_scale]), np.array([np.exp(cur.log_spread)]))[0]
        )
        if 2.0 * (float(ll[best]) - ll_cur) <= LR_THRESHOLD:
            return None
        self.current = LengthShift(float(th[best]), float(lk[best]))
        return self.current
