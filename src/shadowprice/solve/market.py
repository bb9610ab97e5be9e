"""CLEAR: market clearing on the shadow price with closed-form per-query demand.

At a price lambda each query buys the budget that maximises its surplus U(b) - lambda b over
{0} and [lo, hi] (0 only if it is not protected). Aggregate demand D(lambda) is non-increasing,
so the clearing price is found by bisection. Two evaluators of D:

* the sorted fast path (shifted surge with shared alpha, beta and the same limits for every
  query): the funded set is a prefix of the queries sorted by tau and D is a handful of prefix
  sums, so each bisection step costs O(log N) after one O(N log N) sort;
* the active-set path (shifted surge with shared alpha, beta and per-query limits or
  floors): queries whose state (abandoned, clipped low, interior, clipped high) is the same
  at both ends of the price bracket are summed once; each step evaluates only the undecided
  ones;
* the vectorised path (any other closed-form curve, e.g. per-query alpha, beta): O(N) per step.

Demand jumps where a query drops out, so a leftover remains at the clearing price: the
marginal queries (funded just below the price) are admitted while they fit
(:func:`admit_marginal`), and what is still left is handed out (:func:`hand_out`) to funded
queries with the highest marginal gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..curves.base import FloatArray, UtilityCurve
from ..curves.surge import ShiftedSurge, surge_excess
from .constraints import Constraints, IntArray
from .result import STATUS_NOT_SCARCE, STATUS_OK, Allocation, floors_exceed_budget

#: Bisection stops when the price bracket is this small relative to the price.
PRICE_RTOL = 1e-12
#: The O(N)-per-step path stops earlier: leftovers are handed out afterwards anyway.
VECTOR_RTOL = 1e-9
#: Most bisection steps on the price.
MAX_ITER = 200


@dataclass(frozen=True)
class Clearing:
    """Continuous market outcome at the clearing price, before rounding.

    Attributes
    ----------
    price : float
        The clearing price (utility per token); 0 when the budget is not scarce.
    budgets : ndarray of float64, shape (N,)
        Continuous demand at ``price`` (tokens; 0 for abandoned queries).
    funded : ndarray of bool, shape (N,)
        Queries funded at ``price``.
    iterations : int
        Bisection steps taken.
    scarce : bool
        False when every query got its utility-maximising budget at price 0.
    below : (budgets, funded), optional
        The demand just below the clearing price, where it still exceeds the budget: the
        queries funded there but not at the price are the marginal ones, indifferent at the
        price, that the demand jump left out.
    """

    price: float
    budgets: FloatArray
    funded: NDArray[np.bool_]
    iterations: int
    scarce: bool
    below: tuple[FloatArray, NDArray[np.bool_]] | None = None


def constrained_demand(
    curves: UtilityCurve, price: float, cons: Constraints
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Each query's surplus-maximising budget at ``price`` within its limits.

    Candidates are the unconstrained optimum clipped to [lo, hi], the cheapest funded budget
    lo, the cap hi, and 0 (unless protected); for the closed-form families the surplus on
    [lo, hi] is maximised at one of the first three.

    Parameters
    ----------
    curves : UtilityCurve
        N curves with closed-form demand.
    price : float
        Utility per token.
    cons : Constraints
        Per-query limits; protected queries always buy.

    Returns
    -------
    budgets : ndarray of float64, shape (N,)
        Continuous demand in tokens (0 where abandoned).
    funded : ndarray of bool, shape (N,)
    """
    d = curves.demand(price)
    # The stationary point even for queries the curve would abandon: a protected query
    # must buy something, and its best funded budget is there, at lo or at hi.
    raw = d.interior if d.interior is not None else d.budgets
    lo = cons.lo.astype(float)
    hi = cons.hi.astype(float)
    interior = np.clip(np.where(np.isfinite(raw) & (raw > 0), raw, hi), lo, hi)
    cands = np.stack([interior, lo, hi], axis=1)
    surplus = curves.value(cands) - price * cands
    k = np.argmax(surplus, axis=1)
    rows = np.arange(curves.n)
    best = cands[rows, k]
    best_surplus = surplus[rows, k]
    feasible = lo <= hi
    funded = feasible & ((best_surplus > 0) | cons.protected)
    return np.where(funded, best, 0.0), funded


