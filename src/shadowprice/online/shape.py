"""The shape every request's curve shares, shifted by its own threshold.

Online, a request's predicted curve is U(b) = g(b - tau) for b > tau (and 0 below): one shape g
for the whole population, one threshold tau per request (the text predictor's, or a route's
default). For such *shift families* the demand at a price lambda is the same for every request
up to the shift:

    x*(lambda) = argmax_x g(x) - lambda x          (tokens bought above the threshold)
    T(lambda)  = (g(x*) - lambda x*) / lambda      (largest threshold still worth funding)

so a request is funded iff tau < T(lambda), with allowance tau + x*. The pricer computes both
once per price update (with the cost of an allowance being its expected spend, see
:mod:`.pricer`), and each request's decision is a comparison and an addition. The two shapes
with closed-form demand are the paper's surge and the Gamma(2) success curve; they reuse
:mod:`shadowprice.curves` for the formulas.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ..curves import GammaSCurve, ShiftedSurge, UtilityCurve

__all__ = ["GammaShape", "Shape", "SurgeShape", "shape_terms"]

FloatArray = NDArray[np.float64]

#: 10 % quantile of a Gamma(2, 1) variable: 1 - (1 + y) e^(-y) = 0.1.
_GAMMA2_Q10 = 0.531812


class Shape(Protocol):
    """What the online pricer needs to know about the population's curve shape."""

    def gain(self, x: float) -> float:
        """Utility of ``x`` tokens above the threshold (scalar, fast)."""
        ...

    def gains(self, x: FloatArray) -> FloatArray:
        """Vectorised :meth:`gain`; 0 for ``x <= 0``."""
        ...

    def curves(self, tau: FloatArray) -> UtilityCurve:
        """The batch curves of thresholds ``tau`` (N,), for hindsight clearing."""
        ...

    @property
    def price_ceiling(self) -> float:
        """A price above which nobody is funded."""
        ...

    @property
    def short_excess(self) -> float:
        """Tokens the shortest tenth of answers run past their threshold (10th percentile of
        the excess length under this shape)."""
        ...


def shape_terms(shape: Shape, price: float) -> tuple[float, float]:
    """(x*, T) of :mod:`this module <shadowprice.online.shape>` at ``price``.

    Returns (peak excess, inf) at price 0 and (0, 0) at or above the shape's price ceiling.
    """
    base = shape.curves(np.zeros(1))
    if price <= 0:
        peak = float(base.peak()[0])
        return (peak if math.isfinite(peak) else float(base.saturation(0.999)[0])), math.inf
    if price >= shape.price_ceiling:
        return 0.0, 0.0
    d = base.demand(price)
    x = float(d.interior[0] if d.interior is not None else d.budgets[0])
    if not math.isfinite(x) or x <= 0:
        return 0.0, 0.0
    surplus = shape.gain(x) - price * x
    return x, max(surplus, 0.0) / price


class SurgeShape:
    """The paper's shifted surge g(x) = alpha x e^(-beta x) (latent utility).

    Parameters
    ----------
    alpha : float
        Gain per token just above the threshold (> 0).
    beta : float
        Decay, 1/tokens (> 0); the surge peaks 1/beta tokens above the threshold.
    """

    def __init__(self, alpha: float = 1.5, beta: float = 0.005) -> None:
        if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
            raise ValueError(f"alpha and beta must be positive, got {alpha!r}, {beta!r}")
        self.alpha, self.beta = float(alpha), float(beta)

    def gain(self, x: float) -> float:
        return self.alpha * x * math.exp(-self.beta * x) if x > 0 else 0.0

    def gains(self, x: FloatArray) -> FloatArray:
        xp = np.maximum(x, 0.0)
        return self.alpha * xp * np.exp(-self.beta * xp)

    def curves(self, tau: FloatArray) -> UtilityCurve:
        return ShiftedSurge(tau, self.alpha, self.beta)

    @property
    def price_ceiling(self) -> float:
        return self.alpha

    @property
    def short_excess(self) -> float:
        # alpha x e^(-beta x) is a Gamma(2, beta) density up to scale: 10 % quantile 0.532/beta.
        return _GAMMA2_Q10 / self.beta

    def __repr__(self) -> str:
        return f"SurgeShape(alpha={self.alpha}, beta={self.beta})"


class GammaShape:
    """Success probability g(x) = p [1 - (1 + beta x) e^(-beta x)] (a Gamma(2) length CDF).

    Parameters
    ----------
    beta : float
        Rate, 1/tokens (> 0).
    p : float
        Probability the request is solvable at all, in (0, 1].
    """

    def __init__(self, beta: float = 0.005, p: float = 1.0) -> None:
        if not (beta > 0 and 0 < p <= 1):
            raise ValueError(f"beta must be positive and p in (0, 1], got {beta!r}, {p!r}")
        self.beta, self.p = float(beta), float(p)

    def gain(self, x: float) -> float:
        if x <= 0:
            return 0.0
        bx = self.beta * x
        return self.p * (1.0 - (1.0 + bx) * math.exp(-bx))

    def gains(self, x: FloatArray) -> FloatArray:
        bx = self.beta * np.maximum(x, 0.0)
        return self.p * (-np.expm1(-bx) - bx * np.exp(-bx))

    def curves(self, tau: FloatArray) -> UtilityCurve:
        return GammaSCurve(tau, self.beta, self.p)

    @property
    def price_ceiling(self) -> float:
        # The marginal p beta^2 x e^(-beta x) peaks at p beta / e.
        return self.p * self.beta / math.e

    @property
    def short_excess(self) -> float:
        return _GAMMA2_Q10 / self.beta

    def __repr__(self) -> str:
        return f"GammaShape(beta={self.beta}, p={self.p})"
