"""Curves from traces: empirical curves, shrunk (empirical-Bayes) curves and family fits.

A trace set gives, for each of N queries, S_i samples with a length in tokens and a correct
flag. The accuracy a hard cap of b tokens buys on query i is

    P_i(b) = P(correct and length <= b) = p_i * F_i(b)

with p_i the chance the query is solved at all and F_i the length distribution of its correct
solutions. With the usual 4-8 samples per query both factors are noisy, and an allocator that
trusts them (:func:`empirical_curves`) spends tokens on noise. :class:`ShrunkCurveFitter`
shrinks both factors toward the pool:

- ``p_i``: Beta-binomial posterior mean; the prior's mean and strength are fitted to all
  queries by marginal likelihood (empirical Bayes).
- ``F_i``: log-lengths of correct samples are ``mu_i + e``, with ``e`` drawn from one
  residual shape shared by the pool (kernel-smoothed) and ``mu_i`` a normal-normal
  posterior (shrunk toward the pool mean by the ratio of within- to between-query variance).
  The curve averages over the posterior of ``mu_i`` (Gauss-Hermite), so a query known from one
  correct sample gets a wide, honest curve rather than a step.

Every fitted curve also carries the lengths of *all* samples (correct or not), which give the
expected spend S_i(b) = E[min(L, b)] of a cap under spent accounting: the shrunk fitter
shrinks all samples' log-lengths exactly as it shrinks the correct ones'; the Gamma and surge
fitters fit shifted Gamma(2) lengths (:class:`~shadowprice.curves.GammaLengths`).

The paper's family fits are :class:`SurgeFitter` (shifted surge, alpha and beta shared, tau per
query) and :class:`GammaFitter` (shifted Gamma(2) S-curve, beta shared, tau and p per query).
:func:`goodness_of_fit` scores any probability curve against held-out traces.

Units: budgets and lengths in tokens; curve values are probabilities except for
:class:`~shadowprice.curves.ShiftedSurge` (the paper's latent utility).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

from .curves import (
    EmpiricalCurve,
    GammaLengths,
    GammaSCurve,
    ShiftedSurge,
    TabulatedCurve,
    TabulatedLengths,
    UtilityCurve,
)
from .curves.grid import check_grid
from .traces import TraceSet

FloatArray = NDArray[np.float64]

__all__ = [
    "BetaBinomialPrior",
    "GammaFitter",
    "ShrunkCurveFitter",
    "SurgeFitter",
    "default_grid",
    "empirical_curves",
    "fit_beta_binomial",
    "fit_gamma",
    "fit_shrunk",
    "fit_surge",
    "goodness_of_fit",
]

#: Gauss-Hermite nodes used to average a curve over the posterior of its location.
_GH_NODES = 9
#: Queries tabulated at once for spend (bounds temporaries at (rows, K, nodes)).
_ROWS = 4096


# -- validation -----------------------------------------------------------------------------
def _arrays(traces: TraceSet) -> tuple[FloatArray, NDArray[np.bool_], NDArray[np.int64]]:
    """(tokens (N, S) NaN-padded, correct (N, S), n_samples (N,)), validated."""
    if not isinstance(traces, TraceSet):
        raise TypeError(f"traces must be a TraceSet, got {type(traces).__name__}")
    if traces.n == 0:
        raise ValueError("traces hold no queries")
    t = traces.tokens()
    c = traces.correct() & ~np.isnan(t)
    return t, c, traces.n_samples()


def default_grid(traces: TraceSet, levels: int = 64, top: float | None = None) -> NDArray[np.int64]:
    """A budget grid for fitted curves: 0, then ``levels - 1`` geometric steps (integers).

    Runs from a quarter of the shortest sample to twice the longest (or ``top``), so that every
    useful cap has a nearby grid point; geometric because lengths vary multiplicatively.

    Parameters
    ----------
    traces : TraceSet
        Samples whose lengths set the range.
    levels : int
        Grid points including 0 (>= 3); rounding may merge a few at the short end.
    top : float, optional
        Last budget in tokens (default: twice the longest sample).

    Returns
    -------
    ndarray of int64, shape (K,)
        Budgets in tokens, ascending from 0, K <= ``levels``.
    """
    if levels < 3:
        raise ValueError(f"levels must be at least 3, got {levels}")
    t = traces.tokens()
    lo = max(float(np.nanmin(t)) / 4.0, 1.0)
    hi = float(top) if top is not None else max(2.0 * float(np.nanmax(t)), lo * 4.0)
    g = np.unique(np.round(np.geomspace(lo, hi, levels - 1)).astype(np.int64))
    return np.concatenate([[0], g[g > 0]])


def _check_fitted(fitter: object) -> None:
    if not hasattr(fitter, "curves_"):
        raise RuntimeError(
            f"this {type(fitter).__name__} is not fitted yet; call fit(traces) first, then "
            f"read the fitted curves from its curves_ attribute"
        )


# -- raw curves -----------------------------------------------------------------------------
def empirical_curves(traces: TraceSet) -> EmpiricalCurve:
    """Each query's raw empirical curve: share of its samples correct within b tokens.

    This is what a hard cap scores on these samples; as a *plan* it overfits (4 samples make a
    4-step curve).

    Parameters
    ----------
    traces : TraceSet
        N queries with their samples.

    Returns
    -------
    EmpiricalCurve
        N curves.
    """
    t, c, _ = _arrays(traces)
    return EmpiricalCurve(t, c)


# -- success probability: Beta-binomial empirical Bayes ---------------------------------------
@dataclass(frozen=True)
class BetaBinomialPrior:
    """Beta(mean * strength, (1 - mean) * strength) prior over per-query success rates.

    ``strength`` is in pseudo-samples: a query with n samples keeps weight n / (n + strength)
    on its own rate.

    Attributes
    ----------
    mean : float
        Prior mean success rate, in (0, 1).
    strength : float
        Prior weight in pseudo-samples (> 0).
    """

    mean: float
    strength: float

    def posterior_mean(self, k: ArrayLike, n: ArrayLike, scale: float = 1.0) -> FloatArray:
        """Posterior mean success rate (k + s m) / (n + s), with s = ``scale`` * strength.

        Parameters
        ----------
        k, n : array_like
            Successes and trials per query.
        scale : float
            Multiplies the prior strength (1 = the fitted prior).

        Returns
        -------
        ndarray of float64
            Shape of ``k``.
        """
        s = self.strength * scale
        return (np.asarray(k, float) + s * self.mean) / (np.asarray(n, float) + s)


def fit_beta_binomial(k: ArrayLike, n: ArrayLike) -> BetaBinomialPrior:
    """Fit a Beta prior to per-query successes ``k`` out of ``n`` by marginal likelihood.

    Parameters
    ----------
    k, n : int arrays (N,)
        Successes and trials per query (0 <= k <= n, n >= 1).

    Returns
    -------
    BetaBinomialPrior
        A weak prior at the pooled rate when every query has the same outcome (no spread to
        learn from); the strength is kept within [0.05, 1e4] pseudo-samples.

    Raises
    ------
    ValueError
        When the arrays differ in shape, are empty, or break 0 <= k <= n, n >= 1.
    """
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    if k.shape != n.shape or k.ndim != 1 or k.size == 0:
        raise ValueError("k and n must be 1-D arrays of the same non-zero length")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n and n >= 1 for every query")
    m0 = float(np.clip(k.sum() / n.sum(), 1e-3, 1 - 1e-3))
    if np.all(k == 0) or np.all(k == n):
        # No spread to learn from: a weak prior at the observed rate.
        return BetaBinomialPrior(m0, 1.0)

    def nll(theta: FloatArray) -> float:
        m, s = special.expit(theta[0]), np.exp(theta[1])
        return -float(stats.betabinom.logpmf(k, n, m * s, (1 - m) * s).sum())

    res = optimize.minimize(
        nll,
        x0=np.array([special.logit(m0), 0.0]),
        method="Nelder-Mead",
        options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000},
    )
    m, s = float(special.expit(res.x[0])), float(np.exp(res.x[1]))
    # Bound the strength: below 0.05 pseudo-samples shrinkage is nil; above 1e4 it is total.
    return BetaBinomialPrior(m, float(np.clip(s, 0.05, 1e4)))


# -- location of correct lengths: normal-normal empirical Bayes -------------------------------
@dataclass(frozen=True)
class _Location:
    mu: FloatArray  # (N,) posterior mean of each query's location
    var: FloatArray  # (N,) posterior variance
    residuals: FloatArray  # pooled within-query residuals (df-corrected)
    sigma2: float  # within-query variance
    tau2: float  # between-query variance
    mu0: float  # pool mean


def _location(
    y: FloatArray, ok: NDArray[np.bool_], fallback: FloatArray, scale: float = 1.0
) -> _Location:
    """Shrink per-query means of ``y`` (N, S) over entries ``ok`` toward the pool.

    Queries with no ``ok`` entry get ``fallback`` (N,) as their data mean with one
    pseudo-observation (used: the mean log-length of all their samples).
    """
    nc = ok.sum(axis=1)
    ysum = np.where(ok, y, 0.0).sum(axis=1)
    ybar = np.where(nc > 0, ysum / np.maximum(nc, 1), fallback)
    neff = np.where(nc > 0, nc, 1).astype(float)
    dev = np.where(ok, y - ybar[:, None], 0.0)
    multi = nc >= 2
    if multi.any():
        sigma2 = float((dev[multi] ** 2).sum() / (nc[multi] - 1).sum())
        res = (dev * np.sqrt(nc / np.maximum(nc - 1, 1))[:, None])[ok & multi[:, None]]
    else:
        sigma2, res = 0.0, np.zeros(1)
    sigma2 = max(sigma2, 1e-6)
    has = nc > 0
    w = neff[has]
    mu0 = float(np.average(ybar[has], weights=w)) if has.any() else float(np.mean(fallback))
    tau2 = (
        float(np.average((ybar[has] - mu0) ** 2, weights=w) - np.mean(sigma2 / w))
        if has.sum() > 1
        else 0.0
    )
    tau2 = max(tau2, 1e-6)
    # Shrinkage scale > 1 strengthens the prior (smaller tau2), < 1 weakens it.
    t2 = tau2 / max(scale, 1e-9)
    prec = neff / sigma2 + 1.0 / t2
    mu = (neff * ybar / sigma2 + mu0 / t2) / prec
    return _Location(mu, 1.0 / prec, res, sigma2, tau2, mu0)


#: Residual sets up to this size are smoothed sample by sample; larger ones are first binned
#: linearly onto :data:`_BINS` points (the kernel is at least 0.02 wide and a bin at most
#: (range / 8192), so the tables move by far less than their own smoothing).
_EXACT_KERNEL = 16_384
_BINS = 8_192
#: Points of the tabulated kernel functions.
_TABLE = 2_048


def _kernel_bandwidth(r: FloatArray) -> float:
    sd = float(np.std(r)) if r.size > 1 else 0.0
    return max(1.06 * sd * r.size ** (-0.2), 0.02)


class _KernelShape:
    """The Gaussian-kernel-smoothed law of residuals ``e``, tabulated once.

    :meth:`cdf` gives P(e <= z); :meth:`capped_mean` gives E[min(e^e, e^z)] (each kernel is
    a log-normal, whose capped mean is closed form:
    E[min(e^(r + hZ), e^z)] = e^(r + h^2/2) Phi((z - r - h^2)/h) + e^z (1 - Phi((z - r)/h))).
    Both are tabulated on :data:`_TABLE` points and interpolated: O(|z| + 2048 |r|) per fit
    instead of O(|z| |r|).
    """

    def __init__(self, residuals: FloatArray) -> None:
        r = np.asarray(residuals, float)
        self.h = h = _kernel_bandwidth(r)
        self.lo, self.hi = float(r.min()) - 6 * h, float(r.max()) + 6 * h
        self.zz = np.linspace(self.lo, self.hi, _TABLE)
        centres, weights = _binned(r)
        self.mean = float(np.mean(np.exp(r + h * h / 2)))
        self._cdf = np.zeros_like(self.zz)
        self._capped = np.zeros_like(self.zz)
        ez = np.exp(self.zz)[:, None]
        parts = max(1, centres.size // 4096 + 1)
        wparts = [None] * parts if weights is None else np.array_split(weights, parts)
        for c, wt in zip(np.array_split(centres, parts), wparts, strict=True):
            d = self.zz[:, None] - c[None, :]
            cdf = special.ndtr(d / h)
            capped = np.exp(c + h * h / 2)[None, :] * special.ndtr((d - h * h) / h) + ez * (
                special.ndtr(-d / h)
            )
            self._cdf += (cdf * wt).sum(axis=1) if wt is not None else cdf.sum(axis=1)
            self._capped += (capped * wt).sum(axis=1) if wt is not None else capped.sum(axis=1)
        if weights is None:  # plain sums of the residuals' kernels: divide once
            self._cdf /= r.size
            self._capped /= r.size

    def cdf(self, z: FloatArray) -> FloatArray:
        """P(e <= z), shape of ``z``."""
        return np.interp(z, self.zz, self._cdf, left=0.0, right=1.0)

    def capped_mean(self, z: FloatArray) -> FloatArray:
        """E[min(e^e, e^z)], shape of ``z``."""
        out = np.interp(z, self.zz, self._capped, right=self.mean)
        # Below every kernel the cap binds: min(e^e, e^z) = e^z.
        return np.where(z < self.lo, np.exp(np.minimum(z, self.lo)), out)


def _binned(r: FloatArray) -> tuple[FloatArray, FloatArray | None]:
    """(points, weights summing to 1): the residuals themselves (weights None: equal), or,
    for large sets, their linear binning onto :data:`_BINS` points (each residual's mass
    split between the two nearest, which keeps the mean of every smooth function to second
    order)."""
    if r.size <= _EXACT_KERNEL:
        return r, None
    lo, hi = float(r.min()), float(r.max())
    if hi <= lo:
        return np.array([lo]), np.ones(1)
    pts = np.linspace(lo, hi, _BINS)
    pos = (r - lo) / (pts[1] - pts[0])
    left = np.minimum(np.floor(pos).astype(np.int64), _BINS - 2)
    frac = pos - left
    w = np.bincount(left, 1.0 - frac, _BINS) + np.bincount(left + 1, frac, _BINS)
    keep = w > 0
    return pts[keep], w[keep] / r.size


def _chunks(n: int, size: int = 4096) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)] or [slice(0, 0)]


def _location_nodes(loc: _Location, smooth: bool) -> tuple[FloatArray, FloatArray]:
    """Posterior nodes of each query's location, (N, M), and their weights (M,)."""
    if not smooth:
        return loc.mu[:, None], np.ones(1)
    x, w = np.polynomial.hermite_e.hermegauss(_GH_NODES)
    return loc.mu[:, None] + np.sqrt(loc.var)[:, None] * x[None, :], w / w.sum()