def _price_ceiling(curves: UtilityCurve, cons: Constraints) -> float:
    """A price at which every query takes its cheapest choice (0, or lo if protected)."""
    if isinstance(curves, ShiftedSurge):
        return float(np.max(curves.alpha))
    # Value per extra token over the cheapest funded budget bounds the marginal there.
    lo = cons.lo.astype(float)
    hi = np.maximum(cons.hi.astype(float), lo + 1.0)
    grid = lo[:, None] + np.geomspace(1.0, hi - lo, 48, axis=1)
    gain = (curves.value(grid) - curves.value(lo)[:, None]) / (grid - lo[:, None])
    zero_based = curves.value(grid) / grid
    return float(max(np.max(gain), np.max(zero_based))) * 2.0 + 1e-12


def clear_vectorised(curves: UtilityCurve, cons: Constraints) -> Clearing:
    """Bisection on lambda with O(N) demand evaluations (any closed-form curve).

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves.
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    Clearing
        Continuous demand at the clearing price (and just below it when the budget is
        scarce).
    """
    B = cons.budget
    b0, f0 = constrained_demand(curves, 0.0, cons)
    if b0.sum() <= B:
        return Clearing(0.0, b0, f0, 0, scarce=False)
    lo_p, hi_p = 0.0, _price_ceiling(curves, cons)
    best = constrained_demand(curves, hi_p, cons)
    below = (b0, f0)
    it = 0
    while hi_p - lo_p > VECTOR_RTOL * hi_p and it < MAX_ITER:
        mid = 0.5 * (lo_p + hi_p)
        b, f = constrained_demand(curves, mid, cons)
        if b.sum() <= B:
            hi_p, best = mid, (b, f)
            # Each step costs O(N) here: stop once rounding would lose more than is left.
            if B - b.sum() < cons.granularity:
                break
        else:
            lo_p, below = mid, (b, f)
        it += 1
    return Clearing(hi_p, best[0], best[1], it, scarce=True, below=below)


class SortedSurge:
    """O(log N) aggregate demand for shifted surges sharing alpha, beta and limits.

    Only the sorted thresholds and their prefix sums are kept (no permutation): funding is
    decided by a cut-off on tau, so budgets are recovered from the unsorted taus at the end.
    """

    def __init__(self, curves: ShiftedSurge, lo: float, hi: float) -> None:
        self.alpha = float(curves.alpha[0])
        self.beta = float(curves.beta[0])
        self.lo, self.hi = lo, hi
        self.tau_all = curves.tau
        self.tau = np.sort(curves.tau)
        self.prefix = np.empty(self.tau.size + 1)
        self.prefix[0] = 0.0
        np.cumsum(self.tau, out=self.prefix[1:])

    def _surplus(self, tau: float, lam: float, x: float) -> float:
        b = min(max(tau + x, self.lo), self.hi)
        u = self.alpha * max(b - tau, 0.0) * math.exp(-self.beta * max(b - tau, 0.0))
        return u - lam * b

    def excess(self, lam: float) -> float:
        return float(surge_excess(lam, self.alpha, self.beta))

    def n_funded(self, lam: float, x: float) -> int:
        """Queries funded at ``lam`` (buying ``x`` tokens above threshold): surplus falls with
        tau, so they are a prefix of the sorted taus (equal taus share one fate)."""
        if lam >= self.alpha or self.lo > self.hi:
            return 0
        lo_i, hi_i = 0, self.tau.size
        while lo_i < hi_i:
            mid = (lo_i + hi_i) // 2
            if self._surplus(float(self.tau[mid]), lam, x) > 0:
                lo_i = mid + 1
            else:
                hi_i = mid
        return lo_i

    def demand(self, lam: float) -> float:
        x = self.excess(lam)
        k = self.n_funded(lam, x)
        if k == 0:
            return 0.0
        tau = self.tau[:k]
        # Budgets are clip(tau + x, lo, hi): split the prefix where the clip binds.
        a = int(np.searchsorted(tau, self.lo - x, side="left"))
        c = max(int(np.searchsorted(tau, self.hi - x, side="right")), a)
        middle = self.prefix[c] - self.prefix[a] + (c - a) * x
        return a * self.lo + middle + (k - c) * self.hi

    def cut(self, lam: float) -> tuple[float, float, int]:
        """(x, t, k): at ``lam`` the k queries with tau <= t are funded (t = -inf: none) and
        buy clip(tau + x, lo, hi)."""
        x = self.excess(lam)
        k = self.n_funded(lam, x)
        return x, float(self.tau[k - 1]) if k else -math.inf, k

    def budgets(self, lam: float) -> tuple[FloatArray, NDArray[np.bool_]]:
        x, t, _ = self.cut(lam)
        funded = self.tau_all <= t
        return np.where(funded, np.clip(self.tau_all + x, self.lo, self.hi), 0.0), funded

    def search(self, budget: int) -> tuple[float, float, int]:
        """(p_lo, p_hi, steps) bracketing the clearing price; (0, 0, 0) when not scarce."""
        if self.demand(0.0) <= budget:
            return 0.0, 0.0, 0
        lo_p, hi_p = 0.0, self.alpha
        it = 0
        while hi_p - lo_p > PRICE_RTOL * hi_p and it < MAX_ITER:
            mid = 0.5 * (lo_p + hi_p)
            if self.demand(mid) <= budget:
                hi_p = mid
            else:
                lo_p = mid
            it += 1
        return lo_p, hi_p, it


