"""CLEAR over queries split into shards: one price, the same budgets as on one machine.

The queries of a batch too large for one process are split into shards (the blocks of a Ray
dataset, files, ...) that stay where they are. :func:`clear_sharded` runs the sorted path of
:func:`~shadowprice.solve.market.clear` with every pass over the queries done shard by shard
through a :class:`ShardMap`; only aggregates travel:

* the price search is the same bisection; each shard sorts its thresholds once and returns,
  for a batch of candidate prices, its funded count and the exact sum of its funded
  thresholds (a double-double prefix sum, added exactly across shards);
* each shard rounds its own budgets; the few marginal queries and the lowest abandoned
  thresholds come to the driver, which runs the admission and entry rules on them;
* the hand-out of spare granules picks the queries with the largest remainders (or gains):
  the cut value is found by narrowing an interval with per-shard counts, ties go to the
  first rows as in one process (:func:`~shadowprice.solve.market.largest`).

What cannot be split exactly is refused by the caller (per-query limits, floors, per-query
alpha or beta, other curve families and policies: their demand is a float sum over all
queries in one order).

The one difference from one process is in the price search's sums: one process adds the
sorted thresholds in order, the shards add them exactly. The bisection takes the same steps
unless the demand at one of its midpoints is within that rounding (about 1e-16 relative) of
the budget; then the two prices differ by the last few of its steps (1e-12 to 1e-11 relative
in the cases the property tests found), and the budgets those prices give have come out the
same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..curves.base import FloatArray
from ..curves.surge import ShiftedSurge, surge_excess
from .constraints import Constraints, IntArray, make_constraints
from .market import (
    MAX_ENTRANTS,
    MAX_HANDOUT_ROUNDS,
    MAX_ITER,
    PRICE_RTOL,
    SortedSurge,
    admission,
    entrant_order,
    entries,
    largest,
    round_sorted,
)
from .result import STATUS_NOT_SCARCE, STATUS_OK

R = TypeVar("R")

#: Bisection levels evaluated per round trip to the shards (2**LOOKAHEAD - 1 prices).
LOOKAHEAD = 6
#: Order statistics each shard contributes per round when narrowing a selection's cut.
SAMPLES = 64
#: Values inside the cut's interval gathered to the driver once it holds at most this many.
GATHER = 1 << 16


@dataclass
class Shard:
    """One shard's queries and their allocation state (kept where the shard lives).

    Attributes
    ----------
    offset : int
        Global row of the shard's first query.
    surge : SortedSurge
        The shard's thresholds, sorted, with their prefix sums.
    lo_prefix : ndarray of float64, shape (n + 1,)
        Running rounding errors of the prefix sums: prefix + lo_prefix is their exact value
        to about 1e-32 relative.
    cons : Constraints
        The shared limits, for the shard's n queries.
    budgets, funded : ndarray, shape (n,)
        The allocation so far (after :func:`_round`).
    cut_rows, cut_tokens : ndarray
        Rows that rounding cut, and by how much (see ``Rounded``).
    gain_rows, gain : ndarray
        Rows that gain from one more granule, and the gain (hand-out by gain).
    """

    offset: int
    surge: SortedSurge
    lo_prefix: FloatArray
    cons: Constraints
    budgets: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    funded: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    cut_rows: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp))
    cut_tokens: FloatArray = field(default_factory=lambda: np.zeros(0))
    gain_rows: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp))
    gain: FloatArray = field(default_factory=lambda: np.zeros(0))
    sorted_keys: dict[str, FloatArray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.surge.tau_all.size)

    @property
    def tau(self) -> FloatArray:
        return self.surge.tau_all


class ShardMap(Protocol):
    """Runs a function on every shard where it lives: ``fn(shard, *args) -> (shard, result)``;
    the new shard replaces the old one, the results come back in shard order."""

    def map(self, fn: Callable[..., tuple[Shard, R]], *args: Any) -> list[R]: ...


class LocalShards:
    """A :class:`ShardMap` over shards held in this process (tests, and the reference)."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.shards = list(shards)

    def map(self, fn: Callable[..., tuple[Shard, R]], *args: Any) -> list[R]:
        out = []
        for i, shard in enumerate(self.shards):
            self.shards[i], result = fn(shard, *args)
            out.append(result)
        return out