def _lognormal_spend(
    loc: _Location, grid: NDArray[np.int64], smooth: bool
) -> tuple[FloatArray, FloatArray]:
    """Spend E[min(L, b)] and survival P(L > b) on ``grid`` (N, K) for log L = mu_i + e.

    e follows the kernel-smoothed residual shape; with ``smooth`` averaged over the posterior
    of mu_i. Spend is made exactly consistent with a length law: 0 at 0, slopes in [0, 1].
    """
    mu, w = _location_nodes(loc, smooth)  # (N, M)
    logb = np.log(np.maximum(grid[1:].astype(float), 1.0))
    n = mu.shape[0]
    spend = np.empty((n, logb.size))
    surv = np.empty((n, logb.size))
    shape = _KernelShape(loc.residuals)
    for start in range(0, n, _ROWS):  # bounded (rows, K, M) temporaries
        m = mu[start : start + _ROWS]
        z = logb[None, :, None] - m[:, None, :]
        cm = shape.capped_mean(z)
        spend[start : start + _ROWS] = (np.exp(m)[:, None, :] * cm * w).sum(axis=2)
        surv[start : start + _ROWS] = ((1.0 - shape.cdf(z)) * w).sum(axis=2)
    spend = np.concatenate([np.zeros((n, 1)), spend], axis=1)
    slope = np.clip(np.diff(spend, axis=1) / np.diff(grid.astype(float)), 0.0, 1.0)
    spend = np.concatenate([np.zeros((n, 1)), np.cumsum(slope * np.diff(grid), axis=1)], axis=1)
    surv = np.concatenate([np.ones((n, 1)), np.clip(surv, 0.0, 1.0)], axis=1)
    return spend, np.minimum.accumulate(surv, axis=1)