def clear_sorted(curves: ShiftedSurge, cons: Constraints) -> Clearing:
    """Bisection on lambda where each step costs O(log N) (see module docstring).

    Parameters
    ----------
    curves : ShiftedSurge
        N surges sharing alpha and beta, under the same limits.
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    Clearing
        Continuous demand at the clearing price (and just below it when the budget is
        scarce).
    """
    s = SortedSurge(curves, float(cons.lo[0]), float(cons.hi[0]))
    lo_p, hi_p, it = s.search(cons.budget)
    if it == 0:
        b, f = s.budgets(0.0)
        return Clearing(0.0, b, f, 0, scarce=False)
    b, f = s.budgets(hi_p)
    return Clearing(hi_p, b, f, it, scarce=True, below=s.budgets(lo_p))


#: Queries per block of the fused passes (temporaries stay in cache).
BLOCK = 1 << 15


@dataclass
class Rounded:
    """Budgets at the clearing price rounded onto the granularity, with what the leftover
    passes need, gathered in one pass (:func:`round_sorted`)."""

    budgets: IntArray
    funded: NDArray[np.bool_]
    total: int
    #: Funded queries with room for a granule that rounding cut, and the tokens it cut.
    cut_rows: NDArray[np.intp]
    cut_tokens: FloatArray
    #: Marginal queries (funded just below the price, not at it) and their rounded demand.
    marginal: NDArray[np.intp]
    marginal_want: IntArray


def round_sorted(
    s: SortedSurge,
    cons: Constraints,
    at: tuple[float, float, int],
    below: tuple[float, float, int] | None,
) -> Rounded:
    """Round the demand clip(tau + x, lo, hi) of the queries with tau <= t, block by block.

    ``at`` and ``below`` are :meth:`SortedSurge.cut` at the clearing price and just below
    it. Element for element the same arithmetic as rounding the whole demand vector
    (:meth:`Constraints.round_down`), with the remainders and the marginal queries of
    :func:`admit_marginal` and :func:`hand_out` collected on the way. With the same limits
    for everyone a funded query's rounded budget is at least lo > 0, so the marginal queries
    are those with t < tau <= t_lo: none unless the cut-off moved.
    """
    tau, n, g = s.tau_all, s.tau_all.size, cons.granularity
    x, t, k = at
    x_lo, t_lo, k_lo = at if below is None else below
    budgets = np.empty(n, dtype=np.int64)
    funded = np.empty(n, dtype=bool)
    total = 0
    cut_rows, cut_tokens = [np.zeros(0, np.intp)], [np.zeros(0)]
    marginal, marginal_want = [np.zeros(0, np.intp)], [np.zeros(0, np.int64)]
    for start in range(0, n, BLOCK):
        sl = slice(start, min(start + BLOCK, n))
        sub = cons.subset(sl)
        tb = tau[sl]
        f = tb <= t
        want = np.add(tb, x)
        np.clip(want, s.lo, s.hi, out=want)
        # 0 where not funded (want is finite: a product is exact and cheaper than a mask).
        want *= f
        b = sub.round_down(want)
        f &= b > 0
        budgets[sl], funded[sl] = b, f
        total += int(b.sum())
        # want - b > 0 exactly when want > b (b is exact in float64).
        up = np.flatnonzero(f & (b + g <= sub.hi) & (want > b))
        cut_rows.append(up + start)
        cut_tokens.append(want[up] - b[up])
        if k_lo > k:
            cand = np.flatnonzero((tb <= t_lo) & ~f)
            marginal.append(cand + start)
            marginal_want.append(sub.subset(cand).round_down(np.clip(tb[cand] + x_lo, s.lo, s.hi)))
    return Rounded(
        budgets,
        funded,
        total,
        np.concatenate(cut_rows),
        np.concatenate(cut_tokens),
        np.concatenate(marginal),
        np.concatenate(marginal_want),
    )


