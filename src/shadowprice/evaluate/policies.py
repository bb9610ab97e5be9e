"""Named evaluation policies: from the fit split (and a total budget) to an allocation.

Every policy sees only a :class:`FitContext`: curves fitted on the *fit* split. The one
exception is ``oracle``, the hindsight ceiling, which solves the exact knapsack on the *score*
split's own empirical curves; it is labelled as such everywhere and is not a policy anyone can
run.

With ``split="queries"`` the scored queries were never seen; without a text-based predictor
(``predictor=``) every scored query gets the pool's curve, so the fitted policies can only
reproduce the pool's behaviour (which is the honest answer without per-query information).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..allocate import allocate
from ..curves import EmpiricalCurve, GammaSCurve, ShiftedSurge, TabulatedCurve, UtilityCurve
from ..fit import GammaFitter, ShrunkCurveFitter, SurgeFitter, default_grid, empirical_curves
from ..solve.result import Allocation
from ..traces import TraceSet

__all__ = [
    "EVAL_POLICIES",
    "ORACLE_LABEL",
    "EvalPolicy",
    "FitContext",
    "Predictor",
    "run_policy",
]

ORACLE_LABEL = "hindsight oracle (ceiling)"

#: Largest oracle DP table (queries x budget granules); the granularity grows to fit it.
ORACLE_CELLS = 30_000_000

#: Maps (fit traces, traces of the queries to score) to probability curves for the latter.
Predictor = Callable[[TraceSet, TraceSet], UtilityCurve]


@dataclass
class FitContext:
    """Curves a policy may use, all fitted on ``fit``; ``score`` is for the oracle only.

    Parameters
    ----------
    fit : TraceSet
        Fit split. With ``same_queries`` it holds the scored queries (other samples).
    score : TraceSet
        Scoring split (its curves are exposed only as :attr:`hindsight`).
    same_queries : bool
        True for split 'half'/'none'; False for 'queries' (scored queries unseen).
    strength : float
        Shrinkage strength passed to the shrunk fitters (1 = empirical Bayes).
    predictor : Predictor, optional
        For unseen queries: per-query probability curves from the fit set (e.g. a text model).
    """

    fit: TraceSet
    score: TraceSet
    same_queries: bool = True
    strength: float = 1.0
    predictor: Predictor | None = None
    _extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        """Number of queries to allocate over (the scored ones)."""
        return self.score.n

    @cached_property
    def grid(self) -> NDArray[np.int64]:
        return default_grid(self.fit, levels=96)

    @cached_property
    def _shrunk_fitter(self) -> ShrunkCurveFitter:
        return ShrunkCurveFitter(grid=self.grid, strength=self.strength).fit(self.fit)

    @cached_property
    def shrunk(self) -> TabulatedCurve | UtilityCurve:
        """Empirical-Bayes curves of the scored queries (probabilities)."""
        if self.same_queries:
            return self._shrunk_fitter.curves_
        if self.predictor is not None:
            return self.predictor(self.fit, self.score)
        return self._shrunk_fitter.pool_curve(self.n)

    @cached_property
    def raw(self) -> UtilityCurve:
        """Each query's raw empirical curve from the fit split (the overfitting baseline)."""
        if self.same_queries:
            return empirical_curves(self.fit)
        emp = empirical_curves(self.fit)
        v = emp.value(np.broadcast_to(self.grid.astype(float), (emp.n, self.grid.size)))
        return TabulatedCurve(self.grid, np.repeat(v.mean(axis=0)[None, :], self.n, axis=0))

    @cached_property
    def surge(self) -> ShiftedSurge:
        """The paper's shifted surge (alpha, beta shared, tau per query)."""
        f = SurgeFitter().fit(self.fit)
        if self.same_queries:
            return f.curves_
        solved = f.tau_[f.p_ > 0]
        tau = float(np.median(solved)) if solved.size else float(f.tau_.max())
        return ShiftedSurge(np.full(self.n, tau), f.alpha_, f.beta_)

    @cached_property
    def gamma(self) -> GammaSCurve:
        """Shrunk shifted-Gamma S-curves."""
        f = GammaFitter(self.strength).fit(self.fit)
        if self.same_queries:
            return f.curves_
        return GammaSCurve(np.full(self.n, float(np.median(f.tau_))), f.beta_, float(np.mean(f.p_)))

    @cached_property
    def hindsight(self) -> EmpiricalCurve:
        """The SCORE split's empirical curves: only the hindsight oracle may use these."""
        return empirical_curves(self.score)

    def spend_model(self, hindsight: bool = False) -> Callable[[NDArray[np.int64]], float]:
        """Predicted total spend sum_i E[min(L_i, b_i)] of caps b (N,), from the fit split
        (per query when the queries are the same, the pool's lengths otherwise)."""
        src = self.score if hindsight else self.fit
        t = src.tokens()
        if not (self.same_queries or hindsight):
            pool = t[~np.isnan(t)]

            def pooled(b: NDArray[np.int64]) -> float:
                srt = np.sort(pool)
                cs = np.concatenate([[0.0], np.cumsum(srt)])
                j = np.searchsorted(srt, b, side="right")
                return float(((cs[j] + b * (srt.size - j)) / srt.size).sum())

            return pooled
        n = src.n_samples()

        def per_query(b: NDArray[np.int64]) -> float:
            m = np.where(np.isnan(t), 0.0, np.minimum(t, np.asarray(b, float)[:, None]))
            return float((m.sum(axis=1) / n).sum())

        return per_query