def _gamma_lengths(t: FloatArray, present: NDArray[np.bool_], scale: float) -> GammaLengths:
    """Shifted Gamma(2) lengths of all samples: per-query shift shrunk toward the pool, one
    shared rate from the pooled within-query variance (as :class:`GammaFitter` fits the
    correct ones)."""
    y = np.where(present, t, 0.0)
    n = present.sum(axis=1)
    loc = _location(y, present, y.sum(axis=1) / np.maximum(n, 1), scale=scale)
    beta = float(np.sqrt(2.0 / loc.sigma2))
    return GammaLengths(np.maximum(loc.mu - 2.0 / beta, 0.0), beta)


# -- the shrunk fitter -----------------------------------------------------------------------
class ShrunkCurveFitter:
    """Empirical-Bayes curves: P_i(b) = p_i * E[G(log b - mu_i)], tabulated on a grid.

    Parameters
    ----------
    grid : int array (K,), optional
        Budgets (tokens, ascending from 0) to tabulate on; default :func:`default_grid`.
    strength : float
        Multiplies both fitted prior strengths: 1 is the empirical-Bayes estimate, 0 trusts
        each query's own samples (no shrinkage of p_i or mu_i), larger pulls harder toward
        the pool.
    smooth : bool
        Average the curve over the posterior of mu_i (True) or plug in its mean (False).

    Attributes
    ----------
    curves_ : TabulatedCurve
        The fitted curves, (N,) on ``grid_`` (set by :meth:`fit`, as are the others), with
        the spend and survival of all samples' lengths (the log-lengths of every sample
        shrunk like the correct ones').
    grid_ : ndarray of int64, shape (K,)
        Budgets the curves are tabulated on (tokens).
    p_ : ndarray, shape (N,)
        Shrunk success probabilities.
    mu_, mu_var_ : ndarray, shape (N,)
        Posterior mean and variance of each query's log-length location.
    prior_ : BetaBinomialPrior
        Prior of the success rates.
    sigma_, tau_ : float
        Within- and between-query standard deviation of log-lengths.
    length_mu_ : ndarray, shape (N,)
        Posterior mean of each query's log-length location over all its samples.
    """

    def __init__(
        self, grid: ArrayLike | None = None, strength: float = 1.0, smooth: bool = True
    ) -> None:
        if not np.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a non-negative number, got {strength!r}")
        self.grid = grid
        self.strength = float(strength)
        self.smooth = smooth

    def fit(self, traces: TraceSet) -> ShrunkCurveFitter:
        """Fit the priors and tabulate every query's shrunk curve.

        Parameters
        ----------
        traces : TraceSet
            N queries with their samples.

        Returns
        -------
        ShrunkCurveFitter
            ``self``, with the fitted attributes set.
        """
        t, c, n = _arrays(traces)
        g = default_grid(traces) if self.grid is None else check_grid(self.grid)
        k = c.sum(axis=1)
        self.prior_ = fit_beta_binomial(k, n)
        s = self.strength
        self.p_ = (k / n).astype(float) if s == 0 else self.prior_.posterior_mean(k, n, s)
        y = np.log(np.maximum(np.nan_to_num(t, nan=1.0), 1.0))
        present = ~np.isnan(t)
        fallback = np.where(present, y, 0.0).sum(axis=1) / n
        loc = _location(y, c, fallback, scale=max(s, 1e-9))
        self.mu_, self.mu_var_ = loc.mu, (loc.var if s > 0 else np.zeros(traces.n))
        self.sigma_, self.tau_ = float(np.sqrt(loc.sigma2)), float(np.sqrt(loc.tau2))
        self.residuals_ = loc.residuals
        logb = np.log(np.maximum(g[1:].astype(float), 1.0))  # (K-1,)
        shape = _KernelShape(loc.residuals)
        mu, w = _location_nodes(
            _Location(self.mu_, self.mu_var_, loc.residuals, loc.sigma2, loc.tau2, loc.mu0),
            self.smooth and s > 0,
        )
        F = np.empty((traces.n, logb.size))
        for start in range(0, traces.n, _ROWS):  # bounded (rows, K, M) temporaries
            m = mu[start : start + _ROWS]
            F[start : start + _ROWS] = (shape.cdf(logb[None, :, None] - m[:, None, :]) * w).sum(
                axis=2
            )
        vals = np.concatenate([np.zeros((traces.n, 1)), self.p_[:, None] * F], axis=1)
        self.grid_ = g
        # Lengths of every sample, correct or not: what a cap spends.
        every = _location(y, present, fallback, scale=max(s, 1e-9))
        if s == 0:
            every = _Location(
                every.mu, np.zeros(traces.n), every.residuals, every.sigma2, every.tau2, every.mu0
            )
        spend, surv = _lognormal_spend(every, g, self.smooth and s > 0)
        self.length_mu_ = every.mu
        self.curves_ = TabulatedCurve(g, np.maximum.accumulate(vals, axis=1), spend, surv)
        return self

    def pool_curve(self, n: int) -> TabulatedCurve:
        """The pool's average curve repeated for ``n`` new queries (no per-query data).

        Parameters
        ----------
        n : int
            Queries to give the pool's curve.

        Returns
        -------
        TabulatedCurve
            ``n`` identical curves on ``grid_``, with the pool's average spend and survival.
        """
        _check_fitted(self)
        c = self.curves_
        lm = c.length_model
        assert isinstance(lm, TabulatedLengths) and lm.surv is not None

        def rep(table: FloatArray) -> FloatArray:
            return np.repeat(table.mean(axis=0)[None, :], n, axis=0)

        return TabulatedCurve(self.grid_, rep(c.values), rep(lm.table), rep(lm.surv))


