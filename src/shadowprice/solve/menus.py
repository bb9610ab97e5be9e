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

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..curves.base import UtilityCurve
from ..curves.empirical import EmpiricalCurve
from ..curves.grid import check_grid
from ..curves.surge import ShiftedSurge
from .constraints import Constraints, IntArray

#: Column indices into a grid (int32 in compact menus).
Cols = NDArray[np.integer[Any]]

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
        Tokens each option consumes: integer caps (budgets x samples; int64, or int32 in a
        compact menu whose grid fits) under ``allotted`` accounting, float64 expected spend
        under ``spent``; a (K,) grid is shared by all rows. Non-decreasing along each row.
    values : float array (N, K)
        Utility of each option; ``-inf`` marks options the query's limits forbid.
    budgets : integer array (N, K) or (K,)
        Per-sample ``max_tokens`` of each option (the dtype of ``costs``).
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
    #: For a menu that keeps only the options a price can pick (:func:`menu_from_curve` with
    #: ``compact=True``): each kept option's column in the full grid, (N, K'), and the full
    #: grid's size. None for a full menu.
    columns: Cols | None = None
    grid_size: int | None = None

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @property
    def offered(self) -> int:
        """Options each query was offered (the full grid's size for a compact menu)."""
        return self.k if self.grid_size is None else self.grid_size

    def full_choice(self, choice: NDArray[np.intp]) -> Cols:
        """Each row's option as a column of the full grid (the same for a full menu)."""
        return choice if self.columns is None else self.chosen(self.columns, choice)

    def chosen(
        self, field: NDArray[Any], choice: NDArray[np.intp], rows: NDArray[np.intp] | None = None
    ) -> NDArray[Any]:
        """``field[rows, choice]`` of an (N, K) field (``rows=None``: every row).

        Flat gathers (a third of the time of fancy indexing), block by block: the index
        temporaries stay in cache instead of costing fresh N-sized buffers.
        """
        flat = field.reshape(-1)
        out = np.empty(choice.size, dtype=field.dtype)
        # One index buffer for every block, and the blocks' row offsets from one ramp.
        idx = np.empty(min(choice.size, CHUNK), dtype=np.intp)
        ramp = np.arange(0, idx.size * self.k, self.k)
        for start in range(0, choice.size, CHUNK):
            stop = min(start + CHUNK, choice.size)
            at = idx[: stop - start]
            if rows is not None:
                np.multiply(rows[start:stop], self.k, out=at)
            else:
                np.add(ramp[: stop - start], start * self.k, out=at)
            at += choice[start:stop]
            np.take(flat, at, out=out[start:stop])
        return out

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
        every = isinstance(rows, slice) and rows == slice(None)
        return self.chosen(field, choice, None if every else np.arange(self.n)[rows])


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
    finite = np.isfinite(peak)
    # The saturation point only where some curve has no peak (an N-sized evaluation).
    useful = (
        peak
        if finite.all()
        else np.where(finite, peak, curves.saturation(0.999, cap=float(cons.budget)))
    )
    top = min(int(cons.hi.max(initial=0)), int(np.ceil(np.max(useful, initial=0.0) / g)) * g)
    top = max(top, g)
    steps = top // g
    if steps + 1 <= levels:
        grid = np.arange(steps + 1, dtype=np.int64) * g
    else:
        grid = np.unique(np.round(np.linspace(0, steps, levels)).astype(np.int64)) * g
    # Each query's smallest funded budget must be on the grid: protected queries need it to
    # be feasible at their floor, and min_tokens would otherwise round up to the next level.
    scalar = cons.scalar_limits
    if scalar is not None:  # one value for everyone: no need to look at N entries
        los = np.asarray([scalar[0]] if scalar[0] <= scalar[1] else [], dtype=np.int64)
    else:
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
    compact: bool = False,
) -> Menu:
    """Evaluate ``curves`` on a budget grid (shared), or on its jump points if empirical.

    Rows are tabulated in chunks so that temporaries stay small; ``dtype=np.float32`` halves
    the menu's memory for very large N. ``accounting="spent"`` costs each option its
    expected spend S_i(b) (an (N, K) float array) instead of its cap.

    ``compact=True`` (for the market solver): where the curves allow it, only the options a
    price can ever pick are tabulated (:func:`compact_surge_menu`); the market then makes
    exactly the choices it makes on the full menu.
    """
    check_accounting(accounting)
    if isinstance(curves, EmpiricalCurve) and grid is None:
        return menu_from_breakpoints(curves, cons, accounting)
    g = budget_grid(curves, cons, levels) if grid is None else check_grid(grid)
    if compact and accounting == "allotted" and _compactable(curves, cons):
        return compact_surge_menu(curves, cons, g, dtype)  # type: ignore[arg-type]
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


