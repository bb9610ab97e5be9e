"""The policies CLEAR is compared with. None of them has a price (``price`` is nan)."""

from __future__ import annotations

import numpy as np

from ..curves.base import FloatArray, UtilityCurve
from .constraints import Constraints, IntArray
from .menus import Menu
from .result import STATUS_OK, Allocation, floors_exceed_budget


def fit_to_budget(want: FloatArray, cons: Constraints, *, max_scale: float = np.inf) -> IntArray:
    """Scale desired budgets by one factor s <= ``max_scale`` so that, after snapping to the
    allowed set (multiples of g in [lo, hi], or 0), they use as much of B as possible.

    Snapped budgets are non-decreasing in s, so the largest feasible s is found by bisection.

    Parameters
    ----------
    want : array_like, shape (N,)
        Desired budgets in tokens (negative and NaN count as 0, infinite as B).
    cons : Constraints
        Limits, granularity and the total budget B.
    max_scale : float
        Largest factor allowed (1: never give more than asked).

    Returns
    -------
    ndarray of int64, shape (N,)
        Budgets on the allowed set with sum <= B.
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


def _result(
    curves: UtilityCurve, budgets: IntArray, cons: Constraints, policy: str, message: str
) -> Allocation:
    funded = budgets > 0
    return Allocation(
        budgets=budgets,
        price=float("nan"),
        funded=funded,
        utility=float(curves.value(budgets.astype(float)).sum()),
        budget=cons.budget,
        policy=policy,
        status=STATUS_OK,
        message=f"{message}; {int((~funded).sum())} of {curves.n} queries get no tokens",
    )


def _infeasible(n: int, cons: Constraints, policy: str) -> Allocation:
    return floors_exceed_budget(n, cons.committed, cons.budget, policy)


def uniform(curves: UtilityCurve, cons: Constraints) -> Allocation:
    """Every query the same ``max_tokens`` = B / N (rounded to the granularity, within limits).

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves.
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    Allocation
        No price (``price`` is NaN); infeasible when protected floors exceed the budget.
    """
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "uniform")
    b = fit_to_budget(np.ones(curves.n), cons)
    share = cons.budget // max(curves.n, 1)
    return _result(curves, b, cons, "uniform", f"uniform share of {share} tokens per query")


def proportional(curves: UtilityCurve, cons: Constraints) -> Allocation:
    """Budgets proportional to each query's (predicted) threshold, scaled to use B.

    Thresholds beyond a query's cap get nothing (they cannot be reached).

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves.
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    Allocation
        No price (``price`` is NaN); infeasible when protected floors exceed the budget.
    """
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "proportional")
    tau = curves.threshold()
    # A threshold beyond the query's cap cannot be reached: such a query would otherwise
    # absorb the budget in proportion to an unreachable number.
    want = np.where(np.isfinite(tau) & (tau <= cons.hi), np.maximum(tau, 1.0), 0.0)
    return _result(
        curves,
        fit_to_budget(want, cons),
        cons,
        "proportional",
        "budgets proportional to predicted thresholds",
    )


def length(curves: UtilityCurve, cons: Constraints, level: float = 0.9) -> Allocation:
    """Each query its predicted needed length, scaled down to fit.

    The needed length is where the curve reaches ``level`` of its ceiling (the TALE-EP idea
    of asking for what the query needs).

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves.
    cons : Constraints
        Limits, granularity and the total budget.
    level : float
        Share of each curve's ceiling that counts as needed, in (0, 1].

    Returns
    -------
    Allocation
        No price (``price`` is NaN); infeasible when protected floors exceed the budget.
    """
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "length")
    need = curves.saturation(level, cap=float(cons.budget))
    b = fit_to_budget(need, cons, max_scale=1.0)
    return _result(
        curves,
        b,
        cons,
        "length",
        f"each query its predicted needed length ({level:.0%} of its ceiling), scaled to fit",
    )


def greedy(curves: UtilityCurve, menu: Menu, cons: Constraints) -> Allocation:
    """Myopic marginal-utility greedy: repeatedly give the next step up its menu to the query
    whose next step buys the most utility per token; ties are spread round-robin.

    Vectorised: a query advances while its next step beats the cut-off, so its level at a
    cut-off t is the length of the prefix of steps whose running-minimum ratio is >= t.
    Sorting all steps by that running minimum (then by level) reproduces the greedy order.

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves (for the expected utility).
    menu : Menu
        Each query's options (budgets and their values) on a grid.
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    Allocation
        No price (``price`` is NaN); infeasible when protected floors exceed the budget.
    """
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, "greedy")
    n, k = menu.n, menu.k
    feas = menu.feasible
    # Compact each row's feasible options to the front, keeping cost order: the ladder.
    order = np.argsort(~feas, axis=1, kind="stable")
    rows2 = np.arange(n)[:, None]
    vals = menu.values[rows2, order]
    costs = menu.row_costs()[rows2, order].astype(float)
    costs = np.where(np.isfinite(vals), costs, np.inf)
    with np.errstate(invalid="ignore"):
        # -inf padding makes inf - inf = nan here; those steps are masked out below.
        ratio = np.diff(vals, axis=1) / np.diff(costs, axis=1)
    ratio = np.where(np.isfinite(vals[:, 1:]), np.nan_to_num(ratio, nan=-np.inf), -np.inf)
    ladder = np.minimum.accumulate(ratio, axis=1)
    with np.errstate(invalid="ignore"):
        step_cost = np.diff(costs, axis=1)
    key = ladder.ravel()
    rows = np.repeat(np.arange(n), k - 1)
    level = np.tile(np.arange(k - 1), n)
    keep = np.isfinite(key)
    sequence = np.lexsort((rows[keep], level[keep], -key[keep]))
    taken_rows = rows[keep][sequence]
    spent = np.cumsum(step_cost.ravel()[keep][sequence])
    left = cons.budget - float(costs[:, 0].sum())
    steps = np.bincount(taken_rows[spent <= left], minlength=n)
    pick = order[np.arange(n), steps]
    budgets = menu.pick(menu.budgets, pick).astype(np.int64)
    return _result(
        curves, budgets, cons, "greedy", "greedy on marginal utility per token (ties spread evenly)"
    )