def fit_shrunk(
    traces: TraceSet, grid: ArrayLike | None = None, strength: float = 1.0, smooth: bool = True
) -> TabulatedCurve:
    """Shrunk per-query curves of ``traces``.

    Parameters
    ----------
    traces : TraceSet
        N queries with their samples.
    grid : array_like, optional
        Budgets to tabulate on (see :class:`ShrunkCurveFitter`).
    strength : float
        Shrinkage strength (see :class:`ShrunkCurveFitter`).
    smooth : bool
        Average over the posterior of each location (see :class:`ShrunkCurveFitter`).

    Returns
    -------
    TabulatedCurve
        N curves (``ShrunkCurveFitter(grid, strength, smooth).fit(traces).curves_``).
    """
    return ShrunkCurveFitter(grid, strength, smooth).fit(traces).curves_


# -- the paper's shifted surge ---------------------------------------------------------------
#: Threshold given to queries never solved in the fit data: beyond any budget.
UNREACHABLE_TAU = 1e9


class SurgeFitter:
    """The paper's recipe: shifted surge with alpha, beta shared and tau per query.

    - ``tau_i`` = the query's shortest correct length (``tau="min"``) or a quantile of its
      correct lengths. The shortest correct sample is the empirical emergence point: a cap
      below it solved nothing in the data, which is what the surge's zero below tau says.
    - ``beta``: the pooled histogram of excess lengths ``x = L - tau_i`` over correct samples
      (the zero that defines tau is left out) is fitted by least squares with the surge shape
      ``A x exp(-beta x)``; the surge peaks at x = 1/beta.
    - ``alpha`` does not change any allocation (it rescales utility and price together); it is
      set so that the surge's peak utility alpha / (e beta) equals the pool's solve rate, which
      puts utilities on an accuracy-like scale.
    - Queries with no correct sample get ``tau = UNREACHABLE_TAU`` (10^9 tokens) by default:
      the data give no evidence that any budget solves them, and the surge, whose peak utility
      is the same for every query, would otherwise price a never-solved query like a solvable
      one and fund it whenever the budget can cover its threshold. Pass ``unsolved_factor``
      to place them at that multiple of the longest sample instead.
    - The surge is a latent utility without a length law; the curves carry shifted Gamma(2)
      lengths fitted to all samples (for spend), as :class:`GammaFitter` fits them.

    Parameters
    ----------
    tau : 'min' or float
        ``"min"``: each query's shortest correct length; a float in [0, 1]: that quantile of
        its correct lengths.
    bins : int
        Histogram bins of the excess lengths (>= 3).
    unsolved_factor : float, optional
        Place never-solved queries at this multiple of the longest sample instead of out of
        reach.

    Attributes
    ----------
    curves_ : ShiftedSurge
        The fitted curves (set by :meth:`fit`, as are the others).
    tau_ : ndarray, shape (N,)
        Thresholds in tokens.
    alpha_, beta_ : float
        Shared gain and decay (1/tokens).
    p_ : ndarray, shape (N,)
        Each query's observed solve rate.
    histogram_ : DataFrame
        Bin centre, observed and fitted density of the excess lengths.
    r2_ : float
        R^2 of the histogram fit (NaN when there was too little to fit).
    lengths_ : GammaLengths
        Lengths of all samples (what a cap spends), carried by ``curves_``.
    """

    def __init__(
        self,
        tau: Literal["min"] | float = "min",
        bins: int = 30,
        unsolved_factor: float | None = None,
    ) -> None:
        if tau != "min" and not (isinstance(tau, (int, float)) and 0 <= tau <= 1):
            raise ValueError(f"tau must be 'min' or a quantile in [0, 1], got {tau!r}")
        if bins < 3:
            raise ValueError(f"bins must be at least 3, got {bins}")
        if unsolved_factor is not None and not unsolved_factor > 0:
            raise ValueError(f"unsolved_factor must be positive, got {unsolved_factor!r}")
        self.tau, self.bins, self.unsolved_factor = tau, int(bins), unsolved_factor

    def fit(self, traces: TraceSet) -> SurgeFitter:
        """Fit thresholds per query and the shared shape.

        Parameters
        ----------
        traces : TraceSet
            N queries with their samples.

        Returns
        -------
        SurgeFitter
            ``self``, with the fitted attributes set.
        """
        t, c, n = _arrays(traces)
        L = np.where(c, t, np.nan)
        solved: NDArray[np.bool_] = np.asarray(c.any(axis=1), dtype=bool)
        big = (
            UNREACHABLE_TAU
            if self.unsolved_factor is None
            else self.unsolved_factor * float(np.nanmax(t))
        )
        with np.errstate(all="ignore"):
            if self.tau == "min":
                tau = np.nanmin(np.where(solved[:, None], L, 0.0), axis=1)
            else:
                tau = np.nanquantile(np.where(solved[:, None], L, 0.0), float(self.tau), axis=1)
        tau = np.where(solved, tau, big)
        x = (L - tau[:, None])[c & solved[:, None]]
        x = x[x > 0]
        if x.size < 3:
            beta = 1.0 / max(float(np.nanmedian(t)), 1.0)
            self.histogram_, self.r2_ = pd.DataFrame(), float("nan")
        else:
            beta, self.histogram_, self.r2_ = _fit_surge_shape(x, self.bins)
        p_pool = float(c.sum() / n.sum())
        self.tau_, self.beta_ = tau, beta
        self.alpha_ = max(p_pool, 1e-6) * np.e * beta
        self.p_ = (c.sum(axis=1) / n).astype(float)
        self.lengths_ = _gamma_lengths(t, ~np.isnan(t), 1.0)
        self.curves_ = ShiftedSurge(tau, self.alpha_, beta).with_lengths(self.lengths_)
        return self

    def as_probability(self) -> GammaSCurve:
        """The accuracy curve the surge implies, for scoring the fit.

        Returns
        -------
        GammaSCurve
            Excess lengths ~ Gamma(2, beta) (the surge's own shape as a density), scaled by
            each query's observed solve rate; carrying the fitted lengths of all samples.
        """
        _check_fitted(self)
        curve = GammaSCurve(self.tau_, self.beta_, np.clip(self.p_, 0.0, 1.0))
        return curve.with_lengths(self.lengths_)


