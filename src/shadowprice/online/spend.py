"""What an allowance costs: the tokens a request is expected to spend, learned online.

A request granted b tokens spends min(L, b), L the length its answer runs: tokens it does not
use go back to the period's pool. Charging the price on the allowance b overstates the cost of
a generous allowance (most answers stop well before it) and so shrinks allowances, cutting off
answers that would have finished; pricing the expected spend does not. With L = tau + X (tau
the request's threshold, X what the answer runs past it, the same distribution for every
request: the population's shift model, see :mod:`.shape`):

    E[spend | b] = tau + E[min(X, b - tau)]

:class:`SpendModel` keeps the last ``size`` finished requests' X = used - tau and evaluates
m(y) = E[min(X, y)] from their sorted values and running sums (one ``searchsorted`` for a
whole array of y). A request cut off by its allowance only says X >= b - tau; it counts as
X = b - tau, so a forecast for allowances larger than the recent ones errs low, toward
spending the budget rather than saving it. Before ``min_samples`` requests have finished every
allowance is assumed spent in full (m(y) = y).
"""

from __future__ import annotations

import numpy as np

from .shape import FloatArray

__all__ = ["SpendModel"]


class SpendModel:
    """Expected excess spend m(y) = E[min(X, y)] from recent finished requests.

    Parameters
    ----------
    size : int
        Finished requests remembered (>= 16).
    min_samples : int
        Requests needed before the learned distribution is used (>= 1).
    """

    def __init__(self, size: int = 2048, min_samples: int = 32) -> None:
        if size < 16 or min_samples < 1:
            raise ValueError(f"need size >= 16 and min_samples >= 1, got {size}, {min_samples}")
        self._x = np.zeros(size)
        self._n = 0
        self.min_samples = int(min_samples)
        self._sorted: FloatArray | None = None
        self._sums = np.zeros(1)

    @property
    def observed(self) -> int:
        """Finished requests seen in total."""
        return self._n

    def observe(self, tau: float, used: int) -> None:
        """Record a finished request: its (corrected) threshold and the tokens it spent."""
        self._x[self._n % self._x.size] = float(used) - float(tau)
        self._n += 1

    def refresh(self) -> None:
        """Take the requests recorded so far into account (once per price update)."""
        n = min(self._n, self._x.size)
        if n < self.min_samples:
            self._sorted = None
            return
        self._sorted = np.sort(self._x[:n])
        self._sums = np.concatenate(([0.0], np.cumsum(self._sorted)))

    def excess(self, y: FloatArray) -> FloatArray:
        """m(y) = E[min(X, y)] for an array of allowances above threshold ``y``, tokens."""
        y = np.asarray(y, dtype=float)
        if self._sorted is None:
            return y
        n = self._sorted.size
        below = np.searchsorted(self._sorted, y)
        return (self._sums[below] + y * (n - below)) / n

    def excess_one(self, y: float) -> float:
        """:meth:`excess` of one value."""
        return float(self.excess(np.array([y]))[0])