@dataclass(frozen=True)
class EvalPolicy:
    """A named evaluation policy: ``fn(ctx, total_budget) -> Allocation``."""

    name: str
    description: str
    fn: Callable[[FitContext, int], Allocation]
    hindsight: bool = False  # True: looks at the score split (the ceiling, not a policy)
    ceiling_label: str = ORACLE_LABEL

    @property
    def label(self) -> str:
        return self.ceiling_label if self.hindsight else self.name


def _oracle(ctx: FitContext, budget: int) -> Allocation:
    # Coarsen the granule so the DP table stays bounded; rounding caps up to the granule
    # makes the ceiling very slightly pessimistic, never optimistic.
    g = max(1, int(np.ceil(ctx.n * (budget + 1) / ORACLE_CELLS)))
    return allocate(ctx.hindsight, budget, "oracle", granularity=g)


def _oracle_samples(ctx: FitContext, budget: int, ks: tuple[int, ...] = (1, 2, 4)) -> Allocation:
    """Exact knapsack over (k samples x b tokens) on the score split, valued exactly as replay
    scores it (unbiased pass@k of the scored samples): the ceiling for ``clear-samples``.

    Per query the only caps worth buying are its correct samples' lengths, so the menu is 0
    and, for each k, k x (each correct length rounded up to the granule).
    """
    from ..solve.constraints import make_constraints
    from ..solve.menus import Menu
    from ..solve.oracle import solve_oracle
    from .replay import pass_at_k

    emp = ctx.hindsight
    n, S = emp.n, emp.lengths.shape[1]
    g = max(1, int(np.ceil(n * (budget + 1) / ORACLE_CELLS)))
    cons = make_constraints(n, budget, granularity=g)
    lengths = emp.breakpoints()  # (N, S) ascending, inf padded
    fin = np.isfinite(lengths)
    caps = np.where(fin, np.ceil(np.where(fin, lengths, 0) / g) * g, 0).astype(np.int64)
    hits = np.arange(1, S + 1)[None, :]  # correct samples finished within the j-th length
    ks_arr = np.asarray(ks, dtype=np.int64)
    budgets = np.concatenate([np.zeros((n, 1), np.int64), np.tile(caps, (1, ks_arr.size))], 1)
    samples = np.concatenate(
        [np.ones((n, 1), np.int64), np.repeat(ks_arr, S)[None, :].repeat(n, axis=0)], axis=1
    )
    value = pass_at_k(
        emp.n_samples[:, None, None],
        np.broadcast_to(hits, (n, S))[:, None, :],
        ks_arr[None, :, None],
    ).reshape(n, -1)
    values = np.concatenate([np.zeros((n, 1)), value], axis=1)
    costs = budgets * samples
    ok = np.concatenate([np.ones((n, 1), bool), np.tile(fin, (1, ks_arr.size))], axis=1)
    ok &= costs <= budget
    order = np.argsort(np.where(ok, costs, np.iinfo(np.int64).max), axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    menu = Menu(
        costs=costs[rows, order],
        values=np.where(ok, values, -np.inf)[rows, order],
        budgets=budgets[rows, order],
        samples=samples[rows, order],
    )
    return solve_oracle(menu, cons, policy="oracle-samples")


def _with_grid(policy: str) -> Callable[[FitContext, int], Allocation]:
    def run(ctx: FitContext, budget: int) -> Allocation:
        return allocate(ctx.shrunk, budget, policy, grid=ctx.grid)

    return run


EVAL_POLICIES: dict[str, EvalPolicy] = {
    p.name: p
    for p in [
        EvalPolicy(
            "uniform",
            "the same cap B/N for every query",
            lambda c, b: allocate(c.raw, b, "uniform"),
        ),
        EvalPolicy(
            "clear",
            "shadowprice's recommendation: one market price over empirical-Bayes "
            "shrunk curves fitted on the fit split",
            _with_grid("market"),
        ),
        EvalPolicy(
            "clear-paper",
            "the paper's recipe: shifted surge (alpha, beta shared, tau = "
            "shortest correct length per query), closed-form CLEAR",
            lambda c, b: allocate(c.surge, b, "clear"),
        ),
        EvalPolicy(
            "clear-gamma",
            "CLEAR closed form on shrunk shifted-Gamma S-curves",
            lambda c, b: allocate(c.gamma, b, "clear"),
        ),
        EvalPolicy(
            "market-raw",
            "market price on each query's raw empirical curve from the fit "
            "split (overfits few samples)",
            lambda c, b: allocate(c.raw, b, "market"),
        ),
        EvalPolicy(
            "proportional",
            "caps proportional to the shrunk curves' thresholds",
            lambda c, b: allocate(c.shrunk, b, "proportional"),
        ),
        EvalPolicy(
            "length",
            "each query the length where its shrunk curve reaches 90% of its "
            "ceiling, scaled to fit (TALE-EP idea)",
            lambda c, b: allocate(c.shrunk, b, "length"),
        ),
        EvalPolicy(
            "greedy",
            "myopic greedy on marginal accuracy per token (shrunk curves)",
            _with_grid("greedy"),
        ),
        EvalPolicy(
            "clear-samples",
            "one market price over (k samples x b tokens) menus, k in "
            "{1, 2, 4}, on shrunk curves valued as pass@k",
            lambda c, b: allocate(c.shrunk, b, "market", grid=c.grid, samples=(1, 2, 4)),
        ),
        EvalPolicy(
            "oracle",
            "exact knapsack on the score split's own curves: the hindsight "
            "ceiling, not a runnable policy",
            _oracle,
            hindsight=True,
        ),
        EvalPolicy(
            "oracle-samples",
            "exact knapsack over (k samples x b tokens), k in {1, 2, 4}, "
            "on the score split, valued as replay scores it: the hindsight ceiling of "
            "clear-samples",
            _oracle_samples,
            hindsight=True,
            ceiling_label="hindsight oracle over k x b (ceiling)",
        ),
    ]
}


def run_policy(name: str, ctx: FitContext, budget: int, cost: str = "allotted") -> Allocation:
    """Allocate ``budget`` total tokens with policy ``name``.

    ``cost="spent"``: the budget bounds *expected generated* tokens (sum of E[min(L, b)]),
    not caps. The planner inflates the cap budget B' by bisection until the policy's caps are
    predicted (from the fit split; the oracle from the score split) to spend B. Works for
    every policy; the prediction is unbiased per query but noisy, so realised spend can
    differ by a few percent.
    """
    if name not in EVAL_POLICIES:
        raise ValueError(
            f"unknown evaluation policy {name!r}; choose from {', '.join(EVAL_POLICIES)}"
        )
    if budget < 1:
        raise ValueError(f"budget must be a positive number of tokens, got {budget}")
    pol = EVAL_POLICIES[name]
    if cost == "allotted":
        return pol.fn(ctx, int(budget))
    if cost != "spent":
        raise ValueError(f"cost must be 'allotted' or 'spent', got {cost!r}")
    spend = ctx.spend_model(hindsight=pol.hindsight)

    def predicted(a: Allocation) -> float:
        k = 1 if a.samples is None else a.samples
        return (
            spend(a.budgets)
            if a.samples is None
            else float(sum(spend(np.where(k == j, a.budgets, 0)) * j for j in np.unique(k)))
        )

    best = pol.fn(ctx, int(budget))
    lo, hi = float(budget), float(budget) * 2.0
    # Grow the cap budget until predicted spend exceeds B (or caps stop mattering).
    for _ in range(8):
        a = pol.fn(ctx, int(hi))
        if predicted(a) > budget:
            break
        best, lo, hi = a, hi, hi * 2.0
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        a = pol.fn(ctx, int(mid))
        if predicted(a) <= budget:
            best, lo = a, mid
        else:
            hi = mid
        if hi - lo < 0.002 * budget:
            break
    return best