def admit_marginal(
    curves: UtilityCurve,
    budgets: IntArray,
    funded: NDArray[np.bool_],
    below: tuple[FloatArray, NDArray[np.bool_]],
    cons: Constraints,
) -> tuple[IntArray, NDArray[np.bool_], int]:
    """Fund the marginal queries (funded just below the price, not at it) while they fit.

    They are indifferent at the clearing price, so funding some of them is as good as any use
    of the leftover; lowest thresholds first. With many identical queries the price alone would
    fund none of them (they all drop out at once); this funds as many as the budget allows.

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves.
    budgets : ndarray of int64, shape (N,)
        Rounded budgets at the clearing price.
    funded : ndarray of bool, shape (N,)
        Queries funded at the clearing price.
    below : (budgets, funded)
        Continuous demand just below the clearing price (:attr:`Clearing.below`).
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    budgets : ndarray of int64, shape (N,)
    funded : ndarray of bool, shape (N,)
    admitted : int
        Marginal queries funded.
    """
    b_below, f_below = below
    cand = np.flatnonzero(f_below & ~funded)
    if cand.size == 0:
        return budgets, funded, 0
    want = cons.subset(cand).round_down(b_below[cand])
    b, f = budgets.copy(), funded.copy()
    left = cons.budget - int(budgets.sum())
    admitted, _ = _admit(b, f, cand, want, curves.threshold()[cand], left)
    return b, f, admitted


def _admit(
    b: IntArray,
    f: NDArray[np.bool_],
    cand: NDArray[np.intp],
    want: IntArray,
    threshold: FloatArray,
    left: int,
) -> tuple[int, int]:
    """Fund candidates ``cand`` with ``want`` tokens each, lowest ``threshold`` first, while
    they fit in ``left``; in place on ``b`` and ``f``. Returns (admitted, tokens)."""
    rows, give = admission(cand, want, threshold, left)
    b[rows] = give
    f[rows] = True
    return int(rows.size), int(give.sum())


def admission(
    cand: NDArray[np.intp], want: IntArray, threshold: FloatArray, left: int
) -> tuple[NDArray[np.intp], IntArray]:
    """Which marginal candidates :func:`admit_marginal` funds: (rows, tokens each).

    Candidates with a positive ``want``, lowest ``threshold`` first (equal thresholds in the
    order given), while their wants fit in ``left`` tokens.
    """
    ok = want > 0
    cand, want, threshold = cand[ok], want[ok], threshold[ok]
    order = np.argsort(threshold, kind="stable")
    take = order[np.cumsum(want[order]) <= left]
    return cand[take], want[take]


#: At most this many abandoned queries, lowest thresholds first, are offered entry.
MAX_ENTRANTS = 64
#: Rounds of handing out by marginal gain (each gives one granule to up to ``left // g``
#: queries) before the rest is left unallotted.
MAX_HANDOUT_ROUNDS = 10_000


def hand_out(
    curves: UtilityCurve,
    budgets: IntArray,
    funded: NDArray[np.bool_],
    price: float,
    cons: Constraints,
    want: FloatArray,
    remainder: FloatArray,
) -> tuple[IntArray, NDArray[np.bool_], dict[str, int]]:
    """Give tokens left over after rounding and after the demand jump to where they pay most.

    Three passes, each only while at least one granule is left:

    1. *Entrants*: abandoned queries closest to funding (lowest thresholds, at most
       :data:`MAX_ENTRANTS`) enter with what they would buy at ``price`` (``want``, within
       their limits) or what is left, when that is worth more than the same tokens at the
       margin of funded queries (about ``price`` per token). At the clearing price itself no
       abandoned query has a budget worth its cost, so this pass admits queries only when
       ``price`` is below the one that abandoned them.
    2. *Remainders*: one granule each to the funded queries that rounding cut most
       (largest ``remainder`` first).
    3. *Marginal gain*: single granules to funded queries in order of marginal gain, never
       past a cap or a peak, for at most :data:`MAX_HANDOUT_ROUNDS` rounds.

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves.
    budgets : ndarray of int64, shape (N,)
        Budgets so far (tokens; multiples of the granularity, 0 = abandoned).
    funded : ndarray of bool, shape (N,)
        Funded queries.
    price : float
        The price (utility per token) an entrant must beat.
    cons : Constraints
        Limits, granularity and the total budget.
    want : ndarray of float, shape (N,)
        What each query would buy at ``price`` if entry were free (tokens); non-finite or
        non-positive entries fall back to the query's cap.
    remainder : ndarray of float, shape (N,)
        Tokens each query lost to rounding (continuous budget minus ``budgets``).

    Returns
    -------
    budgets : ndarray of int64, shape (N,)
        New budgets; the sum never exceeds ``cons.budget``.
    funded : ndarray of bool, shape (N,)
    info : dict
        ``entered`` (queries admitted), ``spread`` (tokens handed to funded queries) and
        ``handout_rounds`` (rounds of the marginal-gain pass).
    """
    b = budgets.copy()
    f = funded.copy()
    left = cons.budget - int(b.sum())
    left, entered = _admit_entrants(
        curves, b, f, price, cons, left, want.__getitem__, curves.threshold().__getitem__
    )
    g = cons.granularity
    up = np.flatnonzero(f & (b + g <= cons.hi) & (remainder > 0)) if left >= g else b[:0]
    left, by_remainder = _spread_by_remainder(b, g, up, remainder[up], left)
    left, by_gain, rounds = _spread_by_gain(curves, b, f, cons, left)
    return b, f, {"entered": entered, "spread": by_remainder + by_gain, "handout_rounds": rounds}


