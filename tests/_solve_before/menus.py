"""Per-query menus of options (cost in tokens, value): what the grid solvers choose from.

Any curve becomes a menu by evaluating it on a budget grid; an :class:`EmpiricalCurve` becomes
an exact menu of its own jump points; a menu can also offer k parallel samples of b tokens each
(cost k b, value 1 - (1 - P(b))^k when a verifier picks a correct sample).

What an option costs depends on the accounting:

- ``allotted`` (the paper's): its cap, k b tokens, whatever the request generates;
- ``spent`` (the bill): the tokens it is expected to generate, k E[min(L, b)] = k S(b)
  (:meth:`~shadowprice.curves.UtilityCurve.spend`), a float. A curve without a length model
  spends its cap, so its spent menu equals its allotted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from shadowprice.curves.base import UtilityCurve
from shadowprice.curves.empirical import EmpiricalCurve
from shadowprice.curves.grid import check_grid

from .constraints import Constraints, IntArray

#: Default number of budget levels for curves without natural breakpoints.
DEFAULT_LEVELS = 64

#: What a budget bounds: the sum of caps (``allotted``) or of tokens generated (``spent``).
Accounting = Literal["allotted", "spent"]
ACCOUNTINGS: tuple[str, ...] = ("allotted", "spent")


def check_accounting(accounting: str) -> Accounting:
    """Validate an ``accounting`` argument (error names the allowed values)."""
    if accounting not in ACCOUNTINGS:
        raise ValueError(
            f"accounting must be 'allotted' (sum of caps) or 'spent' (tokens generated), "
            f"got {accounting!r}"
        )
    return accounting  # type: ignore[return-value]


@dataclass(frozen=True)
class Menu:
    """Options for N queries, K per query, sorted by cost within each row.

    Attributes
    ----------
    costs : array (N, K) or (K,)
        Tokens each option consumes: int64 caps (budgets x samples) under ``allotted``
        accounting, float64 expected spend under ``spent``; a (K,) grid is shared by all rows.
        Non-decreasing along each row.
    values : float array (N, K)
        Utility of each option; ``-inf`` marks options the query's limits forbid.
    budgets : int64 array (N, K) or (K,)
        Per-sample ``max_tokens`` of each option.
    samples : int64 array (N, K) or (K,)
        Parallel samples of each option.
    accounting : {'allotted', 'spent'}
        What ``costs`` count.
    """

    costs: NDArray[Any]
    values: NDArray[np.floating]
    budgets: IntArray
    samples: IntArray
    accounting: Accounting = "allotted"

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @property
    def feasible(self) -> NDArray[np.bool_]:
        return np.isfinite(self.values)

    def row_costs(self, rows: NDArray[np.intp] | slice = slice(None)) -> NDArray[Any]:
        """Costs of the given rows as (R, K) (a broadcast view for a shared grid)."""
        if self.costs.ndim == 1:
            r = np.arange(self.n)[rows]
            return np.broadcast_to(self.costs, (np.size(r), self.k))
        return self.costs[rows]

    def pick(
        self,
        field: IntArray,
        choice: NDArray[np.intp],
        rows: NDArray[np.intp] | slice = slice(None),
    ) -> IntArray:
        """Gather one option per row from a (K,) or (N, K) field."""
        if field.ndim == 1:
            return field[choice]
        return field[np.arange(self.n)[rows], choice]


#: Rows evaluated at once when tabulating curves, to bound temporary memory.
CHUNK = 1 << 15


def budget_grid(curves: UtilityCurve, cons: Constraints, levels: int = DEFAULT_LEVELS) -> IntArray:
    """A shared grid of at most ``levels`` budgets (multiples of g) from 0 to the useful top.

    The top is the largest cap, but no further than where any curve stops gaining (its peak or
    its 99.9% saturation point). Every multiple of g is kept when they fit in ``levels``.
    """
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    g = cons.granularity
    peak = curves.peak()
    useful = np.where(np.isfinite(peak), peak, curves.saturation(0.999, cap=float(cons.budget)))
    top = min(int(cons.hi.max(initial=0)), int(np.ceil(np.max(useful, initial=0.0) / g)) * g)
    top = max(top, g)
    steps = top // g
    if steps + 1 <= levels:
        grid = np.arange(steps + 1, dtype=np.int64) * g
    else:
        grid = np.unique(np.round(np.linspace(0, steps, levels)).astype(np.int64)) * g
    # Each query's smallest funded budget must be on the grid: protected queries need it to
    # be feasible at their floor, and min_tokens would otherwise round up to the next level.
    los = np.unique(cons.lo[cons.lo <= cons.hi])
    if los.size <= max(levels // 4, 1):
        grid = np.union1d(grid, los[los <= top])
    return grid


def _feasible(budgets: IntArray, cons: Constraints) -> NDArray[np.bool_]:
    b = budgets if budgets.ndim == 2 else budgets[None, :]
    ok = (b >= cons.lo[:, None]) & (b <= cons.hi[:, None])
    return ok | ((b == 0) & ~cons.protected[:, None])


def _spend_costs(curves: UtilityCurve, budgets: IntArray, samples: IntArray) -> NDArray[Any]:
    """Expected spend k S(b) of each option, (N, K) float64, tabulated in chunks."""
    b = np.broadcast_to(budgets, (curves.n, budgets.shape[-1]))
    k = np.broadcast_to(samples, b.shape)
    out = np.empty(b.shape)
    for start in range(0, curves.n, CHUNK):
        sl = slice(start, min(start + CHUNK, curves.n))
        out[sl] = k[sl] * curves[sl].spend(b[sl].astype(float))
    # Spend never falls as the cap grows; keep rows sorted against rounding.
    return np.maximum.accumulate(out, axis=1) if np.all(k == 1) else out


def menu_from_curve(
    curves: UtilityCurve,
    cons: Constraints,
    grid: IntArray | None = None,
    levels: int = DEFAULT_LEVELS,
    dtype: type = np.float64,
    accounting: Accounting = "allotted",
) -> Menu:
    """Evaluate ``curves`` on a budget grid (shared), or on its jump points if empirical.

    Rows are tabulated in chunks so that temporaries stay small; ``dtype=np.float32`` halves
    the menu's memory for very large N. ``accounting="spent"`` costs each option its
    expected spend S_i(b) (an (N, K) float array) instead of its cap.
    """
    check_accounting(accounting)
    if isinstance(curves, EmpiricalCurve) and grid is None:
        return menu_from_breakpoints(curves, cons, accounting)
    g = budget_grid(curves, cons, levels) if grid is None else check_grid(grid)
    gf: NDArray[np.floating] = g.astype(dtype)
    values: NDArray[np.floating] = np.empty((curves.n, g.size), dtype=dtype)
    # With the same limits for everyone, feasibility is a property of the grid column.
    columns = _feasible(g, cons.subset(slice(0, 1)))[0] if cons.uniform_limits else None
    for start in range(0, curves.n, CHUNK):
        stop = min(start + CHUNK, curves.n)
        sl = slice(start, stop)
        v = curves[sl].value(np.broadcast_to(gf, (stop - start, g.size)))
        if columns is None:
            values[sl] = np.where(_feasible(g, cons.subset(sl)), v, -np.inf)
        else:
            values[sl] = v
            if not columns.all():
                values[sl, ~columns] = -np.inf
    ones = np.ones_like(g)
    costs = g if accounting == "allotted" else _spend_costs(curves, g, ones)
    return Menu(costs=costs, values=values, budgets=g, samples=ones, accounting=accounting)


def menu_from_breakpoints(
    curves: EmpiricalCurve, cons: Constraints, accounting: Accounting = "allotted"
) -> Menu:
    """Exact menu of an empirical curve: 0 and each correct sample's length (rounded up to g,
    raised to lo); the curve is flat between them, so nothing else is worth buying (under
    either accounting: spend rises between them but value does not)."""
    g = cons.granularity
    bp = curves.breakpoints()
    fin = np.isfinite(bp)
    b = np.where(fin, np.ceil(np.where(fin, bp, 0) / g) * g, 0).astype(np.int64)
    b = np.maximum(b, np.where(fin, cons.lo[:, None], 0))
    b = np.where(fin & (b <= cons.hi[:, None]), b, 0)
    # Also offer the smallest funded budget, so a protected query always has an option.
    floor_opt = np.where(cons.lo <= cons.hi, cons.lo, 0)[:, None]
    budgets = np.concatenate([np.zeros((curves.n, 1), np.int64), floor_opt, b], axis=1)
    budgets.sort(axis=1)
    feas = _feasible(budgets, cons)
    # Duplicate budgets (missing lengths, rounding) must not count as distinct options.
    feas[:, 1:] &= budgets[:, 1:] != budgets[:, :-1]
    values = np.where(feas, curves.value(budgets.astype(float)), -np.inf)
    ones = np.ones_like(budgets)
    costs = budgets if accounting == "allotted" else _spend_costs(curves, budgets, ones)
    return Menu(costs=costs, values=values, budgets=budgets, samples=ones, accounting=accounting)


def best_of_k_menu(
    curves: UtilityCurve,
    cons: Constraints,
    ks: Sequence[int] = (1, 2, 4, 8),
    grid: IntArray | None = None,
    levels: int = 16,
    accounting: Accounting = "allotted",
) -> Menu:
    """Options of k parallel samples of b tokens each, valued as pass@k with a verifier.

    ``curves`` must give probabilities (P(correct within b) in [0, 1]). Each option costs k b
    tokens (``spent``: k S(b)) and is worth 1 - (1 - P(b))^k; the per-sample cap b must
    respect [lo, hi] and the total k b must fit the query's cap.
    """
    check_accounting(accounting)
    ks_arr = np.asarray(sorted({int(k) for k in ks}), dtype=np.int64)
    if ks_arr.size == 0 or ks_arr[0] < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    g = budget_grid(curves, cons, levels) if grid is None else np.asarray(grid, dtype=np.int64)
    p = np.clip(curves.value(np.broadcast_to(g.astype(float), (curves.n, g.size))), 0.0, 1.0)
    budgets = np.repeat(g[None, :], ks_arr.size, axis=0).ravel()  # (k-major) K = |ks| * |g|
    samples = np.repeat(ks_arr, g.size)
    costs = budgets * samples
    values = 1.0 - (1.0 - p[:, None, :]) ** ks_arr[None, :, None]
    values = values.reshape(curves.n, -1)
    order = np.lexsort((samples, costs))
    budgets, samples, costs, values = budgets[order], samples[order], costs[order], values[:, order]
    feas = _feasible(budgets, cons) & (costs[None, :] <= cons.hi[:, None])
    feas |= (costs[None, :] == 0) & ~cons.protected[:, None]
    # Zero-cost options other than the first are the same as abandoning.
    zero = costs == 0
    zero[np.argmax(zero)] = False
    feas &= ~zero[None, :]
    if accounting == "spent":
        spent = _spend_costs(curves, budgets, samples)
        # Same order as the caps would give is not guaranteed: re-sort rows by spend.
        order2 = np.argsort(spent, axis=1, kind="stable")
        rows = np.arange(curves.n)[:, None]
        full = np.broadcast_to
        return Menu(
            costs=spent[rows, order2],
            values=np.where(feas, values, -np.inf)[rows, order2],
            budgets=full(budgets, spent.shape)[rows, order2],
            samples=full(samples, spent.shape)[rows, order2],
            accounting="spent",
        )
    return Menu(
        costs=costs, values=np.where(feas, values, -np.inf), budgets=budgets, samples=samples
    )