def _compactable(curves: UtilityCurve, cons: Constraints) -> bool:
    """Surges of one shape, one set of limits for everyone, nobody protected."""
    return (
        isinstance(curves, ShiftedSurge)
        and curves.shared_shape
        and curves.length_model is None
        and cons.scalar_limits is not None
        and curves.n > 0
    )


#: Error allowance of the float32 value of x e^(-beta x), in units of its rounding: the
#: rounding of x beta (amplified by the exponential, beta x of them), the exponential's own
#: (a few), and two products, taken four times over.
_SLACK = 4.0


def compact_surge_menu(
    curves: ShiftedSurge, cons: Constraints, grid: IntArray, dtype: type = np.float64
) -> Menu:
    """The options of a surge menu on ``grid`` that a market can pick, and their neighbours.

    At a price >= 0 a query never picks an option worth no more than a cheaper one (ties go
    to the cheaper), nor does the market's fill (it ranks upgrades by gain per token). On a
    surge those are the budgets up to its threshold (worth 0, like buying nothing) and those
    well past its peak (the surge falls there). Row i keeps option 0, option 1 (the next step
    up from nothing, which the fill looks at) and the contiguous window of options from its
    threshold to the first one past the peak that is worth at most the best before it by a
    margin over the float rounding of the table; every later option is worth less (the surge
    falls, and the margin covers the rounding of their values). Rows are padded with copies
    of their last option (never picked before it). Values are computed exactly as in the
    full table, so the market's choices, price and budgets are the same.

    Parameters
    ----------
    curves : ShiftedSurge
        N surges sharing alpha and beta.
    cons : Constraints
        Scalar limits, nobody protected.
    grid : int64 array (K,)
        Strictly ascending budgets from 0.
    dtype : numpy float type
        Of the values (as the full table would be).

    Returns
    -------
    Menu
        Per-row costs and budgets (N, K'), ``columns`` mapping each option to the grid.
    """
    win = _SurgeWindows(curves, cons, grid, dtype)
    # Half the memory of int64 where the grid fits (sums of costs accumulate in int64, and
    # prices multiply them in float64 either way): the solver reads rows at random.
    fits = grid.size == 0 or int(grid[-1]) <= np.iinfo(np.int32).max
    cols, values, costs = win.tabulate(grid.astype(np.int32 if fits else np.int64))
    return Menu(
        costs=costs,
        values=values,
        budgets=costs,
        samples=np.ones(cols.shape[1], dtype=np.int64),
        columns=cols,
        grid_size=grid.size,
    )