def _admit_entrants(
    curves: UtilityCurve,
    b: IntArray,
    f: NDArray[np.bool_],
    price: float,
    cons: Constraints,
    left: int,
    want_of: Callable[[NDArray[np.intp]], FloatArray],
    threshold_of: Callable[[NDArray[np.intp]], FloatArray],
) -> tuple[int, int]:
    """Pass 1 of :func:`hand_out`, in place on ``b`` and ``f``; returns (left, entered).

    ``want_of(rows)`` and ``threshold_of(rows)`` give those rows' entries of ``want`` and
    of the curves' thresholds (callers that hold them whole pass ``array.__getitem__``).
    """
    g = cons.granularity
    if left < g:
        return left, 0
    scalar = cons.scalar_limits
    if scalar is None:
        cand = np.flatnonzero(~f & (cons.lo <= np.minimum(cons.hi, left)))
    else:
        cand = np.flatnonzero(~f) if scalar[0] <= min(scalar[1], left) else b[:0]
    if cand.size == 0:
        return left, 0
    thr = threshold_of(cand)
    cand = cand[entrant_order(thr)]
    gives = entries(curves[cand], want_of(cand), cons.lo[cand], cons.hi[cand], price, left, g)
    for j, give in gives:
        b[cand[j]], f[cand[j]] = give, True
        left -= give
    return left, len(gives)


def entrant_order(threshold: FloatArray) -> NDArray[np.intp]:
    """Positions of the abandoned queries offered entry, in the order they are offered: the
    :data:`MAX_ENTRANTS` lowest thresholds, lowest first (equal ones in the order given)."""
    keep = np.arange(threshold.size)
    if threshold.size > MAX_ENTRANTS:
        keep = np.sort(largest(-threshold, MAX_ENTRANTS))
    return keep[np.argsort(threshold[keep], kind="stable")]


