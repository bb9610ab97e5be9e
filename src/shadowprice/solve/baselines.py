"""The policies CLEAR is compared with. None of them has a price (``price`` is nan)."""

from __future__ import annotations

import numpy as np
from ..curves.base import FloatArray, UtilityCurve
from .constraints import Constraints, IntArray
from .menus import Menu
from .result import STATUS_INFEASIBLE, STATUS_OK, Allocation


def fit_to_budget(want: FloatArray, cons: Constraints, *, max_scale: float = np.inf) -> IntArray:
    """Scale desired budgets by one factor s <= ``max_scale`` so that, after snapping to the
    allowed set (multiples of g in [lo, hi], or 0), they use as much of B as possible.

    Snapped budgets are non-decreasing in s, so the largest feasible s is found by bisection.
    """
    want = np.nan_to_num(np.maximum(np.asarray(want, float), 0.0), posinf=float(cons.budget))
    B = cons.budget

    def total(s: float) -> int:
        return int(cons.round_down(want * s).sum())

    if total(0.0) > B:
        raise ValueError("protected floors exceed the budget")
    hi_s = min(max_scale, float(B) / max(float(want[want > 0].min(initial=np.inf)), 1e-9) + 1.0)
    if total(hi_s) <= B:
        return cons.round_down(want * hi_s)
    lo_s = 0.0
    for _ in range(100):
        mid = 0.5 * (lo_s + hi_s)
        if total(mid) <= B:
            lo_s = mid
        else:
            hi_s = mid
        if hi_s - lo_s <= 1e-12 * hi_s:
            break
    return cons.round_down(want * lo_s)


def _result(curves: UtilityCurve, budgets: IntArray, cons: Constraints, policy: str,
            message: str) -> Allocation:
    funded = budgets > 0
    return Allocation(
        budgets=budgets, price=float("nan"), funded=funded,
        utility=float(curves.value(budgets.astype(float)).sum()), budget=cons.budget,
        policy=policy, status=STATUS_OK,
        message=f"{message}; {int((~funded).sum())} of {curves.n} queries get no tokens",
    )


def _infeasible(n: int, cons: Constraints, policy: str) -> Allocation:
    return Allocation(np.zeros(n, np.int64), float("nan"), np.zeros(n, bool), 0.0, cons.budget,
                      policy, STATUS_INFEASIBLE,
                      f"infeasible: protected queries need {cons.committed} tokens but the "
                      f"budget is {cons.budget}")


def uniform(curves: UtilityCurve, cons: Constraints) -> Allocation:
    """Every query the same ``max_tokens`` = B / N (rounded to the granularity, within limits)."""
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "uniform")
    b = fit_to_budget(np.ones(curves.n), cons)
    share = cons.budget // max(curves.n, 1)
    return _result(curves, b, cons, "uniform", f"uniform share of {share} tokens per query")


def proportional(curves: UtilityCurve, cons: Constraints) -> Allocation:
    """Budgets proportional to each query's (predicted) threshold, scaled to use B."""
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "proportional")
    tau = curves.threshold()
    want = np.where(np.isfinite(tau), np.maximum(tau, 1.0), 0.0)
    return _result(curves, fit_to_budget(want, cons), cons, "proportional",
                   "budgets proportional to predicted thresholds")


def length(curves: UtilityCurve, cons: Constraints, level: float = 0.9) -> Allocation:
    """Each query its predicted needed length (where its curve reaches ``level`` of its
    ceiling: the TALE-EP idea of asking for what the query needs), scaled down to fit."""
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "length")
    need = curves.saturation(level, cap=float(cons.budget))
    b = fit_to_budget(need, cons, max_scale=1.0)
    return _result(curves, b, cons, "length",
                   f"each query its predicted needed length ({level:.0%} of its ceiling), "
                   f"scaled to fit")


def greedy(curves: UtilityCurve, menu: Menu, cons: Constraints) -> Allocation:
    """Myopic marginal-utility greedy on the grid: repeatedly give the next budget step to the
    query whose next step has the highest utility per token; ties are spread round-robin.

    Vectorised: a query advances while its next step beats the cut-off, so its level at a
    cut-off t is the length of the prefix of steps whose running-minimum ratio is >= t.
    Sorting all steps by that running minimum reproduces the greedy order.
    """
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "greedy")
    if menu.costs.ndim != 1 or np.any(menu.samples != 1):
        raise ValueError("greedy needs a shared budget grid")
    grid = menu.costs
    n, k = menu.n, menu.k
    vals = np.where(menu.feasible, menu.values, np.nan)
    # Start every query at its cheapest feasible option (0, or its floor if protected).
    start = np.argmax(menu.feasible, axis=1)
    step_cost = np.diff(grid).astype(float)
    step_gain = np.diff(np.nan_to_num(vals, nan=-np.inf), axis=1)
    ratio = np.where(np.isfinite(step_gain), step_gain, -np.inf) / step_cost
    ratio[np.arange(k - 1)[None, :] < start[:, None]] = np.inf  # already taken
    # Infeasible steps end the query's ladder.
    ladder = np.minimum.accumulate(np.where(menu.feasible[:, 1:], ratio, -np.inf), axis=1)
    rows = np.repeat(np.arange(n), k - 1)
    level = np.tile(np.arange(k - 1), n)
    key = ladder.ravel()
    taken_free = np.isinf(key) & (key > 0)
    order = np.lexsort((rows, level, -key))
    order = order[np.isfinite(key[order]) | taken_free[order]]
    costs = np.tile(step_cost, n)[order]
    base = int(grid[start].sum())
    left = cons.budget - base
    spent = np.cumsum(np.where(taken_free[order], 0.0, costs))
    take = order[spent <= left]
    steps = np.zeros(n, dtype=np.int64)
    np.add.at(steps, rows[take], 1)
    idx = np.maximum(start, steps)
    budgets = grid[idx].astype(np.int64)
    return _result(curves, budgets, cons, "greedy",
                   "greedy on marginal utility per token (ties spread evenly)")

