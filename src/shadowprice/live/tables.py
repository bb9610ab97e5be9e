"""Curves tabulated on one budget grid: value, expected spend and survival per query.

The live planner works on tables rather than curve objects: every decision (a start, an
extension) reads one row, and recalibrating the lengths rewrites the tables without knowing
which curve family produced them.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..curves.base import UtilityCurve

__all__ = ["CurveTables", "live_grid", "tabulate"]

#: Rows evaluated at once (bounds temporaries).
_CHUNK = 1 << 14
#: Budgets probed to find where the curves live (tokens).
_PROBE = np.geomspace(1.0, float(1 << 22), 89)
#: How far past the longest likely length the grid reaches (a recalibration that finds the
#: lengths longer moves the whole grid with them).
HEADROOM = 2.0


@dataclass
class CurveTables:
    """Value, spend and survival of N queries on a shared grid.

    Attributes
    ----------
    grid : int64 array (K,)
        Budgets in tokens, ascending, grid[0] = 0.
    value : float array (N, K)
        V_i(grid[k]) = P(correct and finished within grid[k]).
    spend : float array (N, K)
        S_i(grid[k]) = E[min(L, grid[k])], tokens.
    survival : float array (N, K)
        P(L > grid[k]).
    """

    grid: NDArray[np.int64]
    value: NDArray[np.float64]
    spend: NDArray[np.float64]
    survival: NDArray[np.float64]

    @property
    def n(self) -> int:
        return int(self.value.shape[0])

    def __post_init__(self) -> None:
        #: The grid as a Python list (scalar lookups without numpy's call overhead).
        self.grid_list: list[float] = self.grid.astype(float).tolist()

    def at(self, query: int, budget: float) -> tuple[float, float, float]:
        """(value, spend, survival) of one query at any budget (linear between grid points;
        beyond the grid: value and survival flat, spend rising with the last survival)."""
        g = self.grid_list
        b = float(budget)
        if b >= g[-1]:
            k = len(g) - 1
            u = float(self.survival[query, k])
            return float(self.value[query, k]), float(self.spend[query, k]) + (b - g[k]) * u, u
        j = max(bisect_right(g, b), 1)  # g[j - 1] <= b < g[j]
        w = (b - g[j - 1]) / (g[j] - g[j - 1])
        out = []
        for table in (self.value, self.spend, self.survival):
            lo = float(table[query, j - 1])
            out.append(lo + w * (float(table[query, j]) - lo))
        return out[0], out[1], out[2]


def tabulate(curves: UtilityCurve, grid: NDArray[np.int64]) -> CurveTables:
    """Evaluate ``curves`` (value, spend, survival) on ``grid``, in row chunks."""
    g = np.asarray(grid, dtype=np.int64)
    n, k = curves.n, g.size
    out = [np.empty((n, k)) for _ in range(3)]
    gf = g.astype(float)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        part = curves[sl]
        b = np.broadcast_to(gf, (sl.stop - sl.start, k))
        out[0][sl] = np.maximum.accumulate(np.maximum(part.value(b), 0.0), axis=1)
        out[1][sl] = np.maximum.accumulate(part.spend(b), axis=1)
        out[2][sl] = np.minimum.accumulate(np.clip(part.survival(b), 0.0, 1.0), axis=1)
    return CurveTables(g, out[0], out[1], out[2])


def _first_below(table: NDArray[np.float64], level: float) -> NDArray[np.float64]:
    """Per row, the first probe budget where ``table`` falls to ``level`` (last probe if
    never)."""
    hit = table <= level
    idx = np.where(hit.any(axis=1), np.argmax(hit, axis=1), _PROBE.size - 1)
    return _PROBE[idx]


def live_grid(
    curves: UtilityCurve, budget: float, levels: int = 96, max_tokens: int | None = None
) -> NDArray[np.int64]:
    """A geometric budget grid covering where the queries' lengths and values live.

    From a quarter of the shortest 1 % length quantile (or where values start) to
    :data:`HEADROOM` times the longest 99.9 % quantile (or where values saturate), capped by
    the total ``budget`` and ``max_tokens``; 0 first; at most ``levels`` budgets.
    """
    if levels < 4:
        raise ValueError(f"levels must be at least 4, got {levels}")
    if curves.n == 0:
        return np.array([0, 1], dtype=np.int64)
    rows = np.arange(curves.n)
    if curves.n > 4096:  # the extremes of a large pool are well estimated from a sample
        rows = np.unique(np.linspace(0, curves.n - 1, 4096).astype(np.int64))
    sub = curves[rows]
    b = np.broadcast_to(_PROBE, (rows.size, _PROBE.size))
    v = sub.value(b)
    top = np.maximum(v[:, -1:], 1e-300)
    lo_v = _first_below(-v / top, -0.01)
    hi_v = _first_below(-v / top, -0.999)
    lo, hi = float(np.quantile(lo_v, 0.01)), float(np.quantile(hi_v, 0.99))
    if sub.has_spend:
        surv = sub.survival(b)
        lo = min(lo, float(np.quantile(_first_below(surv, 0.99), 0.01)))
        hi = max(hi, float(np.quantile(_first_below(surv, 0.001), 0.99)))
    lo = max(1.0, 0.25 * lo)
    hi = HEADROOM * hi
    if max_tokens is not None:
        hi = min(hi, float(max_tokens))
    hi = max(min(hi, float(budget)), 4.0 * lo)
    g = np.unique(np.round(np.geomspace(lo, hi, levels - 1)).astype(np.int64))
    if max_tokens is not None:
        g = np.minimum(g, int(max_tokens))
    return np.unique(np.concatenate([[0], g[g > 0]])).astype(np.int64)
