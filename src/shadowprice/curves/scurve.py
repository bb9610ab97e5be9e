"""Success-probability S-curves: P(correct and finished within b tokens).

Both families are 0 at b = 0, rise through an S, and saturate at a per-query solvable
probability p, so their values are accuracies and sum to an expected number of correct answers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, lambertw

from .base import Demand, FloatArray, QueryIndex, UtilityCurve, as_param, broadcast_params, column
from .lengths import GammaLengths


class _PerQuery(UtilityCurve):
    """Shared plumbing: named per-query parameters broadcast to (N,)."""

    _params: tuple[str, ...] = ()

    def _set(self, **params: FloatArray) -> None:
        n = broadcast_params(*params.values())
        for name, p in params.items():
            setattr(self, name, np.broadcast_to(p, (n,)).copy())

    @property
    def n(self) -> int:
        return int(getattr(self, self._params[0]).size)

    def _col(self, name: str, b: FloatArray) -> FloatArray:
        return column(getattr(self, name), b)

    def __getitem__(self, index: QueryIndex) -> _PerQuery:
        out = type(self)(**{k: getattr(self, k)[index] for k in self._params})
        return self._keep_lengths(out, index)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n})"


class GammaSCurve(_PerQuery):
    """Shifted Gamma(2, beta) CDF scaled by a solvable probability.

        P(b) = p [1 - (1 + beta x) e^(-beta x)],  x = max(b - tau, 0)

    The length of a correct solution is tau plus a Gamma(2, beta) variable: nothing is solved
    below tau, the surge peaks 1/beta tokens above it, and accuracy saturates at p.

    Parameters
    ----------
    tau : float or array (N,)
        Shift in tokens (>= 0): the shortest correct solution.
    beta : float or array (N,)
        Rate in 1/tokens (> 0); the mean correct length is tau + 2/beta.
    p : float or array (N,), default 1
        Probability that the query is solved at all, in [0, 1].
    wrong_beta : float or array (N,), optional
        Rate of the wrong samples' excess length (1/tokens, > 0): they are tau +
        Gamma(2, wrong_beta) long. Default ``beta``: wrong samples as long as right ones.

    Its length model is that law (:class:`~shadowprice.curves.GammaLengths`), so spend and
    survival are closed forms.
    """

    has_closed_form_demand = True
    _params = ("tau", "beta", "p", "wrong_beta")
    tau: FloatArray
    beta: FloatArray
    p: FloatArray
    wrong_beta: FloatArray

    def __init__(
        self,
        tau: ArrayLike,
        beta: ArrayLike,
        p: ArrayLike = 1.0,
        wrong_beta: ArrayLike | None = None,
    ) -> None:
        b = as_param("beta", beta, positive=True)
        self._set(
            tau=as_param("tau", tau, nonnegative=True),
            beta=b,
            p=as_param("p", p, unit=True),
            wrong_beta=b
            if wrong_beta is None
            else as_param("wrong_beta", wrong_beta, positive=True),
        )
        self.length_model = GammaLengths(self.tau, self.beta, self.p, self.wrong_beta)

    def value(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        bx = self._col("beta", b) * np.maximum(b - self._col("tau", b), 0.0)
        return self._col("p", b) * -np.expm1(-bx) - self._col("p", b) * bx * np.exp(-bx)

    def marginal(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        beta = self._col("beta", b)
        x = np.maximum(b - self._col("tau", b), 0.0)
        return self._col("p", b) * beta * beta * x * np.exp(-beta * x)

    def threshold(self) -> FloatArray:
        return self.tau.copy()

    def ceiling(self) -> FloatArray:
        return self.p.copy()

    def demand(self, price: float) -> Demand:
        # On the concave side (beta x > 1) the marginal p beta^2 x e^(-beta x) = lambda gives
        # beta x = -W_{-1}(-lambda / (p beta)); buy there only if the surplus is positive.
        lam = float(price)
        z = lam / np.maximum(self.p * self.beta, 1e-300)
        if lam <= 0:
            return Demand(np.full(self.n, np.inf), self.p > 0)
        reachable = z < 1.0 / np.e
        bx = np.where(reachable, -lambertw(-np.minimum(z, 1.0 / np.e), -1).real, 1.0)
        b = self.tau + bx / self.beta
        funded = reachable & (self.value(b) - lam * b > 0)
        # Where the marginal never reaches the price, no budget above tau pays for itself.
        return Demand(np.where(funded, b, 0.0), funded, interior=np.where(reachable, b, self.tau))


class LogisticCurve(_PerQuery):
    """Logistic success probability, rescaled so that P(0) = 0 and P(inf) = p.

        P(b) = p [s((b - mu)/scale) - s(-mu/scale)] / [1 - s(-mu/scale)],  s = logistic

    Parameters
    ----------
    mu : float or array (N,)
        Midpoint in tokens (>= 0): the budget at which the surge is steepest.
    scale : float or array (N,)
        Width of the surge in tokens (> 0).
    p : float or array (N,), default 1
        Saturation probability, in [0, 1].
    """

    _params = ("mu", "scale", "p")
    mu: FloatArray
    scale: FloatArray
    p: FloatArray

    def __init__(self, mu: ArrayLike, scale: ArrayLike, p: ArrayLike = 1.0) -> None:
        self._set(
            mu=as_param("mu", mu, nonnegative=True),
            scale=as_param("scale", scale, positive=True),
            p=as_param("p", p, unit=True),
        )

    def value(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        mu, s, p = self._col("mu", b), self._col("scale", b), self._col("p", b)
        s0 = expit(-mu / s)
        return p * np.maximum(expit((b - mu) / s) - s0, 0.0) / (1.0 - s0)

    def marginal(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        mu, s, p = self._col("mu", b), self._col("scale", b), self._col("p", b)
        e = expit((b - mu) / s)
        return p * e * (1.0 - e) / s / (1.0 - expit(-mu / s))

    def threshold(self) -> FloatArray:
        # Where the tangent at the midpoint crosses zero: the surge's start.
        return np.maximum(self.mu - 2.0 * self.scale, 0.0)

    def ceiling(self) -> FloatArray:
        return self.p.copy()