@dataclass(frozen=True)
class Market:
    """What every shard shares: the curves' shape, the limits and the budget.

    Attributes
    ----------
    alpha, beta : float
        The surge's shape, shared by every query.
    budget : int
        Total tokens B.
    granularity : int
        Budgets are multiples of this.
    min_tokens, max_tokens : float or None
        Limits of every funded query (as for :func:`~shadowprice.allocate`).
    """

    alpha: float
    beta: float
    budget: int
    granularity: int = 1
    min_tokens: float | None = None
    max_tokens: float | None = None

    def constraints(self, n: int) -> Constraints:
        return make_constraints(
            n,
            self.budget,
            min_tokens=self.min_tokens,
            max_tokens=self.max_tokens,
            granularity=self.granularity,
        )


def make_shard(tau: FloatArray, offset: int, market: Market) -> Shard:
    """A shard of the queries with thresholds ``tau`` (shape (n,)), the first at ``offset``.

    Sorts the thresholds and takes their prefix sums with the running rounding error
    (TwoSum of each addition), so that any range's sum is known to about 1e-32 relative.
    """
    cons = market.constraints(tau.size)
    one = market.constraints(1)
    curves = ShiftedSurge(tau, market.alpha, market.beta)
    surge = SortedSurge(curves, float(one.lo[0]), float(one.hi[0]))
    s, t = surge.prefix, surge.tau
    a = s[:-1]
    b_virtual = s[1:] - a
    a_virtual = s[1:] - b_virtual
    err = (a - a_virtual) + (t - b_virtual)
    lo_prefix = np.zeros(t.size + 1)
    np.cumsum(err, out=lo_prefix[1:])
    return Shard(offset, surge, lo_prefix, cons)


# -- the price search ---------------------------------------------------------------------


def _range_sum(shard: Shard, a: int, c: int) -> tuple[float, float]:
    """The sum of the shard's sorted thresholds [a, c) as two floats whose exact sum is it
    (to about 1e-32 relative)."""
    hi_c, hi_a = float(shard.surge.prefix[c]), float(shard.surge.prefix[a])
    s = hi_c - hi_a
    b_virtual = s - hi_c
    err = (hi_c - (s - b_virtual)) + (-hi_a - b_virtual)
    return s, err + float(shard.lo_prefix[c] - shard.lo_prefix[a])


def _parts(
    shard: Shard, prices: list[float], xs: list[float]
) -> tuple[Shard, list[tuple[int, int, int, float, float, float]]]:
    """For each price (and its excess x): funded count k, counts a (clipped at lo) and c
    (below the cap), the exact sum of funded thresholds in [a, c), and the largest funded
    threshold (-inf if none)."""
    s = shard.surge
    out = []
    for lam, x in zip(prices, xs, strict=True):
        k = s.n_funded(lam, x)
        if k == 0:
            out.append((0, 0, 0, 0.0, 0.0, -math.inf))
            continue
        tau = s.tau[:k]
        a = int(np.searchsorted(tau, s.lo - x, side="left"))
        c = max(int(np.searchsorted(tau, s.hi - x, side="right")), a)
        out.append((k, a, c, *_range_sum(shard, a, c), float(tau[-1])))
    return shard, out


@dataclass(frozen=True)
class _Demand:
    demand: float
    x: float
    t: float
    k: int


def _demands(
    shards: ShardMap, market: Market, lo: float, hi: float, prices: list[float]
) -> list[_Demand]:
    """Aggregate demand at each price, as ``SortedSurge.demand`` computes it on one machine
    (its tau sum taken exactly across shards)."""
    xs = [float(surge_excess(p, market.alpha, market.beta)) for p in prices]
    per_shard = shards.map(_parts, prices, xs)
    out = []
    for j, x in enumerate(xs):
        rows = [parts[j] for parts in per_shard]
        k = sum(r[0] for r in rows)
        t = max(r[5] for r in rows)
        if k == 0:
            out.append(_Demand(0.0, x, t, 0))
            continue
        a = sum(r[1] for r in rows)
        c = max(sum(r[2] for r in rows), a)
        tau_sum = math.fsum([v for r in rows for v in r[3:5]])
        middle = tau_sum + (c - a) * x
        out.append(_Demand(a * lo + middle + (k - c) * hi, x, t, k))
    return out