def _fit_surge_shape(x: FloatArray, bins: int) -> tuple[float, pd.DataFrame, float]:
    """Least-squares fit of density A x exp(-beta x) to a histogram of ``x`` > 0."""
    top = float(np.quantile(x, 0.99))
    edges = np.linspace(0.0, max(top, 1.0), bins + 1)
    counts, _ = np.histogram(x, bins=edges)
    width = edges[1] - edges[0]
    dens = counts / (x.size * width)
    mid = 0.5 * (edges[1:] + edges[:-1])
    beta0 = 2.0 / max(float(np.mean(x)), 1.0)

    def shape(z: FloatArray, a: float, b: float) -> FloatArray:
        return a * z * np.exp(-b * z)

    try:
        (a, b), _ = optimize.curve_fit(
            shape,
            mid,
            dens,
            p0=(beta0**2, beta0),
            bounds=([0.0, 1e-7], [np.inf, 10.0]),
            maxfev=10_000,
        )
    except (RuntimeError, ValueError):
        a, b = beta0**2, beta0
    fitted = shape(mid, a, b)
    ss = float(((dens - dens.mean()) ** 2).sum())
    r2 = 1.0 - float(((dens - fitted) ** 2).sum()) / ss if ss > 0 else float("nan")
    hist = pd.DataFrame({"excess_tokens": mid, "observed_density": dens, "fitted_density": fitted})
    return float(b), hist, r2


