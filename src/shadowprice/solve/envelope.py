"""The general market solver: one price over any per-query menu of (cost, value) options.

At a price lambda each query picks the option maximising value - lambda cost. Only options on
the upper concave envelope of a query's menu are ever picked, so this is CLEAR's market on the
concave envelope of arbitrary curves (empirical, tabulated, fitted) and of menus that mix
budgets with parallel samples. Costs are either caps (``allotted`` accounting, integers) or
expected spend E[min(L, b)] (``spent`` accounting, floats): one price then clears
sum_i S_i(b_i) <= B. Aggregate demand is non-increasing in lambda; bisection finds
the clearing price.

Two things keep it near a few passes over the N x K menu: the price is first estimated on a
random subsample (a market of a few thousand queries with the same budget per query), and
during bisection rows whose choice is the same at both ends of the price bracket cannot change
inside it, so they leave the active set and later steps only touch undecided queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .constraints import Constraints
from .market import PRICE_RTOL
from .menus import CHUNK, Menu
from .result import STATUS_NOT_SCARCE, STATUS_OK, Allocation, floors_exceed_budget

MAX_ITER = 200
FILL_ROUNDS = 8
#: Rows examined per fill round (the best by next-step ratio).
FILL_CANDIDATES = 4096
#: From this many queries on, the price is first estimated on a subsample of a quarter of
#: the queries (at most SUBSAMPLE) and only bracketed on the full market.
SUBSAMPLE_FROM = 4096
SUBSAMPLE = 8192


def _choose(menu: Menu, rows: NDArray[np.intp] | None, price: float) -> NDArray[np.intp]:
    """Index of each row's surplus-maximising option (lowest cost on ties); chunked so the
    (rows x K) score never materialises at once. ``rows=None`` means all rows."""
    return _choose_each(menu, rows, (price,))[0]


def _choose_each(
    menu: Menu, rows: NDArray[np.intp] | None, prices: Sequence[float]
) -> list[NDArray[np.intp]]:
    """:func:`_choose` at each of ``prices``, in one pass over the rows (each chunk of the
    menu is read once for all of them)."""
    n = menu.n if rows is None else rows.size
    out = [np.empty(n, dtype=np.intp) for _ in prices]
    dtype = menu.values.dtype
    shared: list[NDArray[Any]] | None = None
    if menu.costs.ndim == 1:
        # A priced cost past the table's precision (float32 tables, costs past 3e38 / price)
        # becomes inf: an option no price can pay for, which is what it is.
        with np.errstate(over="ignore"):
            shared = [(p * menu.costs).astype(dtype) for p in prices]
    # One score buffer for every chunk: fresh chunk-sized temporaries cost page faults.
    score = np.empty((min(n, CHUNK), menu.k), dtype=dtype)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        # np.take gathers whole rows several times faster than fancy indexing does.
        values = menu.values[sl] if rows is None else np.take(menu.values, rows[sl], axis=0)
        if shared is None:
            costs = menu.costs[sl] if rows is None else np.take(menu.costs, rows[sl], axis=0)
        s = score[: sl.stop - start]
        for i, price in enumerate(prices):
            if shared is not None:
                np.subtract(values, shared[i], out=s)
            else:
                # Per-row costs, priced for these rows only (bisection steps touch few
                # rows): the product in float64, rounded once to the table's precision, as
                # (price * cost).astype(dtype) rounds it.
                np.multiply(costs, price, out=s, casting="unsafe")
                np.subtract(values, s, out=s)
            out[i][sl] = np.argmax(s, axis=1)
    return out


def _cost(
    menu: Menu, choice: NDArray[np.intp], rows: NDArray[np.intp] | None = None
) -> NDArray[Any]:
    """Cost of each row's chosen option: int tokens (allotted) or float expected spend."""
    if menu.costs.ndim == 1:
        return menu.costs[choice]
    return menu.chosen(menu.costs, choice, rows)


def _demand(menu: Menu, price: float) -> tuple[NDArray[np.intp], NDArray[Any], float]:
    """(choice, its cost, total cost) of every row at ``price``."""
    return _demands(menu, (price,))[0]


def _demands(
    menu: Menu, prices: Sequence[float]
) -> list[tuple[NDArray[np.intp], NDArray[Any], float]]:
    """:func:`_demand` at each of ``prices``, choosing in one pass over the menu."""
    out = []
    for c in _choose_each(menu, None, prices):
        cost = _cost(menu, c)
        out.append((c, cost, cost.sum().item()))
    return out