def _search(shards: ShardMap, market: Market, lo: float, hi: float) -> tuple[float, float, int]:
    """The bisection of ``SortedSurge.search``, :data:`LOOKAHEAD` levels per round trip."""
    B = market.budget
    if _demands(shards, market, lo, hi, [0.0])[0].demand <= B:
        return 0.0, 0.0, 0
    lo_p, hi_p, it = 0.0, market.alpha, 0
    while hi_p - lo_p > PRICE_RTOL * hi_p and it < MAX_ITER:
        # Every midpoint the next LOOKAHEAD steps could visit, breadth first.
        tree: list[float] = []
        level = [(lo_p, hi_p)]
        for _ in range(LOOKAHEAD):
            nxt = []
            for a, b in level:
                mid = 0.5 * (a + b)
                tree.append(mid)
                nxt += [(a, mid), (mid, b)]
            level = nxt
        demand = dict(zip(tree, _demands(shards, market, lo, hi, tree), strict=True))
        for _ in range(LOOKAHEAD):
            if not (hi_p - lo_p > PRICE_RTOL * hi_p and it < MAX_ITER):
                break
            mid = 0.5 * (lo_p + hi_p)
            if demand[mid].demand <= B:
                hi_p = mid
            else:
                lo_p = mid
            it += 1
    return lo_p, hi_p, it


# -- rounding, admission, entry ---------------------------------------------------------------


def _round(
    shard: Shard, at: tuple[float, float, int], below: tuple[float, float, int] | None
) -> tuple[Shard, tuple[int, NDArray[np.intp], IntArray, FloatArray]]:
    r = round_sorted(shard.surge, shard.cons, at, below)
    shard = replace(
        shard,
        budgets=r.budgets,
        funded=r.funded,
        cut_rows=r.cut_rows,
        cut_tokens=r.cut_tokens,
    )
    return shard, (r.total, r.marginal + shard.offset, r.marginal_want, shard.tau[r.marginal])


def _writable(shard: Shard) -> Shard:
    """The shard with budgets and funded that may be changed in place (a shard read from an
    object store holds read-only arrays)."""
    if shard.budgets.flags.writeable and shard.funded.flags.writeable:
        return shard
    return replace(shard, budgets=shard.budgets.copy(), funded=shard.funded.copy())


def _give(shard: Shard, rows: NDArray[np.intp], tokens: IntArray) -> tuple[Shard, None]:
    """Fund global ``rows`` (those in this shard) with ``tokens``."""
    shard = _writable(shard)
    mine = (rows >= shard.offset) & (rows < shard.offset + shard.n)
    local = rows[mine] - shard.offset
    shard.budgets[local] = tokens[mine]
    shard.funded[local] = True
    return shard, None


def _lowest_abandoned(shard: Shard, m: int) -> tuple[Shard, tuple[FloatArray, NDArray[np.intp]]]:
    """The ``m`` lowest thresholds of the shard's abandoned queries (equal ones: first rows)."""
    rows = np.flatnonzero(~shard.funded)
    keep = np.sort(largest(-shard.tau[rows], m))
    return shard, (shard.tau[rows[keep]], rows[keep] + shard.offset)


# -- handing out spare granules by value ----------------------------------------------------


def _values(shard: Shard, key: str) -> FloatArray:
    return shard.cut_tokens if key == "cut" else shard.gain


def _in_range(shard: Shard, key: str, lo: float, hi: float) -> FloatArray:
    """The shard's values of ``key`` in (lo, hi], ascending."""
    v = shard.sorted_keys.get(key)
    if v is None:
        v = shard.sorted_keys[key] = np.sort(_values(shard, key))
    return v[np.searchsorted(v, lo, side="right") : np.searchsorted(v, hi, side="right")]


