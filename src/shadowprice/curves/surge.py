"""The paper's latent utility: a surge that starts at the emergence threshold.

    U(b) = 0                     for b <= tau
    U(b) = alpha x exp(-beta x)  for b > tau,  x = b - tau

alpha (gain, utility per token at the threshold) and beta (decay, 1/tokens) are usually shared
by all queries of one model; tau (tokens) is per query. Demand at a price lambda has a closed
form in the principal branch of Lambert W, and so does the abandonment rule.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import lambertw

from .base import Demand, FloatArray, QueryIndex, UtilityCurve, as_param, broadcast_params, column


def surge_excess(price: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> FloatArray:
    """Tokens x*(lambda) a funded query buys above its threshold.

    Solves alpha e^(-beta x)(1 - beta x) = lambda:  x* = (1 - W0(e lambda / alpha)) / beta.
    Returns 1/beta (the utility peak) at lambda = 0 and 0 for lambda >= alpha.
    """
    lam = np.asarray(price, dtype=float)
    a = np.asarray(alpha, dtype=float)
    b = np.asarray(beta, dtype=float)
    w = _w(lam, a)
    return np.where(lam >= a, 0.0, (1.0 - w) / b)


def abandonment_threshold(price: ArrayLike, alpha: ArrayLike, beta: ArrayLike) -> FloatArray:
    """T(lambda): a query is funded only if its tau is below this many tokens.

    T = (1 - w)^2 / (beta w), w = W0(e lambda / alpha); +inf at lambda = 0, 0 for lambda >= alpha.
    """
    lam = np.asarray(price, dtype=float)
    a = np.asarray(alpha, dtype=float)
    b = np.asarray(beta, dtype=float)
    w = _w(lam, a)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (1.0 - w) ** 2 / (b * w)
    return np.where(lam >= a, 0.0, np.where(lam <= 0, np.inf, t))


def _w(lam: FloatArray, alpha: FloatArray) -> FloatArray:
    z = np.e * np.clip(lam, 0.0, None) / alpha
    # W0 is real on [-1/e, inf); we only evaluate it on [0, e].
    return lambertw(np.minimum(z, np.e), 0).real


class ShiftedSurge(UtilityCurve):
    """The CLEAR paper's shifted-surge utility for N queries.

    Parameters
    ----------
    tau : float or array of shape (N,)
        Emergence threshold in tokens (>= 0).
    alpha : float or array of shape (N,), default 1.5
        Gain: marginal utility per token just above the threshold (> 0).
    beta : float or array of shape (N,), default 0.005
        Decay in 1/tokens (> 0); the utility peaks 1/beta tokens above tau at alpha/(e beta).

    The surge is a latent utility with no length law of its own, so it carries no length
    model (spend = cap) unless one is attached (:meth:`with_lengths`; the fitters do).

    Examples
    --------
    >>> c = ShiftedSurge(tau=200, alpha=1.5, beta=0.005)
    >>> float(c.peak()[0]), round(float(c.ceiling()[0]), 1)
    (400.0, 110.4)
    """

    has_closed_form_demand = True

    def __init__(self, tau: ArrayLike, alpha: ArrayLike = 1.5, beta: ArrayLike = 0.005) -> None:
        t = as_param("tau", tau, nonnegative=True)
        a = as_param("alpha", alpha, positive=True)
        b = as_param("beta", beta, positive=True)
        n = broadcast_params(t, a, b)
        self.tau = np.broadcast_to(t, (n,)).copy()
        self.alpha = a if a.size == 1 else a.copy()
        self.beta = b if b.size == 1 else b.copy()

    @property
    def n(self) -> int:
        return int(self.tau.size)

    @property
    def shared_shape(self) -> bool:
        """True when alpha and beta are shared by all queries (enables the sorted fast path)."""
        return self.alpha.size == 1 and self.beta.size == 1

    def value(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets)
        # float32 budgets (huge menus) are evaluated in float32; everything else in float64.
        dt = np.float32 if b.dtype == np.float32 else np.float64
        b = b.astype(dt, copy=False)
        # In place: this runs on (N, K) grids in the envelope solver.
        x = np.subtract(b, column(self.tau.astype(dt, copy=False), b))
        np.maximum(x, 0.0, out=x)
        u = np.multiply(x, -column(self.beta.astype(dt, copy=False), b))
        np.exp(u, out=u)
        u *= x
        u *= column(self.alpha.astype(dt, copy=False), b)
        return u

    def marginal(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        x = b - column(self.tau, b)
        beta = column(self.beta, b)
        xp = np.maximum(x, 0.0)
        m = column(self.alpha, b) * np.exp(-beta * xp) * (1.0 - beta * xp)
        return np.where(x > 0, m, 0.0)

    def threshold(self) -> FloatArray:
        return self.tau.copy()

    def ceiling(self) -> FloatArray:
        return np.broadcast_to(self.alpha / (self.beta * np.e), (self.n,)).copy()

    def peak(self) -> FloatArray:
        return self.tau + 1.0 / self.beta

    def saturation(self, level: float = 0.9, cap: float = 1e7) -> FloatArray:
        if not 0.0 < level <= 1.0:
            raise ValueError(f"level must be in (0, 1], got {level!r}")
        # Rising side of x e^(-beta x) = level/(e beta): beta x = -W0(-level/e).
        u = -lambertw(-level / np.e, 0).real
        return np.minimum(self.tau + u / self.beta, cap)

    def surplus(self, price: float) -> FloatArray:
        """Best surplus U(b*) - lambda b* of each query at ``price`` (may be negative)."""
        lam = float(price)
        return lam * (abandonment_threshold(lam, self.alpha, self.beta) - self.tau)

    def demand(self, price: float) -> Demand:
        lam = float(price)
        x = surge_excess(lam, self.alpha, self.beta)
        t = abandonment_threshold(lam, self.alpha, self.beta)
        funded = (self.tau < t) & (lam < self.alpha)
        return Demand(
            budgets=np.where(funded, self.tau + x, 0.0), funded=funded, interior=self.tau + x
        )

    def __getitem__(self, index: QueryIndex) -> ShiftedSurge:
        def pick(p: FloatArray) -> FloatArray:
            return p if p.size == 1 else p[index]

        return self._keep_lengths(
            ShiftedSurge(self.tau[index], pick(self.alpha), pick(self.beta)), index
        )

    def __repr__(self) -> str:
        a = float(self.alpha[0]) if self.alpha.size == 1 else "per-query"
        b = float(self.beta[0]) if self.beta.size == 1 else "per-query"
        return f"ShiftedSurge(n={self.n}, alpha={a}, beta={b})"
