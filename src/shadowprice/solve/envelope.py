"""The general market solver: one price over any per-query menu of (cost, value) options.

At a price lambda each query picks the option maximising value - lambda cost. Only options on
the upper concave envelope of a query's menu are ever picked, so this is CLEAR's market on the
concave envelope of arbitrary curves (empirical, tabulated, fitted) and of menus that mix
budgets with parallel samples. Aggregate demand is non-increasing in lambda; bisection finds
the clearing price. Rows whose choice is the same at both ends of the price bracket cannot
change inside it, so they leave the active set: later steps only touch the few queries that are
still undecided, which keeps the solver near O(N K) overall.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .constraints import Constraints, IntArray
from .market import PRICE_RTOL
from .menus import Menu
from .result import STATUS_INFEASIBLE, STATUS_NOT_SCARCE, STATUS_OK, Allocation

MAX_ITER = 200
FILL_ROUNDS = 8


def _choose(menu: Menu, rows: NDArray[np.intp], price: float) -> NDArray[np.intp]:
    """Index of each row's surplus-maximising feasible option (lowest cost on ties)."""
    costs = menu.row_costs(rows)
    score = menu.values[rows] - price * costs
    score = np.where(menu.feasible[rows], score, -np.inf)
    return np.argmax(score, axis=1)


def _row_cost(menu: Menu, rows: NDArray[np.intp], choice: NDArray[np.intp]) -> IntArray:
    if menu.costs.ndim == 1:
        return menu.costs[choice]
    return menu.costs[rows, choice]


def price_ceiling(menu: Menu) -> float:
    """A price above every option's average value per token: nobody buys optional tokens."""
    c = menu.row_costs()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(menu.feasible & (c > 0), menu.values / np.where(c > 0, c, 1), 0.0)
    return float(np.max(ratio, initial=0.0)) * 2.0 + 1e-12


def clear_menu(menu: Menu, cons: Constraints, *, policy: str = "market") -> Allocation:
    """Allocate by one clearing price over per-query menus (see module docstring)."""
    n, B = menu.n, cons.budget
    if (~menu.feasible.any(axis=1)).any():
        i = int(np.flatnonzero(~menu.feasible.any(axis=1))[0])
        raise ValueError(f"query {i} has no feasible option within its limits; "
                         f"check its floor, min_tokens and max_tokens against the grid")
    rows = np.arange(n)
    c_lo = _choose(menu, rows, 0.0)
    cost_lo = _row_cost(menu, rows, c_lo)
    if cost_lo.sum() <= B:
        return _result(menu, c_lo, 0.0, cons, policy, STATUS_NOT_SCARCE, 0, {},
                       "budget not scarce: every query got its best option at price 0")
    p_lo, p_hi = 0.0, price_ceiling(menu)
    c_hi = _choose(menu, rows, p_hi)
    cost_hi = _row_cost(menu, rows, c_hi)
    if cost_hi.sum() > B:
        return Allocation(np.zeros(n, np.int64), float("nan"), np.zeros(n, bool), 0.0, B, policy,
                          STATUS_INFEASIBLE,
                          f"infeasible: protected queries need {int(cost_hi.sum())} tokens at "
                          f"their cheapest options but the budget is {B}")
    active = np.flatnonzero(c_lo != c_hi)
    fixed = int(cost_hi.sum() - cost_hi[active].sum())
    it = 0
    while active.size and p_hi - p_lo > PRICE_RTOL * p_hi and it < MAX_ITER:
        mid = 0.5 * (p_lo + p_hi)
        c_mid = _choose(menu, active, mid)
        if fixed + int(_row_cost(menu, active, c_mid).sum()) <= B:
            p_hi = mid
            c_hi[active] = c_mid
        else:
            p_lo = mid
            c_lo[active] = c_mid
        settled = c_lo[active] == c_hi[active]
        fixed += int(_row_cost(menu, active[settled], c_hi[active[settled]]).sum())
        active = active[~settled]
        it += 1
    choice, fill = _fill(menu, c_hi, c_lo, active, cons)
    return _result(menu, choice, p_hi, cons, policy, STATUS_OK, it,
                   {"undecided_at_price": int(active.size), **fill},
                   f"market cleared at price {p_hi:.6g} after {it} bisection steps over "
                   f"{menu.k}-option menus")


def _fill(menu: Menu, choice: NDArray[np.intp], upper: NDArray[np.intp], active: NDArray[np.intp],
          cons: Constraints) -> tuple[NDArray[np.intp], dict[str, int]]:
    """Spend the leftover at the clearing price: first upgrade the undecided queries (their
    next option is worth the price per token), then the best single upgrades that still fit."""
    choice = choice.copy()
    rows = np.arange(menu.n)
    left = cons.budget - int(_row_cost(menu, rows, choice).sum())
    upgraded = 0
    if active.size and left > 0:
        extra = _row_cost(menu, active, upper[active]) - _row_cost(menu, active, choice[active])
        gain = menu.values[active, upper[active]] - menu.values[active, choice[active]]
        order = np.argsort(-gain / np.maximum(extra, 1), kind="stable")
        take = np.cumsum(extra[order]) <= left
        # Prefix that fits; leftover then goes to the generic fill below.
        sel = active[order[take]]
        choice[sel] = upper[sel]
        left -= int(extra[order[take]].sum())
        upgraded = int(sel.size)
    rounds = 0
    while left > 0 and rounds < FILL_ROUNDS:
        cur_cost = _row_cost(menu, rows, choice)
        cur_val = menu.values[rows, choice]
        extra = menu.row_costs() - cur_cost[:, None]
        gain = menu.values - cur_val[:, None]
        ok = menu.feasible & (extra > 0) & (extra <= left) & (gain > 0)
        if not ok.any():
            break
        ratio = np.where(ok, gain / np.where(extra > 0, extra, 1), -np.inf)
        best = np.argmax(ratio, axis=1)
        cand = np.flatnonzero(ok.any(axis=1))
        r = ratio[cand, best[cand]]
        order = cand[np.argsort(-r, kind="stable")]
        ex = extra[order, best[order]]
        take = np.cumsum(ex) <= left
        if not take.any():
            # The best-ratio upgrades are too large; take the single best that fits.
            g = np.where(ok, gain, -np.inf)
            i, j = np.unravel_index(np.argmax(g), g.shape)
            choice[i] = j
            left -= int(extra[i, j])
        else:
            sel = order[take]
            choice[sel] = best[sel]
            left -= int(ex[take].sum())
        rounds += 1
    return choice, {"upgraded_at_price": upgraded, "fill_rounds": rounds}


def _result(menu: Menu, choice: NDArray[np.intp], price: float, cons: Constraints, policy: str,
            status: int, iterations: int, info: dict[str, int], message: str) -> Allocation:
    budgets = menu.pick(menu.budgets, choice).astype(np.int64)
    samples = menu.pick(menu.samples, choice).astype(np.int64)
    funded = budgets > 0
    utility = float(menu.values[np.arange(menu.n), choice].astype(np.float64).sum())
    multi = bool(np.any(menu.samples != 1))
    return Allocation(
        budgets=budgets, price=price, funded=funded, utility=utility, budget=cons.budget,
        policy=policy, status=status,
        message=message + f"; {int((~funded).sum())} of {menu.n} queries abandoned",
        samples=samples if multi else None,
        info={"iterations": iterations, "options": menu.k, "choice": choice, **info},
    )