def price_ceiling(menu: Menu) -> float:
    """A price above every option's value per extra token over the row's cheapest feasible
    option: at it, every query takes its cheapest option (0, or its floor if protected)."""
    best = 0.0
    # Common case: every row may abandon (option 0 = nothing for nothing), so the cheapest
    # option is column 0 and the ratios are plain value per token.
    zero_first = bool(
        np.isfinite(menu.values[:, 0]).all()
        and not np.any(menu.values[:, 0])
        and not np.any(menu.costs[..., 0])
    )
    for start in range(0, menu.n, CHUNK):
        sl = slice(start, min(start + CHUNK, menu.n))
        c = menu.row_costs(sl)
        v = menu.values[sl]
        if zero_first:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = v[:, 1:] / c[:, 1:]
            best = max(best, float(np.nanmax(np.where(np.isfinite(v[:, 1:]), r, 0.0), initial=0.0)))
            continue
        rows = np.arange(v.shape[0])
        first = np.argmax(np.isfinite(v), axis=1)
        dc = c - c[rows, first][:, None]
        dv = v - v[rows, first][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(np.isfinite(v) & (dc > 0), dv / np.where(dc > 0, dc, 1), 0.0)
        best = max(best, float(r.max(initial=0.0)))
    return best * 2.0 + 1e-12


def _estimate_price(menu: Menu, budget: int, rng_seed: int = 0) -> float | None:
    """Clearing price of a random subsample with the same budget per query (None if the
    subsample is not scarce)."""
    rng = np.random.default_rng(rng_seed)
    size = min(SUBSAMPLE, max(menu.n // 4, 1024))
    rows = np.sort(rng.choice(menu.n, size, replace=False))
    sub = Menu(
        costs=menu.costs if menu.costs.ndim == 1 else menu.costs[rows],
        values=menu.values[rows],
        budgets=menu.budgets if menu.budgets.ndim == 1 else menu.budgets[rows],
        samples=menu.samples if menu.samples.ndim == 1 else menu.samples[rows],
        accounting=menu.accounting,
    )
    sub_budget = budget * size / menu.n
    p_lo, p_hi = 0.0, price_ceiling(sub)
    if _demand(sub, 0.0)[2] <= sub_budget:
        return None
    for _ in range(40):
        mid = 0.5 * (p_lo + p_hi)
        if _demand(sub, mid)[2] <= sub_budget:
            p_hi = mid
        else:
            p_lo = mid
    return p_hi


def _check_options(menu: Menu, cons: Constraints) -> None:
    """Every protected query needs a feasible option (unprotected ones can abandon)."""
    check = np.flatnonzero(cons.protected)
    no_option = np.zeros(menu.n, dtype=bool)
    no_option[check] = ~np.isfinite(menu.values[check]).any(axis=1)
    if no_option.any():
        i = int(np.flatnonzero(no_option)[0])
        raise ValueError(
            f"query {i} has no feasible option within its limits; "
            f"check its floor, min_tokens and max_tokens against the grid"
        )


def _bracket(
    menu: Menu, B: float, guess: float | None
) -> tuple[float, Any, float | None, Any, Any]:
    """(p_lo, choice at p_lo, p_hi, choice at p_hi, its cost) around the subsample's price
    ``guess``: tight, widened until it brackets the full market; (0, None, None, None, None)
    without a guess."""
    p_lo, p_hi = 0.0, None
    c_lo = c_hi = cost_hi = None
    if guess is None:
        return p_lo, c_lo, p_hi, c_hi, cost_hi
    hi_try, lo_try = guess * 1.02, guess * 0.98
    # Both first tries in one pass over the menu: the second is needed unless the first is
    # too low, which a subsample's price seldom is.
    first = dict(zip((hi_try, lo_try), _demands(menu, (hi_try, lo_try)), strict=True))
    while p_hi is None:
        c, cost, d = first.pop(hi_try) if hi_try in first else _demand(menu, hi_try)
        if d <= B:
            p_hi, c_hi, cost_hi = hi_try, c, cost
        else:
            p_lo, c_lo = hi_try, c
            hi_try *= 1.5
    while p_lo == 0.0 and lo_try > guess * 1e-6:
        c, cost, d = first.pop(lo_try) if lo_try in first else _demand(menu, lo_try)
        if d > B:
            p_lo, c_lo = lo_try, c
        else:
            p_hi, c_hi, cost_hi = lo_try, c, cost
            lo_try *= 0.5
    return p_lo, c_lo, p_hi, c_hi, cost_hi


def clear_menu(menu: Menu, cons: Constraints, *, policy: str = "market") -> Allocation:
    """Allocate by one clearing price over per-query menus (see module docstring)."""
    n, B = menu.n, cons.budget
    if n == 0:
        return _result(
            menu, np.zeros(0, np.intp), 0.0, cons, policy, STATUS_NOT_SCARCE, 0, {}, "no queries"
        )
    _check_options(menu, cons)
    guess = _estimate_price(menu, B) if n >= SUBSAMPLE_FROM else None
    p_lo, c_lo, p_hi, c_hi, cost_hi = _bracket(menu, B, guess)
    if p_lo == 0.0:
        c_lo, _, d_lo = _demand(menu, 0.0)
        if d_lo <= B:
            return _result(
                menu,
                c_lo,
                0.0,
                cons,
                policy,
                STATUS_NOT_SCARCE,
                0,
                {},
                "budget not scarce: every query got its best option at price 0",
            )
    if p_hi is None:
        p_hi = price_ceiling(menu)
        c_hi, cost_hi, d_hi = _demand(menu, p_hi)
        if d_hi > B:
            return floors_exceed_budget(n, int(d_hi), B, policy)
    p_hi, active, it = _bisect(menu, B, (p_lo, c_lo), (p_hi, c_hi, cost_hi))
    choice, cost, fill = _fill(menu, c_hi, cost_hi, c_lo, active, cons)
    return _result(
        menu,
        choice,
        p_hi,
        cons,
        policy,
        STATUS_OK,
        it,
        {"undecided_at_price": int(active.size), "subsample_price": guess or 0.0, **fill},
        f"market cleared at price {p_hi:.6g} after {it} bisection steps over "
        f"{menu.offered}-option menus",
        cost,
    )


def _bisect(
    menu: Menu,
    B: float,
    lower: tuple[float, NDArray[np.intp]],
    upper: tuple[float, NDArray[np.intp], NDArray[Any]],
) -> tuple[float, NDArray[np.intp], int]:
    """Bisection from the bracket (p_lo, choice there) and (p_hi, choice there, its cost),
    the choices and cost updated in place, over the rows whose choice differs at the two
    ends; returns (p_hi, rows still undecided, steps)."""
    (p_lo, c_lo), (p_hi, c_hi, cost_hi) = lower, upper
    active = np.flatnonzero(c_lo != c_hi)
    fixed = (cost_hi.sum() - cost_hi[active].sum()).item()
    it = 0
    while active.size and p_hi - p_lo > PRICE_RTOL * p_hi and it < MAX_ITER:
        mid = 0.5 * (p_lo + p_hi)
        c_mid = _choose(menu, active, mid)
        cost_mid = _cost(menu, c_mid, active)
        if fixed + cost_mid.sum().item() <= B:
            p_hi = mid
            c_hi[active] = c_mid
            cost_hi[active] = cost_mid
        else:
            p_lo = mid
            c_lo[active] = c_mid
        settled = c_lo[active] == c_hi[active]
        fixed += cost_hi[active[settled]].sum().item()
        active = active[~settled]
        it += 1
    return p_hi, active, it


def _fill(
    menu: Menu,
    choice: NDArray[np.intp],
    cur_cost: NDArray[Any],
    upper: NDArray[np.intp],
    active: NDArray[np.intp],
    cons: Constraints,
) -> tuple[NDArray[np.intp], NDArray[Any], dict[str, int]]:
    """Spend the leftover at the clearing price: first upgrade the undecided queries (their
    next option is worth the price per token), then the best single upgrades that still fit.

    ``cur_cost`` (the cost of ``choice``) is kept up to date in place as rows are upgraded;
    returns the choices, their cost and the fill's counts."""
    choice = choice.copy()
    left = cons.budget - cur_cost.sum().item()
    upgraded = 0
    if active.size and left > 0:
        extra = _cost(menu, upper[active], active) - cur_cost[active]
        gain = _value(menu, upper[active], active) - _value(menu, choice[active], active)
        order = np.argsort(-gain / np.maximum(extra, 1), kind="stable")
        take = np.cumsum(extra[order]) <= left
        sel = active[order[take]]
        choice[sel] = upper[sel]
        cur_cost[sel] = _cost(menu, choice[sel], sel)
        left -= extra[order[take]].sum().item()
        upgraded = int(sel.size)
    rounds = 0
    while left > 0 and rounds < FILL_ROUNDS:
        cand = _fill_candidates(menu, choice, cur_cost, left)
        if cand.size == 0:
            break
        extra = menu.row_costs(cand) - cur_cost[cand, None]
        gain = menu.values[cand] - _value(menu, choice[cand], cand)[:, None]
        ok = (extra > 0) & (extra <= left) & (gain > 0)
        if not ok.any():
            break
        ratio = np.where(ok, gain / np.where(extra > 0, extra, 1), -np.inf)
        best = np.argmax(ratio, axis=1)
        has = np.flatnonzero(ok.any(axis=1))
        ratio_best = ratio[has, best[has]]
        ex = extra[has, best[has]]
        order = np.argsort(-ratio_best, kind="stable")
        picks = order[np.cumsum(ex[order]) <= left]
        if picks.size == 0:
            # Every best-ratio upgrade is too large alone: take the single largest gain that fits.
            i, j = np.unravel_index(np.argmax(np.where(ok, gain, -np.inf)), gain.shape)
            rows, to = cand[i : i + 1], np.asarray([j], dtype=np.intp)
            left -= extra[i, j].item()
        else:
            rows, to = cand[has[picks]], best[has[picks]]
            left -= ex[picks].sum().item()
        choice[rows] = to
        cur_cost[rows] = _cost(menu, to, rows)
        rounds += 1
    return choice, cur_cost, {"upgraded_at_price": upgraded, "fill_rounds": rounds}


def _value(menu: Menu, choice: NDArray[np.intp], rows: NDArray[np.intp]) -> NDArray[np.floating]:
    """Value of the given rows' chosen options (a flat gather)."""
    return menu.chosen(menu.values, choice, rows)


def _fill_candidates(
    menu: Menu, choice: NDArray[np.intp], cur_cost: NDArray[Any], left: int | float
) -> NDArray[np.intp]:
    """Rows of :func:`_fill` worth a close look: those with some upgrade that fits in
    ``left``, and of many, the :data:`FILL_CANDIDATES` best by their next step's ratio."""
    if menu.costs.ndim == 2 and menu.columns is None:
        costs = menu.row_costs()
        fits = (costs > cur_cost[:, None]) & (costs <= cur_cost[:, None] + left)
        cand = np.flatnonzero(fits.any(axis=1))
        if cand.size <= FILL_CANDIDATES:
            return cand
        nxt = np.minimum(choice[cand] + 1, menu.k - 1)
        step = _cost(menu, nxt, cand) - cur_cost[cand]
        key = _step_key(_value(menu, nxt, cand), _value(menu, choice[cand], cand), step)
    else:
        # Costs ascend strictly along a grid, so some upgrade fits exactly when the next
        # option does (a compact menu keeps the next option of any a price picks).
        cand, key = _next_steps(menu, choice, cur_cost, left)
        if cand.size <= FILL_CANDIDATES:
            return cand
    # Few upgrades fit in a leftover; look closely only at the rows whose next step has the
    # best ratio (the ranking's ties go as np.argpartition leaves them).
    top = np.argpartition(key, FILL_CANDIDATES - 1)
    return cand[top[:FILL_CANDIDATES]]


def _step_key(
    v_next: NDArray[np.floating], v_cur: NDArray[np.floating], step: NDArray[Any]
) -> NDArray[np.floating]:
    """Ranking key of next steps: minus their gain per token (NaN ranks last)."""
    with np.errstate(invalid="ignore"):  # inf - inf (unbounded values) ranks last, below
        r = v_next - v_cur
        r = r / np.maximum(step, 1)
    if not np.isfinite(r).all():  # one pass where nan_to_num makes several
        np.nan_to_num(r, copy=False, nan=-np.inf)
    return np.negative(r, out=r)


def _next_steps(
    menu: Menu, choice: NDArray[np.intp], cur_cost: NDArray[Any], left: int | float
) -> tuple[NDArray[np.intp], NDArray[np.floating]]:
    """(rows, ranking key of :func:`_step_key`) of the rows whose next option costs more, by
    at most ``left``; block by block, with the gathers of values for those rows only, each
    block's written straight into the outputs (no N-sized temporaries, no concatenation)."""
    rows = np.empty(menu.n, dtype=np.intp)
    keys = np.empty(menu.n)
    found = 0
    shared = menu.costs.ndim == 1
    flat_costs, flat_values = menu.costs.reshape(-1), menu.values.reshape(-1)
    for start in range(0, menu.n, CHUNK):
        stop = min(start + CHUNK, menu.n)
        nxt = np.minimum(choice[start:stop] + 1, menu.k - 1)
        # Flat positions of each row's next option in the (N, K) tables.
        at = np.arange(start * menu.k, stop * menu.k, menu.k)
        at += nxt
        step = menu.costs[nxt] if shared else flat_costs.take(at)
        step -= cur_cost[start:stop]
        hit = np.flatnonzero((step > 0) & (step <= left))
        # A next option that costs more is not the last one capped: the current one is the
        # position before it.
        at_next = at[hit]
        v_next = flat_values.take(at_next)
        at_next -= 1
        out = slice(found, found + hit.size)
        np.add(hit, start, out=rows[out])
        keys[out] = _step_key(v_next, flat_values.take(at_next), step[hit])
        found += hit.size
    return rows[:found], keys[:found]


def _result(
    menu: Menu,
    choice: NDArray[np.intp],
    price: float,
    cons: Constraints,
    policy: str,
    status: int,
    iterations: int,
    info: dict[str, Any],
    message: str,
    cost: NDArray[Any] | None = None,
) -> Allocation:
    """The :class:`Allocation` of ``choice``; ``cost``, the cost of each row's choice where
    the caller kept it, saves gathering it again (the budgets too, where they are the costs).
    """
    is_cost = menu.budgets is menu.costs
    if cost is None and (is_cost or menu.accounting == "spent"):
        cost = _cost(menu, choice)
    picked = cost if cost is not None and is_cost else menu.pick(menu.budgets, choice)
    budgets = picked.astype(np.int64, copy=False)
    funded = budgets > 0
    utility = float(menu.chosen(menu.values, choice).astype(np.float64).sum())
    multi = bool(np.any(menu.samples != 1))
    # Samples are reported only where some option has several.
    samples = menu.pick(menu.samples, choice).astype(np.int64) if multi else None
    if menu.accounting == "spent":
        spent = _cost(menu, choice) if cost is None else cost
        spend = float(spent.astype(np.float64).sum())
        info = {**info, "accounting": "spent", "expected_spend": spend}
        message += f"; expected spend {spend:.0f} of {cons.budget} tokens"
    return Allocation(
        budgets=budgets,
        price=price,
        funded=funded,
        utility=utility,
        budget=cons.budget,
        policy=policy,
        status=status,
        message=message + f"; {int((~funded).sum())} of {menu.n} queries abandoned",
        samples=samples,
        info={
            "iterations": iterations,
            "options": menu.offered,
            "choice": menu.full_choice(choice),
            **info,
        },
    )


@dataclass(frozen=True)
class Envelope:
    """Upper concave envelopes of N queries' (cost, value) options, as rising segments.

    Row i's segments are ``starts[i]:starts[i + 1]`` of the flat arrays, in order from the
    origin; their slopes strictly fall. Only segments with a positive slope are kept (buying
    past the top of the envelope never pays).

    Attributes
    ----------
    starts : int64 array (N + 1,)
        Offsets of each row's segments.
    vertex : int64 array (M,)
        Option index (column of the menu) each segment ends at.
    dcost, dvalue : float arrays (M,)
        Cost (tokens) and value each segment adds.
    slope : float array (M,)
        dvalue / dcost: value per token, the price up to which the segment is bought.
    """

    starts: NDArray[np.int64]
    vertex: NDArray[np.int64]
    dcost: NDArray[np.float64]
    dvalue: NDArray[np.float64]
    slope: NDArray[np.float64]

    @property
    def n(self) -> int:
        return int(self.starts.size - 1)

    def row(self, i: int) -> slice:
        """Flat-array slice of row ``i``'s segments."""
        return slice(int(self.starts[i]), int(self.starts[i + 1]))


#: Cost steps below this many tokens count as free when taking envelope slopes.
_MIN_DCOST = 1e-9


def _transpose(a: NDArray[Any]) -> NDArray[np.float64]:
    """(N, K) -> contiguous (K, N) float64, copied in row blocks (cache-friendly)."""
    n, k = a.shape
    out = np.empty((k, n))
    for start in range(0, n, 2048):
        out[:, start : start + 2048] = a[start : start + 2048].T
    return out


def concave_envelope(costs: NDArray[Any], values: NDArray[np.floating]) -> Envelope:
    """Upper concave envelope of each row's options, from its first option (the origin).

    Vectorised monotone chain: options are visited in cost order once for all rows, and each
    row pops the vertices the new option makes non-concave, so the work is O(N K) array
    operations whatever the envelope sizes.

    Parameters
    ----------
    costs : array (N, K) or (K,)
        Option costs, non-decreasing along each row (e.g. expected spend S_i(b_k)).
    values : array (N, K)
        Option values; ``-inf`` for infeasible options (skipped). Column 0 is the origin
        every envelope starts from (normally cost 0, value 0: not buying).
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.broadcast_to(np.asarray(costs, dtype=np.float64), v.shape)
    n, k = v.shape
    # Column-major copies: the sweep reads one option of every row at a time.
    cT, vT = _transpose(c), _transpose(v)
    cflat, vflat = cT.ravel(), vT.ravel()
    stack = np.zeros(k * n, dtype=np.int64)  # stack[d * n + i]: row i's d-th vertex
    top = np.ones(n, dtype=np.int64)
    rows = np.arange(n)
    # The top two vertices of each stack as flat arrays (the common case needs no gather);
    # rows with one vertex have the origin as both.
    tx, ty = cT[0].copy(), vT[0].copy()
    sx, sy = tx.copy(), ty.copy()
    with np.errstate(invalid="ignore"):
        for j in range(1, k):
            xj, yj = cT[j], vT[j]
            # An option no better than the top at no lower cost adds nothing (and on exact
            # ties the cheaper budget stays the vertex).
            fin = np.isfinite(yj) & ~((xj <= tx) & (yj <= ty))
            # Pop the top while it is not strictly above the chord from the one below it.
            cross = (tx - sx) * (yj - sy) - (ty - sy) * (xj - sx)
            pop = fin & (top >= 2) & (cross >= 0)
            idx = np.flatnonzero(pop)
            while idx.size:
                if 8 * idx.size > n:
                    # Dense round (convex stretches pop every row): whole-array updates.
                    top -= pop
                    tx, ty = np.where(pop, sx, tx), np.where(pop, sy, ty)
                    below = stack[np.maximum(top - 2, 0) * n + rows] * n + rows
                    sx, sy = np.where(pop, cflat[below], sx), np.where(pop, vflat[below], sy)
                    cross = (tx - sx) * (yj - sy) - (ty - sy) * (xj - sx)
                    pop &= (top >= 2) & (cross >= 0)
                    idx = np.flatnonzero(pop)
                    continue
                top[idx] -= 1
                tx[idx], ty[idx] = sx[idx], sy[idx]
                below = stack[np.maximum(top[idx] - 2, 0) * n + idx] * n + idx
                sx[idx], sy[idx] = cflat[below], vflat[below]
                q = idx[top[idx] >= 2]
                cr = (tx[q] - sx[q]) * (yj[q] - sy[q]) - (ty[q] - sy[q]) * (xj[q] - sx[q])
                pop[:] = False
                idx = q[cr >= 0]
                pop[idx] = True
            if fin.all():
                stack[top * n + rows] = j
                top += 1
                sx, sy, tx, ty = tx, ty, xj.copy(), yj.copy()
                continue
            stack[top * n + rows] = np.where(fin, j, stack[top * n + rows])
            top += fin
            sx, sy = np.where(fin, tx, sx), np.where(fin, ty, sy)
            tx, ty = np.where(fin, xj, tx), np.where(fin, yj, ty)
    # Flatten each row's vertices 1..top-1 (the origin is not a segment end), row-major.
    counts = top - 1
    seg_row = np.repeat(rows, counts)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    depth = np.arange(seg_row.size) - np.repeat(offsets[:-1], counts) + 1
    vertex = stack[depth * n + seg_row]
    prev = stack[(depth - 1) * n + seg_row]
    dc = cflat[vertex * n + seg_row] - cflat[prev * n + seg_row]
    dv = vflat[vertex * n + seg_row] - vflat[prev * n + seg_row]
    # Rising segments form a prefix of each envelope (slopes fall): cut at the first fall.
    falls = np.cumsum(dv <= 0)
    before = np.concatenate([[0], falls])[offsets[:-1]]
    keep = falls - np.repeat(before, counts) == 0
    kept = np.bincount(seg_row[keep], minlength=n)
    dcf, dvf = dc[keep], dv[keep]
    return Envelope(
        starts=np.concatenate([[0], np.cumsum(kept)]).astype(np.int64),
        vertex=vertex[keep],
        dcost=dcf,
        dvalue=dvf,
        slope=dvf / np.maximum(dcf, _MIN_DCOST),
    )