def _sample(shard: Shard, key: str, lo: float, hi: float) -> tuple[Shard, tuple[int, FloatArray]]:
    v = _in_range(shard, key, lo, hi)
    if v.size <= SAMPLES:
        return shard, (int(v.size), v)
    return shard, (int(v.size), v[np.linspace(0, v.size - 1, SAMPLES).astype(np.intp)])


def _count_above(shard: Shard, key: str, pivots: FloatArray) -> tuple[Shard, IntArray]:
    v = _in_range(shard, key, -math.inf, math.inf)
    return shard, v.size - np.searchsorted(v, pivots, side="right")


def _count_equal(shard: Shard, key: str, value: float) -> tuple[Shard, tuple[int, int]]:
    return shard, (shard.offset, int(np.count_nonzero(_values(shard, key) == value)))


def _cut_value(shards: ShardMap, key: str, m: int) -> float:
    """The m-th largest value of ``key`` over all shards, exactly: an interval (lo, hi] that
    holds it is narrowed with per-shard samples and counts, then gathered."""
    lo, hi, above_hi = -math.inf, math.inf, 0
    while True:
        sampled = shards.map(_sample, key, lo, hi)
        inside = sum(n for n, _ in sampled)
        # Each shard's sample holds its smallest and largest value inside the interval.
        pivots = np.unique(np.concatenate([v for _, v in sampled]))
        if pivots.size == 1:  # one value left inside: it is the cut
            return float(pivots[0])
        if inside <= GATHER:
            values = np.sort(np.concatenate([v for _, v in shards.map(_gather, key, lo, hi)]))
            # (m - above_hi)-th largest of those inside.
            return float(values[values.size - (m - above_hi)])
        counts = np.sum(shards.map(_count_above, key, pivots), axis=0)
        below = pivots[counts >= m]  # pivots under the cut value
        over = pivots[counts < m]  # pivots at or over it
        if below.size:
            lo = float(below.max())
        if over.size:
            j = int(np.argmin(over))
            hi, above_hi = float(over[j]), int(counts[counts < m][j])


def _gather(shard: Shard, key: str, lo: float, hi: float) -> tuple[Shard, tuple[int, FloatArray]]:
    v = _in_range(shard, key, lo, hi)
    return shard, (int(v.size), v)


def _add_granules(
    shard: Shard, key: str, value: float, quotas: dict[int, int], g: int
) -> tuple[Shard, None]:
    """+g to the rows whose ``key`` exceeds ``value`` and to the first ``quotas[offset]``
    rows equal to it."""
    shard = _writable(shard)
    rows = shard.cut_rows if key == "cut" else shard.gain_rows
    v = _values(shard, key)
    take = v > value
    take[np.flatnonzero(v == value)[: quotas[shard.offset]]] = True
    shard.budgets[rows[take]] += g
    return shard, None


def _select_and_add(shards: ShardMap, key: str, m: int, g: int) -> None:
    """+g to the m rows with the largest ``key`` over all shards, first rows on ties (as
    :func:`~shadowprice.solve.market.largest` in one process)."""
    value = _cut_value(shards, key, m)
    above = int(np.sum(shards.map(_count_above, key, np.asarray([value]))))
    need = m - above
    quotas = {}
    for offset, equal in shards.map(_count_equal, key, value):
        quotas[offset] = min(need, equal)
        need -= quotas[offset]
    shards.map(_add_granules, key, value, quotas, g)


def _all_add(shard: Shard, key: str, g: int) -> tuple[Shard, None]:
    shard = _writable(shard)
    rows = shard.cut_rows if key == "cut" else shard.gain_rows
    shard.budgets[rows] += g
    return shard, None


def _gains(shard: Shard, market: Market) -> tuple[Shard, int]:
    """Each funded row's gain from one more granule (rows with a gain over 1e-15)."""
    g = market.granularity
    b, f = shard.budgets, shard.funded
    room = f & (b + g <= shard.cons.hi)
    bf = b.astype(float)
    curves = ShiftedSurge(shard.tau, market.alpha, market.beta)
    gain = np.where(room, curves.value(bf + g) - curves.value(bf), 0.0)
    rows = np.flatnonzero(gain > 1e-15)
    shard = replace(shard, gain_rows=rows, gain=gain[rows])
    shard.sorted_keys.pop("gain", None)
    return shard, int(rows.size)