def fit_surge(traces: TraceSet, tau: Literal["min"] | float = "min") -> ShiftedSurge:
    """The paper's shifted-surge fit.

    Parameters
    ----------
    traces : TraceSet
        N queries with their samples.
    tau : 'min' or float
        See :class:`SurgeFitter`.

    Returns
    -------
    ShiftedSurge
        N curves.
    """
    return SurgeFitter(tau=tau).fit(traces).curves_


# -- shifted Gamma(2) S-curve with shrinkage -------------------------------------------------
class GammaFitter:
    """GammaSCurve with beta shared, tau and p per query, both shrunk toward the pool.

    Correct lengths are tau_i + Gamma(2, beta): mean tau_i + 2/beta, variance 2/beta^2.
    ``beta`` comes from the pooled within-query variance of correct lengths; ``tau_i`` is the
    query's shrunk mean correct length minus 2/beta (normal-normal empirical Bayes, clipped at
    0); ``p_i`` the Beta-binomial posterior mean. Queries with no correct sample take the mean
    length of all their samples as their location datum. The lengths of all samples (spend)
    are shifted Gamma(2) fitted the same way to every sample (``lengths_``).

    Parameters
    ----------
    strength : float
        Multiplies the fitted prior strengths (see :class:`ShrunkCurveFitter`).

    Attributes
    ----------
    curves_ : GammaSCurve
        The fitted curves (set by :meth:`fit`, as are the others).
    tau_, p_ : ndarray, shape (N,)
        Thresholds (tokens) and success probabilities.
    beta_ : float
        Shared decay (1/tokens).
    prior_ : BetaBinomialPrior
        Prior of the success rates.
    lengths_ : GammaLengths
        Lengths of all samples (what a cap spends).
    """

    def __init__(self, strength: float = 1.0) -> None:
        if not np.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a non-negative number, got {strength!r}")
        self.strength = float(strength)

    def fit(self, traces: TraceSet) -> GammaFitter:
        """Fit the shared decay and the shrunk thresholds and success probabilities.

        Parameters
        ----------
        traces : TraceSet
            N queries with their samples.

        Returns
        -------
        GammaFitter
            ``self``, with the fitted attributes set.
        """
        t, c, n = _arrays(traces)
        k = c.sum(axis=1)
        self.prior_ = fit_beta_binomial(k, n)
        s = self.strength
        self.p_ = (k / n).astype(float) if s == 0 else self.prior_.posterior_mean(k, n, s)
        y = np.nan_to_num(t, nan=0.0)
        fallback = y.sum(axis=1) / n
        loc = _location(y, c, fallback, scale=max(s, 1e-9))
        self.beta_ = float(np.sqrt(2.0 / loc.sigma2))
        self.tau_ = np.maximum(loc.mu - 2.0 / self.beta_, 0.0)
        self.lengths_ = _gamma_lengths(t, ~np.isnan(t), max(s, 1e-9))
        curve = GammaSCurve(self.tau_, self.beta_, np.clip(self.p_, 0.0, 1.0))
        self.curves_ = curve.with_lengths(self.lengths_)
        return self


