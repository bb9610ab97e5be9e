"""One entry point for every allocation method (solver)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .curves.base import UtilityCurve
from .curves.grid import check_grid
from .solve import baselines
from .solve.constraints import make_constraints
from .solve.envelope import clear_menu
from .solve.leftover import LEFTOVER_MODES, spread_leftover
from .solve.market import clear
from .solve.menus import DEFAULT_LEVELS, Menu, best_of_k_menu, check_accounting, menu_from_curve
from .solve.oracle import solve_oracle
from .solve.result import Allocation

#: Default grid size of the oracle: every granule up to the useful top, within reason.
ORACLE_LEVELS = 1024

#: Menus with more cells than this are tabulated in float32.
LARGE_MENU = 1_000_000

#: Methods (solvers) accepted by :func:`allocate`, with a one-line description each.
METHODS: dict[str, str] = {
    "clear": "CLEAR market price; closed-form demand where the curve has one, else the envelope",
    "market": "one market price over each query's concave envelope on a budget grid (any curve)",
    "oracle": "exact optimum on the budget grid (multiple-choice knapsack DP); small N only",
    "uniform": "the same max_tokens for every query (B / N)",
    "proportional": "budgets proportional to predicted thresholds",
    "greedy": "myopic greedy on marginal utility per token",
    "length": "each query its predicted needed length, scaled to fit (TALE-EP idea)",
}
#: The same, under the name ``allocate(policy=...)`` used before ``method=``.
POLICIES = METHODS


def _method(method: str | None, policy: str | None) -> str:
    """The solver asked for: ``method``, or its alias ``policy`` (default ``"clear"``)."""
    if method is not None and policy is not None and method != policy:
        raise ValueError(
            f"method={method!r} and policy={policy!r} name two solvers: give one (policy is "
            f"the older name of method)"
        )
    chosen = method if method is not None else policy
    return "clear" if chosen is None else chosen


def _check_options(
    policy: str, samples: Sequence[int] | None, leftover: str, accounting: str, name: str
) -> None:
    """Validate :func:`allocate`'s choices; the message names the argument (``name``: how
    the solver was given, ``method`` or ``policy``)."""
    if policy not in METHODS:
        raise ValueError(f"unknown {name} {policy!r}; choose one of {', '.join(METHODS)}")
    if samples is not None and policy not in ("market", "oracle"):
        raise ValueError("samples= applies to the 'market' and 'oracle' policies only")
    if leftover not in LEFTOVER_MODES:
        raise ValueError(f"leftover must be one of {LEFTOVER_MODES}, got {leftover!r}")
    check_accounting(accounting)
    if accounting == "spent" and policy not in ("clear", "market"):
        raise ValueError(
            f"accounting='spent' applies to the price policies 'clear' and 'market', not "
            f"{policy!r}; run other policies on caps (accounting='allotted')"
        )


def allocate(
    curves: UtilityCurve,
    budget: int,
    method: str | None = None,
    *,
    policy: str | None = None,
    min_tokens: ArrayLike | None = None,
    max_tokens: ArrayLike | None = None,
    granularity: int = 1,
    floor: ArrayLike | None = None,
    grid: ArrayLike | None = None,
    levels: int | None = None,
    samples: Sequence[int] | None = None,
    leftover: str = "spread",
    accounting: str = "allotted",
) -> Allocation:
    """Split ``budget`` tokens across the N queries described by ``curves``.

    Parameters
    ----------
    curves : UtilityCurve
        Utility of each of N queries as a function of its budget (e.g. :class:`ShiftedSurge`).
    budget : int
        Total tokens B > 0 shared by all queries.
    method : str, optional
        The solver: one of :data:`METHODS` (default ``"clear"``), as ``scipy.optimize``'s
        ``method=`` names the algorithm.
    policy : str, optional
        The older name of ``method`` (either may be given, not two different ones).
    min_tokens, max_tokens : int or array (N,), optional
        Limits of a funded query's budget; abandoned queries get 0.
    granularity : int
        Budgets are multiples of this many tokens.
    floor : int or array (N,), optional
        Guaranteed tokens; queries with a positive floor are never abandoned.
    grid : array (K,), optional
        Budget grid (tokens, ascending, starting at 0) for the grid policies ('market',
        'oracle', 'greedy'); default: up to ``levels`` multiples of the granularity.
    levels : int, optional
        Grid size when ``grid`` is not given: 64 for 'market' and 'greedy'; for 'oracle',
        every multiple of the granularity up to the useful top (at most 1024 levels), so that
        it is exact on the granularity's grid.
    samples : sequence of int, optional
        For 'market' and 'oracle': also let the price choose k parallel samples per query
        (k in ``samples``), valued as pass@k with a verifier. ``curves`` must then give
        probabilities. The result's ``samples`` holds each query's k.
    leftover : {'spread', 'keep'}
        For the price policies ('clear', 'market'): tokens that no query gains from under the
        model (e.g. past a shifted surge's peak, or when the budget is not scarce) are spread
        evenly over funded queries as headroom ('spread', default: a larger cap never lowers
        real accuracy), or left unallotted ('keep', the model's exact optimum).
    accounting : {'allotted', 'spent'}
        What ``budget`` bounds: the sum of caps (the paper's), or the tokens expected to be
        generated, sum_i S_i(b_i) with S the curves' expected spend
        (:meth:`~shadowprice.curves.UtilityCurve.spend`). ``'spent'`` is for the price
        policies ('market', and 'clear', which then clears the same market): caps may add
        up to more than the budget; ``info["expected_spend"]`` is what they should spend.

    Returns
    -------
    Allocation
        Integer budgets with sum <= B, the clearing price, funded mask, expected utility,
        status and message.

    Raises
    ------
    TypeError
        When ``curves`` is not a :class:`UtilityCurve`.
    ValueError
        Naming the argument: an unknown policy or leftover mode, ``samples`` with a policy
        other than 'market' or 'oracle', a bad grid (:func:`~shadowprice.curves.grid.check_grid`)
        or bad limits (:func:`~shadowprice.solve.constraints.make_constraints`).
    """
    if not isinstance(curves, UtilityCurve):
        raise TypeError(
            f"curves must be a UtilityCurve (e.g. ShiftedSurge), got {type(curves).__name__}"
        )
    name = "method" if method is not None else "policy"
    policy = _method(method, policy)
    _check_options(policy, samples, leftover, accounting, name)
    cons = make_constraints(
        curves.n,
        budget,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        granularity=granularity,
        floor=floor,
    )
    g = None if grid is None else check_grid(grid, granularity=cons.granularity)

    k = levels if levels is not None else (ORACLE_LEVELS if policy == "oracle" else DEFAULT_LEVELS)

    def menu() -> Menu:
        if samples is not None:
            return best_of_k_menu(
                curves,
                cons,
                samples,
                grid=g,
                levels=min(k, 16) if levels is None else k,
                accounting=accounting,  # type: ignore[arg-type]
            )
        # Single precision halves memory and time on huge menus; choices are unaffected.
        big = curves.n * (k if g is None else g.size) > LARGE_MENU
        return menu_from_curve(
            curves,
            cons,
            grid=g,
            levels=k,
            dtype=np.float32 if big else np.float64,
            accounting=accounting,  # type: ignore[arg-type]
            # Only the options a price can pick: the market's choices are the same.
            compact=policy == "market",
        )

    if policy in ("clear", "market"):
        if policy == "clear" and curves.has_closed_form_demand and accounting == "allotted":
            result = clear(curves, cons, policy="clear")
        else:
            result = clear_menu(menu(), cons, policy=policy)
        if accounting == "spent":  # caps are not what is paid: nothing to spread
            return result
        return spread_leftover(curves, result, cons) if leftover == "spread" else result
    if policy == "oracle":
        return solve_oracle(menu(), cons)
    if policy == "greedy":
        return baselines.greedy(curves, menu(), cons)
    return {
        "uniform": baselines.uniform,
        "proportional": baselines.proportional,
        "length": baselines.length,
    }[policy](curves, cons)
