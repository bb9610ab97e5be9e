"""A curve known only by its values on a budget grid (fitted, smoothed or averaged curves)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .base import FloatArray, QueryIndex, UtilityCurve
from .grid import check_grid
from .lengths import TabulatedLengths


class TabulatedCurve(UtilityCurve):
    """Piecewise-linear utility through (grid[k], values[i, k]), flat beyond the last point.

    Parameters
    ----------
    grid : array of shape (K,)
        Ascending budgets in tokens, starting at 0.
    values : array of shape (N, K)
        Utility of each query at each grid budget; values[:, 0] should be 0.
    spend : array of shape (N, K), optional
        Expected tokens generated under each grid cap, E[min(L, grid[k])] over all samples
        (see :class:`~shadowprice.curves.TabulatedLengths`); default: no length information.
    survival : array of shape (N, K), optional
        P(L > grid[k]), with ``spend`` only.
    """

    def __init__(
        self,
        grid: ArrayLike,
        values: ArrayLike,
        spend: ArrayLike | None = None,
        survival: ArrayLike | None = None,
    ) -> None:
        g = check_grid(grid, whole=False)
        v = np.atleast_2d(np.asarray(values, dtype=float))
        if v.shape[1] != g.size:
            raise ValueError(f"values must have shape (N, {g.size}), got {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("values must be finite")
        self.grid, self.values = g, v
        if spend is not None:
            self.length_model = TabulatedLengths(g, spend, survival)
            if self.length_model.n != v.shape[0]:
                raise ValueError(f"spend must have shape {v.shape}, got {np.shape(spend)}")
        elif survival is not None:
            raise ValueError("survival needs spend: pass the spend table too")

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def value(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        b2 = np.broadcast_to(b, (self.n,)) if b.ndim <= 1 else b
        flat = b2.reshape(self.n, -1)
        j = np.clip(np.searchsorted(self.grid, flat, side="right") - 1, 0, self.grid.size - 2)
        g0, g1 = self.grid[j], self.grid[j + 1]
        rows = np.arange(self.n)[:, None]
        v0, v1 = self.values[rows, j], self.values[rows, j + 1]
        t = np.clip((flat - g0) / (g1 - g0), 0.0, 1.0)
        return (v0 + t * (v1 - v0)).reshape(b2.shape)

    def threshold(self) -> FloatArray:
        top = self.values.max(axis=1)
        first = np.argmax(self.values > 0.05 * top[:, None], axis=1)
        return np.where(top > 0, self.grid[np.maximum(first - 1, 0)], np.inf)

    def ceiling(self) -> FloatArray:
        return self.values.max(axis=1)

    def peak(self) -> FloatArray:
        return self.grid[np.argmax(self.values, axis=1)]

    def __getitem__(self, index: QueryIndex) -> TabulatedCurve:
        return self._keep_lengths(TabulatedCurve(self.grid, self.values[index]), index)

    def __repr__(self) -> str:
        return f"TabulatedCurve(n={self.n}, grid={self.grid.size})"
