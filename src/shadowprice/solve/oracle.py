"""The exact optimum on a budget grid: multiple-choice knapsack by dynamic programming.

Utilities with an entry cost are not concave, so a price (Lagrangian) solution can fall short of
the best allocation. The DP over total cost in granules is exact for the given menus and serves
as the oracle that measures every policy's gap. Cost: O(N K G) time and O(N G) memory for G
budget granules, so it is for instances up to a few thousand queries.
"""

from __future__ import annotations

import numpy as np

from .constraints import Constraints
from .menus import Menu
from .result import STATUS_OK, Allocation, infeasible

#: Refuse instances whose DP table would exceed this many cells (N x (G + 1)).
MAX_CELLS = 400_000_000
#: Refuse instances whose DP would take more than this many cell updates (sum over queries of
#: useful options x (G + 1)); about ten seconds on one core.
MAX_WORK = 10_000_000_000


def useful_options(menu: Menu) -> np.ndarray:
    """(N, K) mask of the options an optimum may need: feasible, and worth strictly more than
    every cheaper option of the same query (a dearer option worth no more is never needed:
    swapping it for the cheaper one keeps the total cost within budget and the value)."""
    values = np.where(menu.feasible, menu.values.astype(np.float64), -np.inf)
    best_before = np.maximum.accumulate(values, axis=1)
    keep = menu.feasible.copy()
    keep[:, 1:] &= values[:, 1:] > best_before[:, :-1]
    return keep


def _too_large(n: int, options: int, budget: int, g: int) -> ValueError:
    """The refusal of an instance past :data:`MAX_CELLS` or :data:`MAX_WORK`: it quotes the
    limit (or both) that refused it, and a granularity that fits."""
    granules = budget // g + 1
    cells, work = n * granules, options * granules
    over = []
    if cells > MAX_CELLS:
        over.append(f"{cells:,} table cells (the limit is {MAX_CELLS:,})")
    if work > MAX_WORK:
        over.append(f"{work:,} table updates (the limit is {MAX_WORK:,})")
    msg = (
        f"the exact oracle is too large here: {n} queries x {granules} budget granules of "
        f"{g} tokens need {' and '.join(over)}; "
    )
    # The most granules both limits allow, counting as many options as now (a coarser grid
    # never has more).
    most = min(MAX_CELLS // n, MAX_WORK // max(options, 1)) - 1
    if most < 1:
        return ValueError(msg + "use fewer queries")
    m = max(2, -(-budget // (g * most)))
    while budget // (g * m) > most:
        m += 1
    return ValueError(
        msg + f"use a coarser granularity (e.g. granularity={g * m}) or fewer queries"
    )


def solve_oracle(menu: Menu, cons: Constraints, *, policy: str = "oracle") -> Allocation:
    """Maximise total value subject to total cost <= B, one option per query, exactly."""
    g = cons.granularity
    n, k = menu.n, menu.k
    costs = menu.row_costs()
    if np.any(costs % g):
        raise ValueError(f"menu costs must be multiples of the granularity {g}")
    units = (costs // g).astype(np.int64)
    G = cons.budget // g
    keep = useful_options(menu)
    work = int(keep.sum()) * (G + 1)
    cells = n * (G + 1)
    if cells > MAX_CELLS or work > MAX_WORK:
        raise _too_large(n, int(keep.sum()), cons.budget, g)
    neg = -np.inf
    dp = np.full(G + 1, neg)
    dp[0] = 0.0
    # choice[i, c]: option of query i in the best solution of the first i+1 queries at cost c.
    choice = np.zeros((n, G + 1), dtype=np.int16 if k < 32_000 else np.int32)
    values = menu.values.astype(np.float64)
    for i in range(n):
        new = np.full(G + 1, neg)
        arg = choice[i]
        for opt in np.flatnonzero(keep[i]):
            cj = int(units[i, opt])
            if cj > G:
                continue
            cand = dp[: G + 1 - cj] + values[i, opt]
            seg = new[cj:]
            better = cand > seg
            seg[better] = cand[better]
            arg[cj:][better] = opt
        dp = new
    if not np.isfinite(dp).any():
        return infeasible(n, cons.budget, policy, "no combination of options fits the budget")
    at = int(np.argmax(dp))
    best = float(dp[at])
    picked = np.zeros(n, dtype=np.intp)
    for i in range(n - 1, -1, -1):
        j = int(choice[i, at])
        picked[i] = j
        at -= int(units[i, j])
    budgets = menu.pick(menu.budgets, picked).astype(np.int64)
    samples = menu.pick(menu.samples, picked).astype(np.int64)
    funded = budgets > 0
    return Allocation(
        budgets=budgets,
        price=float("nan"),
        funded=funded,
        utility=best,
        budget=cons.budget,
        policy=policy,
        status=STATUS_OK,
        message=(
            f"exact optimum over {k}-option menus by dynamic programming on {G + 1} "
            f"granules of {g} tokens; {int((~funded).sum())} of {n} queries abandoned"
        ),
        samples=samples if np.any(menu.samples != 1) else None,
        info={"granules": G, "options": k, "choice": picked},
    )