def fit_gamma(traces: TraceSet, strength: float = 1.0) -> GammaSCurve:
    """Shrunk shifted-Gamma S-curves.

    Parameters
    ----------
    traces : TraceSet
        N queries with their samples.
    strength : float
        See :class:`GammaFitter`.

    Returns
    -------
    GammaSCurve
        N curves.
    """
    return GammaFitter(strength).fit(traces).curves_


# -- goodness of fit -------------------------------------------------------------------------
def goodness_of_fit(
    curves: UtilityCurve, traces: TraceSet, grid: ArrayLike | None = None
) -> dict[str, Any]:
    """Score probability curves against (held-out) traces of the same N queries.

    At each grid budget b every sample is an outcome y = [correct and length <= b]; the curve
    predicts P_i(b).

    Parameters
    ----------
    curves : UtilityCurve
        N probability curves. :class:`ShiftedSurge` is not a probability; score
        ``SurgeFitter.as_probability()`` instead.
    traces : TraceSet
        The same N queries' (held-out) samples.
    grid : array_like, optional
        Budgets to score at (tokens, from 0); default: 24 geometric levels.

    Returns
    -------
    dict
        ``mae``: mean |P_i(b) - empirical_i(b)| over queries and budgets (accuracy points);
        ``brier``: mean (P_i(b) - y)^2 over samples and budgets; ``log_loss``: mean
        Bernoulli log-loss (P clipped to [1e-4, 1 - 1e-4]); ``per_budget``: DataFrame
        (budget, predicted, observed, mae, brier) per grid budget.

    Raises
    ------
    TypeError
        For a :class:`ShiftedSurge`.
    ValueError
        When curves and traces cover different numbers of queries.
    """
    if isinstance(curves, ShiftedSurge):
        raise TypeError(
            "ShiftedSurge values are utilities, not probabilities; score "
            "SurgeFitter(...).fit(traces).as_probability() instead"
        )
    t, c, n = _arrays(traces)
    if curves.n != traces.n:
        raise ValueError(f"curves cover {curves.n} queries but traces hold {traces.n}")
    g = default_grid(traces, levels=24) if grid is None else check_grid(grid)
    gb = g[1:].astype(float)
    P = np.clip(curves.value(np.broadcast_to(gb, (traces.n, gb.size))), 0.0, 1.0)  # (N, K)
    present = ~np.isnan(t)
    y = (c[:, :, None] & (np.nan_to_num(t, nan=np.inf)[:, :, None] <= gb)).astype(float)
    emp = y.sum(axis=1) / n[:, None]
    m = present[:, :, None]
    sq = np.where(m, (P[:, None, :] - y) ** 2, 0.0)
    Pc = np.clip(P, 1e-4, 1 - 1e-4)[:, None, :]
    ll = np.where(m, -(y * np.log(Pc) + (1 - y) * np.log1p(-Pc)), 0.0)
    total = float(n.sum())
    per = pd.DataFrame(
        {
            "budget": g[1:],
            "predicted": P.mean(axis=0),
            "observed": emp.mean(axis=0),
            "mae": np.abs(P - emp).mean(axis=0),
            "brier": sq.sum(axis=(0, 1)) / total,
        }
    )
    return {
        "mae": float(np.abs(P - emp).mean()),
        "brier": float(sq.sum() / (total * gb.size)),
        "log_loss": float(ll.sum() / (total * gb.size)),
        "per_budget": per,
    }
