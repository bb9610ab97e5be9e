"""Length models: how many tokens a query's samples generate, correct or not.

A request capped at b tokens generates min(L, b) tokens, L being the length the model would
have written without a cap. What a user pays under *spent* accounting is therefore

    S(b) = E[min(L, b)] = integral_0^b P(L > t) dt

(tokens), the expected spend of a cap b, whose slope is the survival P(L > b). Unlike the
value V(b) = P(correct and L <= b), both come from the lengths of *all* samples, correct or
not: a wrong answer costs as much as a right one.

Every model holds N queries and answers for budgets of shape (N,) (one per query) or (N, K)
(K per query); scalars broadcast to (N,), as for :meth:`UtilityCurve.value`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import FloatArray, LengthModel, QueryIndex, as_param, broadcast_params, column
from .grid import check_grid

__all__ = ["EmpiricalLengths", "GammaLengths", "LengthModel", "TabulatedLengths", "budget_array"]


def budget_array(budgets: ArrayLike, n: int) -> FloatArray:
    """Budgets as floats of shape (N,) (scalars and (N,) broadcast) or (N, K)."""
    b = np.asarray(budgets, dtype=float)
    if b.ndim <= 1:
        return np.broadcast_to(b, (n,)).astype(float)
    if b.shape[0] != n:
        raise ValueError(f"budgets of shape {b.shape} do not match {n} queries")
    return b


def _gamma2_spend(x: FloatArray, beta: FloatArray) -> FloatArray:
    """E[min(X, x)] for X ~ Gamma(2, beta): (2/beta)(1 - e^(-beta x)) - x e^(-beta x)."""
    bx = beta * x
    return (2.0 / beta) * -np.expm1(-bx) - x * np.exp(-bx)


def _gamma2_survival(x: FloatArray, beta: FloatArray) -> FloatArray:
    """P(X > x) for X ~ Gamma(2, beta): (1 + beta x) e^(-beta x)."""
    bx = beta * x
    return (1.0 + bx) * np.exp(-bx)


class GammaLengths(LengthModel):
    """Shifted Gamma(2) lengths, a two-component mixture of correct and wrong samples.

        L = tau + X,  X ~ Gamma(2, beta) with probability p, Gamma(2, wrong_beta) otherwise

    This is the length law of :class:`~shadowprice.curves.GammaSCurve` (correct solutions
    are tau + Gamma(2, beta)) completed by the wrong ones; spend and survival have closed forms.

    Parameters
    ----------
    tau : float or array (N,)
        Shortest length in tokens (>= 0).
    beta : float or array (N,)
        Rate of the correct samples' excess length, 1/tokens (> 0); mean tau + 2/beta.
    p : float or array (N,), default 1
        Share of correct samples, in [0, 1].
    wrong_beta : float or array (N,), optional
        Rate of the wrong samples' excess length (> 0); default ``beta`` (same law).
    """

    def __init__(
        self,
        tau: ArrayLike,
        beta: ArrayLike,
        p: ArrayLike = 1.0,
        wrong_beta: ArrayLike | None = None,
    ) -> None:
        t = as_param("tau", tau, nonnegative=True)
        b = as_param("beta", beta, positive=True)
        q = as_param("p", p, unit=True)
        w = b if wrong_beta is None else as_param("wrong_beta", wrong_beta, positive=True)
        n = broadcast_params(t, b, q, w)
        self.tau, self.beta, self.p, self.wrong_beta = (
            np.broadcast_to(a, (n,)).copy() for a in (t, b, q, w)
        )

    @property
    def n(self) -> int:
        return int(self.tau.size)

    def _parts(self, budgets: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        b = budget_array(budgets, self.n)
        x = np.maximum(b - column(self.tau, b), 0.0)
        return b, x, column(self.p, b), column(self.tau, b)

    def spend(self, budgets: ArrayLike) -> FloatArray:
        b, x, p, tau = self._parts(budgets)
        beta, wb = column(self.beta, b), column(self.wrong_beta, b)
        return np.minimum(b, tau) + p * _gamma2_spend(x, beta) + (1 - p) * _gamma2_spend(x, wb)

    def survival(self, budgets: ArrayLike) -> FloatArray:
        b, x, p, _ = self._parts(budgets)
        beta, wb = column(self.beta, b), column(self.wrong_beta, b)
        return p * _gamma2_survival(x, beta) + (1 - p) * _gamma2_survival(x, wb)

    def __getitem__(self, index: QueryIndex) -> GammaLengths:
        return GammaLengths(
            self.tau[index], self.beta[index], self.p[index], self.wrong_beta[index]
        )

    def __repr__(self) -> str:
        return f"GammaLengths(n={self.n})"


class EmpiricalLengths(LengthModel):
    """The observed lengths of each query's samples (every sample, correct or not).

    S_i(b) = mean over the query's samples of min(L_s, b): exactly what replaying a cap b on
    those samples spends.

    Parameters
    ----------
    tokens : array (N, S)
        Output tokens of each sample; NaN pads queries with fewer than S samples.
    """

    def __init__(self, tokens: ArrayLike) -> None:
        t = np.atleast_2d(np.asarray(tokens, dtype=float))
        if t.ndim != 2:
            raise ValueError(f"tokens must have shape (N, S), got {t.shape}")
        present = ~np.isnan(t)
        if np.isinf(t).any() or (t[present] < 0).any():
            i, j = np.argwhere(np.isinf(t) | (present & (t < 0)))[0]
            raise ValueError(f"tokens[{i}, {j}] = {t[i, j]!r}: must be a non-negative finite count")
        n = present.sum(axis=1)
        if (n == 0).any():
            i = int(np.flatnonzero(n == 0)[0])
            raise ValueError(f"query {i} has no samples; drop it or give it at least one sample")
        self.sorted: FloatArray = np.sort(np.where(present, t, np.inf), axis=1)
        self.n_samples: NDArray[np.int64] = n.astype(np.int64)
        fin = np.isfinite(self.sorted)
        self._cum = np.concatenate(
            [np.zeros((t.shape[0], 1)), np.cumsum(np.where(fin, self.sorted, 0.0), axis=1)], axis=1
        )

    @property
    def n(self) -> int:
        return int(self.sorted.shape[0])

    def _below(self, b: FloatArray) -> NDArray[np.int64]:
        """Samples at or below each budget, shape of ``b``."""
        if b.ndim == 1:
            return (self.sorted <= b[:, None]).sum(axis=1)
        return (self.sorted[:, None, :] <= b[:, :, None]).sum(axis=2)

    def spend(self, budgets: ArrayLike) -> FloatArray:
        b = budget_array(budgets, self.n)
        c = self._below(b)
        n = column(self.n_samples.astype(float), b)
        rows = np.arange(self.n).reshape((-1,) + (1,) * (b.ndim - 1))
        return (self._cum[rows, c] + b * (n - c)) / n

    def survival(self, budgets: ArrayLike) -> FloatArray:
        b = budget_array(budgets, self.n)
        n = column(self.n_samples.astype(float), b)
        return (n - self._below(b)) / n

    def __getitem__(self, index: QueryIndex) -> EmpiricalLengths:
        rows = self.sorted[index]
        return EmpiricalLengths(np.where(np.isfinite(rows), rows, np.nan))

    def __repr__(self) -> str:
        return f"EmpiricalLengths(n={self.n}, samples<={self.sorted.shape[1]})"


class TabulatedLengths(LengthModel):
    """Expected spend known on a budget grid (fitted or averaged lengths).

    Spend is piecewise linear through (grid[k], spend[i, k]) and continues beyond the last
    point with the last segment's slope. Survival is interpolated from ``survival`` when
    given, else it is the slope of the spend segment a budget falls in.

    Parameters
    ----------
    grid : array (K,)
        Ascending budgets in tokens, starting at 0.
    spend : array (N, K)
        E[min(L, grid[k])] per query, tokens: 0 at grid 0, non-decreasing, slopes in [0, 1].
    survival : array (N, K), optional
        P(L > grid[k]) per query, non-increasing, in [0, 1].
    """

    def __init__(
        self, grid: ArrayLike, spend: ArrayLike, survival: ArrayLike | None = None
    ) -> None:
        g = check_grid(grid, whole=False)
        s = np.atleast_2d(np.asarray(spend, dtype=float))
        if s.shape[1] != g.size:
            raise ValueError(f"spend must have shape (N, {g.size}), got {s.shape}")
        if not np.isfinite(s).all():
            raise ValueError("spend must be finite")
        slope = np.diff(s, axis=1) / np.diff(g)
        if np.any(np.abs(s[:, 0]) > 1e-9) or np.any(slope < -1e-9) or np.any(slope > 1 + 1e-9):
            raise ValueError(
                "spend must start at 0 and rise by at most one token per token of budget "
                "(E[min(L, b)] has slope P(L > b) in [0, 1])"
            )
        self.grid, self.table = g, s
        self._slope = np.clip(slope, 0.0, 1.0)
        self.surv: FloatArray | None = None
        if survival is not None:
            v = np.atleast_2d(np.asarray(survival, dtype=float))
            if v.shape != s.shape or not np.isfinite(v).all() or v.min() < 0 or v.max() > 1:
                raise ValueError(f"survival must have shape {s.shape} with values in [0, 1]")
            self.surv = v

    @property
    def n(self) -> int:
        return int(self.table.shape[0])

    def _locate(self, budgets: ArrayLike) -> tuple[FloatArray, NDArray[np.intp], FloatArray]:
        b = budget_array(budgets, self.n)
        flat = b.reshape(self.n, -1)
        j = np.clip(np.searchsorted(self.grid, flat, side="right") - 1, 0, self.grid.size - 2)
        return b, j, flat

    def spend(self, budgets: ArrayLike) -> FloatArray:
        b, j, flat = self._locate(budgets)
        rows = np.arange(self.n)[:, None]
        out = self.table[rows, j] + self._slope[rows, j] * (flat - self.grid[j])
        return out.reshape(b.shape)

    def survival(self, budgets: ArrayLike) -> FloatArray:
        b, j, flat = self._locate(budgets)
        rows = np.arange(self.n)[:, None]
        if self.surv is None:
            return self._slope[rows, j].reshape(b.shape)
        g0, g1 = self.grid[j], self.grid[j + 1]
        t = np.clip((flat - g0) / (g1 - g0), 0.0, 1.0)
        v0, v1 = self.surv[rows, j], self.surv[rows, j + 1]
        return (v0 + t * (v1 - v0)).reshape(b.shape)

    def __getitem__(self, index: QueryIndex) -> TabulatedLengths:
        return TabulatedLengths(
            self.grid, self.table[index], None if self.surv is None else self.surv[index]
        )

    def __repr__(self) -> str:
        return f"TabulatedLengths(n={self.n}, grid={self.grid.size})"