def entries(
    curves: UtilityCurve,
    want: FloatArray,
    lo: IntArray,
    hi: IntArray,
    price: float,
    left: int,
    g: int,
) -> list[tuple[int, int]]:
    """Which of the offered entrants (``curves``, in the order offered) enter: (position,
    tokens) for each that does, while at least one granule is left.

    Each is offered what it would buy at ``price`` (``want``, within its limits ``lo``,
    ``hi``; its cap where ``want`` is not a positive number) or what is left, and enters when
    that is worth more than ``price`` per token.
    """
    w = np.where(np.isfinite(want) & (want > 0), want, hi)
    probe = np.zeros(curves.n)
    out: list[tuple[int, int]] = []
    for j in range(curves.n):
        lo_j, hi_j = int(lo[j]), int(hi[j])
        give = min(left, hi_j, max(int(w[j] // g) * g, lo_j))
        if give < lo_j:
            continue
        probe[j] = give
        entry_gain = float(curves.value(probe)[j])
        probe[j] = 0.0
        if entry_gain > 0 and entry_gain > price * give:
            out.append((j, give))
            left -= give
        if left < g:
            break
    return out


def largest(values: FloatArray, m: int) -> NDArray[np.intp]:
    """Positions of the ``m`` largest ``values``; among equal values the first positions win.

    The hand-out passes pick queries by value with this rule, so that which of several equal
    queries gets a granule depends on the row order only (not on a selection algorithm's
    internals): the same whatever numpy does, and the same when the rows are split into
    blocks (:mod:`shadowprice.integrations.ray`).

    Parameters
    ----------
    values : ndarray of float, shape (K,)
        No NaN.
    m : int
        How many, 0 <= m <= K.

    Returns
    -------
    ndarray of intp, shape (m,)
        Unordered.
    """
    n = values.size
    if m >= n:
        return np.arange(n)
    if m <= 0:
        return np.zeros(0, dtype=np.intp)
    # The m-th largest value: everything above it, then the first of those equal to it.
    v = values[np.argpartition(values, n - m)[n - m]]
    above = np.flatnonzero(values > v)
    equal = np.flatnonzero(values == v)[: m - above.size]
    return np.concatenate([above, equal])


def _spread_by_remainder(
    b: IntArray, g: int, up: NDArray[np.intp], cut: FloatArray, left: int
) -> tuple[int, int]:
    """Pass 2 of :func:`hand_out`, in place on ``b``; returns (left, tokens spread).

    ``up`` are the funded queries with room for one more granule that rounding cut ``cut``
    tokens from (ascending). Largest cut first: those queries are furthest below their
    optimum, where a granule is worth most (one cheap pass instead of curve evaluations).
    """
    if left < g:
        return left, 0
    m = min(left // g, up.size)
    if not m:
        return left, 0
    if m < up.size:
        up = up[largest(cut, m)]
    b[up] += g
    return left - g * up.size, g * up.size


def _spread_by_gain(
    curves: UtilityCurve, b: IntArray, f: NDArray[np.bool_], cons: Constraints, left: int
) -> tuple[int, int, int]:
    """Pass 3 of :func:`hand_out`, in place on ``b``; returns (left, tokens spread, rounds)."""
    g = cons.granularity
    spread = rounds = 0
    while left >= g and rounds < MAX_HANDOUT_ROUNDS:
        room = f & (b + g <= cons.hi)
        bf = b.astype(float)
        gain = np.where(room, curves.value(bf + g) - curves.value(bf), 0.0)
        idx = np.flatnonzero(gain > 1e-15)
        if idx.size == 0:
            break
        m = min(left // g, idx.size)
        if m < idx.size:
            idx = idx[largest(gain[idx], m)]
        b[idx] += g
        left -= g * idx.size
        spread += g * idx.size
        rounds += 1
    return left, spread, rounds


class _SurgeStates:
    """Per-query state of shifted surges (shared alpha, beta) with per-query limits.

    At a price, query i buys clip(tau_i + x, lo_i, hi_i) if that has a positive surplus; its
    state is (funded, region), region 0 = clipped at lo, 1 = interior, 2 = clipped at hi. As the
    price rises, x falls, so regions only move down and funding is only lost: a query in the
    same state at both ends of a price bracket keeps it throughout, and its demand is a
    constant (clipped) or tau_i + x (interior). Only the others need evaluating.
    """

    def __init__(self, curves: ShiftedSurge, cons: Constraints) -> None:
        self.alpha = float(curves.alpha[0])
        self.beta = float(curves.beta[0])
        self.tau = curves.tau
        self.lo = cons.lo.astype(float)
        self.hi = cons.hi.astype(float)
        self.protected = cons.protected

    def excess(self, lam: float) -> float:
        return float(surge_excess(lam, self.alpha, self.beta))

    def _value(self, b: FloatArray, tau: FloatArray) -> FloatArray:
        u = np.maximum(b - tau, 0.0)
        return self.alpha * u * np.exp(-self.beta * u)

    def state(
        self, lam: float, rows: NDArray[np.intp] | slice = slice(None)
    ) -> tuple[NDArray[np.int8], FloatArray]:
        """State code (-1 abandoned, else region) and budgets of ``rows`` at ``lam``.

        A protected query is never abandoned: when its surge optimum has less surplus than
        its floor ``lo``, it sits at ``lo`` (region 0, the same budget as clipped-low).
        """
        x = self.excess(lam)
        tau, lo, hi = self.tau[rows], self.lo[rows], self.hi[rows]
        b0 = tau + x
        b = np.minimum(np.maximum(b0, lo), hi)
        surplus = self._value(b, tau) - lam * b
        region = np.where(b0 < lo, 0, np.where(b0 > hi, 2, 1)).astype(np.int8)
        protected = self.protected[rows]
        at_floor = protected & (surplus <= self._value(lo, tau) - lam * lo)
        b = np.where(at_floor, lo, b)
        region = np.where(at_floor, 0, region).astype(np.int8)
        funded = protected | ((lo <= hi) & (surplus > 0))
        code = np.where(funded, region, -1).astype(np.int8)
        return code, np.where(funded, b, 0.0)


def clear_surge_limits(curves: ShiftedSurge, cons: Constraints) -> Clearing:
    """Bisection on lambda for shared-shape surges with per-query limits.

    Each step touches only the queries whose state can still change inside the price
    bracket (see :class:`_SurgeStates`).

    Parameters
    ----------
    curves : ShiftedSurge
        N surges sharing alpha and beta.
    cons : Constraints
        Limits, granularity and the total budget.

    Returns
    -------
    Clearing
        Continuous demand at the clearing price (and just below it when the budget is
        scarce).
    """
    B = cons.budget
    st = _SurgeStates(curves, cons)
    code_lo, b_lo = st.state(0.0)
    if b_lo.sum() <= B:
        return Clearing(0.0, b_lo, code_lo >= 0, 0, scarce=False)
    lo_p, hi_p = 0.0, st.alpha
    code_hi, b_hi = st.state(hi_p)
    active = np.flatnonzero(code_lo != code_hi)
    settled = np.ones(curves.n, dtype=bool)
    settled[active] = False
    # Settled queries: constants (clipped) and tau + x (interior) summed once.
    interior = settled & (code_hi == 1)
    const = float(b_hi[settled & (code_hi != 1)].sum())
    tau_sum, n_int = float(st.tau[interior].sum()), int(interior.sum())
    it = 0
    while hi_p - lo_p > PRICE_RTOL * hi_p and it < MAX_ITER:
        mid = 0.5 * (lo_p + hi_p)
        x = st.excess(mid)
        code_mid, b_mid = st.state(mid, active)
        if const + tau_sum + n_int * x + float(b_mid.sum()) <= B:
            hi_p = mid
            code_hi[active] = code_mid
        else:
            lo_p = mid
            code_lo[active] = code_mid
        done = code_lo[active] == code_hi[active]
        if done.any():
            newly = active[done]
            inner = newly[code_hi[newly] == 1]
            const += float(st.state(hi_p, newly[code_hi[newly] != 1])[1].sum())
            tau_sum += float(st.tau[inner].sum())
            n_int += int(inner.size)
            active = active[~done]
        it += 1
    code, b = st.state(hi_p)
    below_code, below_b = st.state(lo_p)
    return Clearing(hi_p, b, code >= 0, it, scarce=True, below=(below_b, below_code >= 0))


def clear(curves: UtilityCurve, cons: Constraints, *, policy: str = "clear") -> Allocation:
    """Allocate by market clearing with closed-form demand.

    The price is found by bisection on one of three evaluators of demand (see the module
    docstring); budgets are rounded onto the granularity, the marginal queries admitted while
    they fit, and the leftover handed out (:func:`hand_out`).

    Parameters
    ----------
    curves : UtilityCurve
        N curves with ``has_closed_form_demand`` (e.g. ShiftedSurge, GammaSCurve).
    cons : Constraints
        Limits, granularity and the total budget.
    policy : str
        Name recorded in the result.

    Returns
    -------
    Allocation
        Integer budgets, the clearing price, funded mask, expected utility and a message
        naming the evaluator used; ``info`` holds iterations, admitted, entered, spread.

    Raises
    ------
    TypeError
        For curves without closed-form demand (use the envelope solver, policy 'market').
    """
    if not curves.has_closed_form_demand:
        raise TypeError(
            f"{type(curves).__name__} has no closed-form demand; "
            f"use policy='market' (concave envelope on a grid)"
        )
    if cons.committed > cons.budget:
        return _infeasible(curves.n, cons, policy)
    surge = isinstance(curves, ShiftedSurge) and curves.shared_shape
    if isinstance(curves, ShiftedSurge) and surge and cons.uniform_limits:
        return _clear_sorted(curves, cons, policy)
    if isinstance(curves, ShiftedSurge) and surge:
        clearing, path = clear_surge_limits(curves, cons), "per-query limits, active set"
    else:
        clearing, path = clear_vectorised(curves, cons), "vectorised demand"
    budgets = cons.round_down(clearing.budgets)
    funded = clearing.funded & (budgets > 0)
    admitted = 0
    if clearing.below is not None:
        budgets, funded, admitted = admit_marginal(curves, budgets, funded, clearing.below, cons)
    budgets, funded, handout = hand_out(
        curves,
        budgets,
        funded,
        clearing.price,
        cons,
        want=_unconstrained_want(curves, clearing.price),
        remainder=clearing.budgets - budgets,
    )
    utility = float(curves.value(budgets.astype(float)).sum())
    done = (budgets, funded, utility, {"admitted": admitted, **handout})
    price = clearing.price if clearing.scarce else None
    return _allocation(curves.n, cons, policy, price, clearing.iterations, path, done)


def _clear_sorted(curves: ShiftedSurge, cons: Constraints, policy: str) -> Allocation:
    """:func:`clear` on the sorted path with its passes fused: the price from prefix sums,
    then one blocked pass that rounds the budgets and collects what admitting the marginal
    queries and handing out the leftover need (same budgets as :func:`clear_sorted`
    followed by :func:`admit_marginal` and :func:`hand_out`)."""
    s = SortedSurge(curves, float(cons.lo[0]), float(cons.hi[0]))
    lo_p, price, it = s.search(cons.budget)
    r = round_sorted(s, cons, s.cut(price), s.cut(lo_p) if it else None)
    b, f = r.budgets, r.funded
    left = cons.budget - r.total
    admitted = 0
    if r.marginal.size:
        admitted, tokens = _admit(b, f, r.marginal, r.marginal_want, curves.tau[r.marginal], left)
        left -= tokens
    x = surge_excess(price, curves.alpha, curves.beta)
    left, entered = _admit_entrants(
        curves, b, f, price, cons, left, lambda rows: curves.tau[rows] + x, curves.tau.__getitem__
    )
    # Rows that rounding cut were collected before the entrants came in: an entrant was cut
    # nothing (it had no demand at the price), so the list is the same.
    left, by_remainder = _spread_by_remainder(b, cons.granularity, r.cut_rows, r.cut_tokens, left)
    left, by_gain, rounds = _spread_by_gain(curves, b, f, cons, left)
    utility = _funded_value(curves, b)
    info = {
        "admitted": admitted,
        "entered": entered,
        "spread": by_remainder + by_gain,
        "handout_rounds": rounds,
    }
    return _allocation(
        curves.n,
        cons,
        policy,
        price if it else None,
        it,
        "sorted prefix sums",
        (b, f, utility, info),
    )


def _funded_value(curves: ShiftedSurge, budgets: IntArray) -> float:
    """Total value of the budgets: abandoned queries are worth exactly 0 under a surge, so
    only the funded ones are evaluated, block by block (small temporaries)."""
    total = 0.0
    for start in range(0, budgets.size, BLOCK):
        b = budgets[start : start + BLOCK]
        paid = np.flatnonzero(b)
        if paid.size:
            total += float(curves[paid + start].value(b[paid].astype(float)).sum())
    return total


def _allocation(
    n: int,
    cons: Constraints,
    policy: str,
    price: float | None,
    iterations: int,
    path: str,
    done: tuple[IntArray, NDArray[np.bool_], float, dict[str, int]],
) -> Allocation:
    """The :class:`Allocation` of :func:`clear` (``price`` None: the budget was not scarce)."""
    budgets, funded, utility, info = done
    msg = (
        f"market cleared at price {price:.6g} after {iterations} bisection "
        f"steps ({path}); {int((~funded).sum())} of {n} queries abandoned"
        if price is not None
        else "budget not scarce: every query got its utility-maximising budget at price 0"
    )
    return Allocation(
        budgets=budgets,
        price=0.0 if price is None else price,
        funded=funded,
        utility=utility,
        budget=cons.budget,
        policy=policy,
        status=STATUS_NOT_SCARCE if price is None else STATUS_OK,
        message=msg,
        info={"iterations": iterations, "solver": path, **info},
    )


def _unconstrained_want(curves: UtilityCurve, price: float) -> FloatArray:
    """What each query would buy at ``price`` if entry were free (its surge optimum)."""
    if isinstance(curves, ShiftedSurge):
        return curves.tau + surge_excess(price, curves.alpha, curves.beta)
    return curves.saturation(0.9)


def _infeasible(n: int, cons: Constraints, policy: str) -> Allocation:
    return floors_exceed_budget(n, cons.committed, cons.budget, policy)


__all__ = [
    "Clearing",
    "admission",
    "admit_marginal",
    "clear",
    "clear_sorted",
    "clear_surge_limits",
    "clear_vectorised",
    "constrained_demand",
    "entrant_order",
    "entries",
    "hand_out",
    "largest",
]