class _SurgeWindows:
    """Each row's window of a compact surge menu (:func:`compact_surge_menu`): where it
    starts (``first``, the first budget above the threshold) and ends (``end``), in grid
    columns, with the values of the options kept."""

    def __init__(
        self, curves: ShiftedSurge, cons: Constraints, grid: IntArray, dtype: type
    ) -> None:
        self.dtype = dtype
        self.gf: NDArray[Any] = grid.astype(dtype)
        self.feasible = _feasible(grid, cons.subset(slice(0, 1)))[0]
        self.last_feasible = int(np.flatnonzero(self.feasible).max(initial=0))
        self.tau: NDArray[Any] = curves.tau.astype(dtype)
        self.alpha, self.beta = dtype(curves.alpha[0]), dtype(curves.beta[0])
        K = grid.size
        self.first = _at_most(self.gf, self.tau)
        # Largest budget above threshold in each row (in the table's precision), and the
        # rounding allowance of the row's values (see _SLACK).
        x_top = np.subtract(self.gf[-1], self.tau)
        margin = np.multiply(x_top, self.beta, out=x_top)
        np.maximum(margin, 0.0, out=margin)
        margin += 8.0
        margin *= _SLACK
        margin *= float(np.finfo(dtype).eps)
        self.margin = margin
        # The window's first guess ends at the second budget past the peak.
        peak = _at_most(self.gf, self.tau + dtype(1.0) / self.beta)
        self.end = np.minimum(np.maximum(peak + 1, self.first), K - 1)

    def tabulate(self, grid: NDArray[Any]) -> tuple[Cols, NDArray[np.floating], NDArray[Any]]:
        """Every row's kept columns, values and costs (from ``grid``, in its dtype), (N, K'):
        the first guesses, in row chunks written in place (temporaries stay in cache), then
        the windows that do not close there moved on, row by row, until they do."""
        n = self.tau.size
        width = int(np.maximum(self.end - self.first, 0).max(initial=0)) + 3
        cols = np.empty((n, width), dtype=np.int32)
        values: NDArray[np.floating] = np.empty((n, width), dtype=self.dtype)
        costs = np.empty((n, width), dtype=grid.dtype)
        # Where the table's precision holds every budget exactly, the costs are the budgets
        # gathered for the values, cast; else a second gather, from a grid of the costs' own
        # dtype (a take that casts as it writes is several times slower).
        exact = bool(np.array_equal(self.gf.astype(grid.dtype), grid))
        still_open = []
        for start in range(0, n, CHUNK):
            sl = slice(start, min(start + CHUNK, n))
            _layout(self.first[sl], self.end[sl], width, out=cols[sl])
            # One intp copy of the columns for the gathers (each would convert them).
            at = cols[sl].astype(np.intp)
            if not exact:
                np.take(grid, at, out=costs[sl])
            self._values(sl, at, out=values[sl], costs=costs[sl] if exact else None)
            still_open.append(np.flatnonzero(~self._closes(values[sl], sl)) + start)
        moved = rows = np.concatenate(still_open)
        while rows.size:
            self.end[rows] += 1
            sub_cols = _layout(self.first[rows], self.end[rows])
            sub_values = self._values(rows, sub_cols)
            rows = rows[~self._closes(sub_values, rows)]
        if moved.size:
            # Rows whose window grew: their own layout and values; the others padded wider.
            first, end = self.first[moved], self.end[moved]
            width = max(width, int(np.max(end - first, initial=0)) + 3)
            cols, values = _widen(cols, width), _widen(values, width)
            costs = _widen(costs, width)
            cols[moved] = _layout(first, end, width)
            values[moved] = self._values(moved, cols[moved])
            costs[moved] = grid.take(cols[moved])
        return cols, values, costs

    def _values(
        self,
        rows: NDArray[np.intp] | slice,
        cols: Cols,
        out: NDArray[np.floating] | None = None,
        costs: NDArray[Any] | None = None,
    ) -> NDArray[np.floating]:
        """The rows' values at their grid columns (-inf at infeasible budgets), with the
        arithmetic of :meth:`ShiftedSurge.value` step for step, so that they equal the full
        table's bit for bit (the equivalence tests compare both); the budgets, cast, into
        ``costs`` if given (exact only where the table's precision holds them)."""
        x = self.gf.take(cols)
        if costs is not None:
            np.copyto(costs, x, casting="unsafe")
        # Flat, the thresholds repeated per column (see _layout).
        np.subtract(x.reshape(-1), np.repeat(self.tau[rows], x.shape[1]), out=x.reshape(-1))
        np.maximum(x, 0.0, out=x)
        u = np.multiply(x, -self.beta, out=out)
        np.exp(u, out=u)
        u *= x
        u *= self.alpha
        if not self.feasible.all():
            u[~self.feasible[cols]] = -np.inf
        return u

    def _closes(self, values: NDArray[Any], rows: NDArray[np.intp] | slice) -> NDArray[np.bool_]:
        """Whether each row's window may stop at its ``end`` (the last column of its
        layout): the grid's last column; a column past every feasible budget (later ones are
        infeasible too); or a finite value past the peak worth at most the best before it by
        the row's margin (later ones fall from it, and the margin covers their rounding).

        The layout repeats the end up to the last position, and option 0 (worth 0: nobody is
        protected) comes before it, so the best over the whole row decides as the best
        before the end would: where the end is worth more, neither leaves it the margin.
        """
        end = self.end[rows]
        last = values[:, -1]
        # Column by column: a maximum over a short axis costs more than these passes.
        best = values[:, 0].copy()
        for j in range(1, values.shape[1]):
            np.maximum(best, values[:, j], out=best)
        best *= 1 - self.margin[rows]
        falls = (self.gf[end] - self.tau[rows]) * self.beta > 1
        falls &= np.isfinite(last)
        falls &= last <= best
        return (end >= self.gf.size - 1) | (end > self.last_feasible) | falls