def _hand_out_by(shards: ShardMap, key: str, count: int, left: int, g: int) -> int:
    """Give one granule each to min(left // g, count) rows, the largest ``key`` first."""
    m = min(left // g, count)
    if m == count:
        shards.map(_all_add, key, g)
    elif m:
        _select_and_add(shards, key, m, g)
    return left - g * m


# -- the leftover spread as headroom ----------------------------------------------------------


def _open_rows(shard: Shard) -> tuple[Shard, int]:
    room = (shard.cons.hi - shard.budgets) // shard.cons.granularity
    return shard, int(np.count_nonzero(shard.funded & (room > 0)))


def _spread_share(shard: Shard, share: int) -> tuple[Shard, tuple[int, int]]:
    room = (shard.cons.hi - shard.budgets) // shard.cons.granularity
    return shard, (shard.offset, int(np.minimum(room[shard.funded & (room > 0)], share).sum()))


def _spread_apply(shard: Shard, share: int, allowances: dict[int, int]) -> tuple[Shard, int]:
    shard = _writable(shard)
    g = shard.cons.granularity
    room = (shard.cons.hi - shard.budgets) // g
    open_ = np.flatnonzero(shard.funded & (room > 0))
    add = np.minimum(room[open_], share)
    add[np.cumsum(add) > allowances[shard.offset]] = 0
    shard.budgets[open_] += add * g
    return shard, int(add.sum())


def _spread_leftover(shards: ShardMap, leftover: int, g: int) -> int:
    """``spread_leftover`` across shards: water-fill whole granules over the funded rows, up
    to each cap, the first rows getting one more when they do not divide evenly."""
    granules, given = leftover // g, 0
    while granules > 0:
        n_open = sum(shards.map(_open_rows))
        if n_open == 0:
            break
        share = max(granules // n_open, 1)
        allowances, before = {}, 0
        for offset, total in shards.map(_spread_share, share):
            allowances[offset] = max(granules - before, 0)
            before += total
        added = sum(shards.map(_spread_apply, share, allowances))
        granules -= added
        given += added * g
    return given


# -- the whole allocation ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShardedAllocation:
    """The outcome of :func:`clear_sharded`; the budgets stay in the shards.

    Attributes mirror :class:`~shadowprice.solve.Allocation`'s summary: ``price``,
    ``funded`` and ``abandoned`` (counts), ``spent`` and ``leftover`` (tokens), ``utility``,
    ``status``, ``message`` and ``info``.
    """

    n: int
    budget: int
    price: float
    funded: int
    spent: int
    utility: float
    status: int
    message: str
    info: dict[str, Any]

    @property
    def abandoned(self) -> int:
        return self.n - self.funded

    @property
    def leftover(self) -> int:
        return self.budget - self.spent

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary, the keys of :meth:`Allocation.summary`."""
        return {
            "policy": "clear",
            "queries": self.n,
            "budget": self.budget,
            "price": self.price,
            "funded": self.funded,
            "abandoned": self.abandoned,
            "expected_utility": self.utility,
            "spent": self.spent,
            "leftover": self.leftover,
            "status": self.status,
            "message": self.message,
        }


def _totals(shard: Shard, market: Market) -> tuple[Shard, tuple[int, int, float]]:
    b = shard.budgets
    paid = np.flatnonzero(b)
    curves = ShiftedSurge(shard.tau[paid], market.alpha, market.beta)
    value = float(curves.value(b[paid].astype(float)).sum()) if paid.size else 0.0
    return shard, (int(paid.size), int(b.sum()), value)


def clear_sharded(
    shards: ShardMap, market: Market, *, leftover: str = "spread"
) -> ShardedAllocation:
    """:func:`~shadowprice.allocate` with policy 'clear' on surges of a shared shape and
    limits shared by every query, over queries split into ``shards``.

    Parameters
    ----------
    shards : ShardMap
        The shards (from :func:`make_shard`), in row order.
    market : Market
        The curves' shape, the limits and the budget.
    leftover : {'spread', 'keep'}
        As for :func:`~shadowprice.allocate`.

    Returns
    -------
    ShardedAllocation
        The summary; each shard's ``budgets`` and ``funded`` hold its queries' allocation,
        equal to what ``allocate`` gives for all the queries in one process.
    """
    cons = market.constraints(1)
    lo, hi, g = float(cons.lo[0]), float(cons.hi[0]), cons.granularity
    sizes = shards.map(lambda s: (s, s.n))
    n = sum(sizes)
    lo_p, price, it = _search(shards, market, lo, hi)
    ends = _demands(shards, market, lo, hi, [price, lo_p])
    cut = (ends[0].x, ends[0].t, ends[0].k)
    below = (ends[1].x, ends[1].t, ends[1].k) if it else None
    rounded = shards.map(_round, cut, below)
    left = market.budget - sum(r[0] for r in rounded)
    cand = np.concatenate([r[1] for r in rounded])
    admitted = 0
    if cand.size:
        want = np.concatenate([r[2] for r in rounded])
        thr = np.concatenate([r[3] for r in rounded])
        rows, tokens = admission(cand, want, thr, left)
        shards.map(_give, rows, tokens)
        left -= int(tokens.sum())
        admitted = int(rows.size)
    left, entered = _enter(shards, market, cons, price, left)
    n_cut = sum(shards.map(lambda s: (s, s.cut_rows.size)))
    spread = left
    if left >= g:
        left = _hand_out_by(shards, "cut", n_cut, left, g)
    rounds = 0
    while left >= g and rounds < MAX_HANDOUT_ROUNDS:
        count = sum(shards.map(_gains, market))
        if count == 0:
            break
        left = _hand_out_by(shards, "gain", count, left, g)
        rounds += 1
    spread -= left
    status = STATUS_OK if it else STATUS_NOT_SCARCE
    info: dict[str, Any] = {
        "iterations": it,
        "solver": "sorted prefix sums, sharded",
        "shards": len(sizes),
        "admitted": admitted,
        "entered": entered,
        "spread": spread,
        "handout_rounds": rounds,
    }
    given = _spread_leftover(shards, left, g) if leftover == "spread" and left >= g else 0
    totals = shards.map(_totals, market)
    funded = sum(t[0] for t in totals)
    msg = (
        f"market cleared at price {price:.6g} after {it} bisection steps (sorted prefix sums, "
        f"{info['shards']} shards); {n - funded} of {n} queries abandoned"
        if it
        else "budget not scarce: every query got its utility-maximising budget at price 0"
    )
    if given:
        msg += f"; {given} leftover tokens spread over funded queries as headroom"
        info["spread_leftover"] = given
    return ShardedAllocation(
        n=n,
        budget=market.budget,
        price=price,
        funded=funded,
        spent=sum(t[1] for t in totals),
        utility=math.fsum(t[2] for t in totals),
        status=status,
        message=msg,
        info=info,
    )


def _enter(
    shards: ShardMap, market: Market, cons: Constraints, price: float, left: int
) -> tuple[int, int]:
    """The entry pass of ``hand_out``: the lowest abandoned thresholds, gathered."""
    g = cons.granularity
    lo, hi = int(cons.lo[0]), int(cons.hi[0])
    if left < g or lo > min(hi, left):
        return left, 0
    got = shards.map(_lowest_abandoned, MAX_ENTRANTS)
    thr = np.concatenate([t for t, _ in got])
    rows = np.concatenate([r for _, r in got])
    if rows.size == 0:
        return left, 0
    order = np.argsort(rows, kind="stable")  # row order, as one process lists them
    thr, rows = thr[order], rows[order]
    pick = entrant_order(thr)
    thr, rows = thr[pick], rows[pick]
    x = surge_excess(price, np.asarray([market.alpha]), np.asarray([market.beta]))
    curves = ShiftedSurge(thr, market.alpha, market.beta)
    k = rows.size
    gives = entries(curves, thr + x, np.full(k, lo), np.full(k, hi), price, left, g)
    if gives:
        who = np.asarray([rows[j] for j, _ in gives])
        tokens = np.asarray([t for _, t in gives], dtype=np.int64)
        shards.map(_give, who, tokens)
        left -= int(tokens.sum())
    return left, len(gives)