def _at_most(gf: NDArray[Any], x: NDArray[Any]) -> Cols:
    """How many budgets of the grid ``gf`` are at most each ``x`` >= 0, as int32: what
    ``np.searchsorted(gf, x, side="right")`` returns.

    The grid holds whole tokens, so a budget is at most x exactly when it is at most
    floor(x). Over a grid of up to a few N tokens a table of those counts per whole token
    answers with one gather, where a binary search per element costs several times more.
    """
    top = gf[-1]
    if not 0 <= top <= max(4 * x.size, 1 << 16):
        return np.searchsorted(gf, x, side="right").astype(np.int32)
    whole = np.arange(int(top) + 1, dtype=np.float64)
    table = np.searchsorted(gf.astype(np.float64), whole, side="right").astype(np.int32)
    # Truncation is floor for x >= 0; past the grid's top every budget counts.
    return table.take(np.minimum(x, top).astype(np.intp))


def _layout(first: Cols, end: Cols, width: int | None = None, out: Cols | None = None) -> Cols:
    """Kept grid columns per row: 0, then 1 where the window starts later, then first..end,
    padded with copies of end (to ``width`` columns; default: the widest row's), written
    into ``out`` (C-contiguous) if given."""
    if width is None:
        width = int(np.maximum(end - first, 0).max(initial=0)) + 3
    # Position j holds first + j - start, capped at end, where the window starts at position
    # start = 2 after the column 1 (or at 1 where it is column 1 itself).
    start = np.where(first > 1, np.int32(2), np.int32(1))
    cols = np.empty((first.size, width), dtype=np.int32) if out is None else out
    # On the flat table with the per-row terms repeated: broadcasting a per-row column over
    # a few columns runs an inner loop per row, several times slower.
    flat = np.reshape(cols, -1, copy=False)
    np.add(np.repeat(np.subtract(first, start), width), _ramp(width, first.size), out=flat)
    np.minimum(flat, np.repeat(end, width), out=flat)
    cols[:, 0] = 0
    # Position 1 is column 1 where the window starts later (there first - 1 >= 1 and the end
    # is past it) and the window's own first column, at most 1, where it does not.
    np.minimum(cols[:, 1], 1, out=cols[:, 1])
    return cols


@functools.lru_cache(maxsize=8)
def _ramp_block(width: int) -> Cols:
    """0, 1, ..., width - 1 repeated CHUNK times, flat, read-only (shared between calls)."""
    ramp = np.tile(np.arange(width, dtype=np.int32), CHUNK)
    ramp.flags.writeable = False
    return ramp


def _ramp(width: int, rows: int) -> Cols:
    """0, 1, ..., width - 1 repeated ``rows`` times, flat (kept per width for a chunk)."""
    if rows <= CHUNK:
        return _ramp_block(width)[: rows * width]
    return np.tile(np.arange(width, dtype=np.int32), rows)


def _widen(a: NDArray[Any], width: int) -> NDArray[Any]:
    """``a`` (N, W) padded to ``width`` columns with copies of its last column."""
    if a.shape[1] >= width:
        return a
    return np.concatenate([a, np.repeat(a[:, -1:], width - a.shape[1], axis=1)], axis=1)
