"""The one registry of policies: what each name means, and how to run it.

A *policy* is a named recipe: which curves (:data:`CURVES`: what they are and how they are
fitted) and which *method* of :func:`shadowprice.allocate` prices them (a method is a solver,
as ``scipy.optimize`` names its algorithms). Evaluated, a policy turns curves fitted on the
fit split, and a total budget, into an :class:`~shadowprice.Allocation`; replay then scores it
on the score split. Each entry of :data:`EVAL_POLICIES` says exactly what it does, whether it
is a runnable policy or a hindsight ceiling, and (:attr:`EvalPolicy.run_method`) the method
``shadowprice run --policy NAME`` applies to a query file's curves (its thresholds, given or
predicted). ``run``, ``evaluate``, the bench and the demo read names, labels, descriptions and
methods from here.

Words, everywhere: the *budget* is the total; a *cap* is one request's ``max_tokens``;
*allotted* tokens are the caps summed; *spent* tokens are the ones generated.

**"clear" names three things; here is which is which.**

* ``allocate(curves, B, method="clear")`` is a *method*: CLEAR's bisection on the price with
  closed-form demand (Lambert W), for curves that have it (``ShiftedSurge``, ``GammaSCurve``),
  the concave envelope otherwise.
* The policy ``clear`` is shadowprice's recommendation: evaluated, the ``market`` method (one
  price over concave envelopes on a grid) on empirical-Bayes *shrunk* curves; run, the
  ``clear`` method on the query file's curves.
* The policy ``clear-paper`` is the paper's recipe: the ``clear`` method on a fitted shifted
  surge. The synthetic demo's surge series is this recipe on the stream's true thresholds,
  and carries this name.

Every policy sees only a :class:`FitContext`: curves fitted on the *fit* split. The
exceptions are the ceilings (``hindsight=True``: ``oracle``, ``oracle-samples``), which solve
the exact knapsack on the *score* split's own curves; they are labelled as such everywhere
and are not policies anyone can run. :data:`REFERENCES` lists the rows that need a
synthetic stream's true curves (``true-clear`` in the bench, ``true-market`` and
``true-oracle`` in the synthetic demo): references no policy can attain, run by their owners
since a :class:`FitContext` has no true curves.

With ``split="queries"`` the scored queries were never seen; without a text-based predictor
(``predictor=``) every scored query gets the pool's curve, so the fitted policies can only
reproduce the pool's behaviour (which is the honest answer without per-query information).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..allocate import allocate
from ..curves import EmpiricalCurve, GammaSCurve, ShiftedSurge, TabulatedCurve, UtilityCurve
from ..live import ClearLive, LivePolicy, OneShot
from ..solve.menus import ACCOUNTINGS
from ..solve.result import Allocation
from ..traces import TraceSet

if TYPE_CHECKING:
    from ..fit import ShrunkCurveFitter

# The fitters (scipy.stats) are imported where they are used: ``run`` reads this registry
# without fitting anything.

__all__ = [
    "CURVES",
    "EVAL_POLICIES",
    "ORACLE_LABEL",
    "REFERENCES",
    "EvalPolicy",
    "FitContext",
    "Predictor",
    "policy_info",
    "run_policy",
]

ORACLE_LABEL = "hindsight oracle (ceiling)"

#: Largest oracle DP table (queries x budget granules); the granularity grows to fit it.
ORACLE_CELLS = 30_000_000
#: The DP's granule may be at most this fraction of the average cap (1/16 of it): coarser
#: granules would make the "ceiling" a coarse approximation, so large sets use the
#: Lagrangian solution on the exact menus instead.
ORACLE_MAX_GRANULES_SHARE = 16

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

    @property
    def n(self) -> int:
        """Number of queries to allocate over (the scored ones)."""
        return self.score.n

    @cached_property
    def grid(self) -> NDArray[np.int64]:
        """Budget grid of the fitted curves and grid solvers: 96 geometric levels (tokens)."""
        from ..fit import default_grid

        return default_grid(self.fit, levels=96)

    @cached_property
    def _shrunk_fitter(self) -> ShrunkCurveFitter:
        from ..fit import ShrunkCurveFitter

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
        from ..fit import empirical_curves

        if self.same_queries:
            return empirical_curves(self.fit)
        emp = empirical_curves(self.fit)
        v = emp.value(np.broadcast_to(self.grid.astype(float), (emp.n, self.grid.size)))
        return TabulatedCurve(self.grid, np.repeat(v.mean(axis=0)[None, :], self.n, axis=0))

    @cached_property
    def surge(self) -> ShiftedSurge:
        """The paper's shifted surge (alpha, beta shared, tau per query)."""
        from ..fit import SurgeFitter

        f = SurgeFitter().fit(self.fit)
        if self.same_queries:
            return f.curves_
        solved = f.tau_[f.p_ > 0]
        tau = float(np.median(solved)) if solved.size else float(f.tau_.max())
        return ShiftedSurge(np.full(self.n, tau), f.alpha_, f.beta_)

    @cached_property
    def gamma(self) -> GammaSCurve:
        """Shrunk shifted-Gamma S-curves."""
        from ..fit import GammaFitter

        f = GammaFitter(self.strength).fit(self.fit)
        if self.same_queries:
            return f.curves_
        return GammaSCurve(np.full(self.n, float(np.median(f.tau_))), f.beta_, float(np.mean(f.p_)))

    @cached_property
    def hindsight(self) -> EmpiricalCurve:
        """The SCORE split's empirical curves: only the hindsight oracle may use these."""
        from ..fit import empirical_curves

        return empirical_curves(self.score)

    def curves(self, kind: str) -> UtilityCurve:
        """The curves named ``kind`` (a key of :data:`CURVES`), fitted on first use.

        Parameters
        ----------
        kind : str
            ``"shrunk"``, ``"raw"``, ``"surge"``, ``"gamma"`` or ``"hindsight"``.

        Returns
        -------
        UtilityCurve
            N curves, one per scored query.

        Raises
        ------
        ValueError
            For ``"true"`` (a context holds no true curves) or an unknown kind.
        """
        if kind not in _CONTEXT_CURVES:
            raise ValueError(
                f"a FitContext has no {kind!r} curves; choose one of {', '.join(_CONTEXT_CURVES)}"
            )
        curves: UtilityCurve = getattr(self, kind)
        return curves


#: Curves a policy can be given: name -> what they are and how they are fitted.
CURVES: dict[str, str] = {
    "shrunk": (
        "empirical-Bayes shrunk curves (ShrunkCurveFitter on the fit split, tabulated on a "
        "96-level geometric grid); unseen queries: the text predictor's curves, else the "
        "pool's average curve"
    ),
    "raw": (
        "each query's raw empirical curve from the fit split (share of its samples correct "
        "within b tokens); unseen queries: the pool's average"
    ),
    "surge": (
        "the paper's shifted surge (SurgeFitter: tau = shortest correct length per query, "
        "alpha and beta shared, never-solved queries out of reach); unseen queries: the "
        "median tau"
    ),
    "gamma": (
        "shifted Gamma(2) S-curves with tau and p shrunk toward the pool (GammaFitter); "
        "unseen queries: the median tau and mean p"
    ),
    "hindsight": "the score split's own empirical curves: the very samples being scored",
    "true": "a synthetic stream's known true curves (knowledge no policy has)",
}

#: Curves a FitContext provides (all but the true curves).
_CONTEXT_CURVES = ("shrunk", "raw", "surge", "gamma", "hindsight")


@dataclass(frozen=True)
class EvalPolicy:
    """One named evaluation policy, described as data.

    Attributes
    ----------
    name : str
        What scripts pass (``--policies``, ``run_bench(policies=...)``), e.g. ``"clear"``.
    description : str
        One line: what the policy does.
    curves : str
        Which curves it is given: a key of :data:`CURVES`.
    method : str
        The :func:`shadowprice.allocate` method that prices those curves (``"market"``,
        ``"clear"``, ``"oracle"``, ...; ``"live"`` for the live planner).
    hindsight : bool
        True for a ceiling that looks at the score split: not a runnable policy.
    label : str
        Row label in tables and ``results.csv``: the name for a policy; a ceiling says so.
    legend : str
        Longer label for figure legends and the demo's table.
    grid : bool
        Pass the context's fit grid to the solver (the grid solvers: market, greedy).
    samples : tuple of int, optional
        Let the price choose k parallel samples per query (pass@k menus).
    run : callable, optional
        ``run(ctx, total_budget) -> Allocation`` where the solver call is not the generic
        ``allocate(ctx.curves(curves), budget, solver, ...)``.
    accounting : tuple of str
        The accountings it can be scored under: ``"allotted"`` (its caps replayed, the
        paper's) and/or ``"spent"`` (run through the serving-engine simulator under a token
        ledger, :mod:`~shadowprice.evaluate.simulate`).
    live : callable, optional
        ``live(ctx, total_budget) -> LivePolicy``: a policy that decides as requests end
        (``clear-live``); without it, the allocation runs as a one-shot plan
        (:class:`~shadowprice.live.OneShot`) under spent accounting.
    run_method : str, optional
        What ``shadowprice run --policy NAME`` does with a query file's curves: the
        :func:`shadowprice.allocate` method, or ``"live"`` (the live planner); None: ``run``
        cannot run it (it needs fitted or hindsight curves).
    """

    name: str
    description: str
    curves: str
    method: str
    hindsight: bool = False
    label: str = ""
    legend: str = ""
    grid: bool = False
    samples: tuple[int, ...] | None = None
    run: Callable[[FitContext, int], Allocation] | None = field(default=None, repr=False)
    accounting: tuple[str, ...] = ACCOUNTINGS
    live: Callable[[FitContext, int], LivePolicy] | None = field(default=None, repr=False)
    run_method: str | None = None

    def __post_init__(self) -> None:
        if self.curves not in CURVES:
            raise ValueError(f"curves must be one of {', '.join(CURVES)}, got {self.curves!r}")
        if not self.accounting or set(self.accounting) - set(ACCOUNTINGS):
            raise ValueError(f"accounting must be a subset of {ACCOUNTINGS}, got {self.accounting}")
        if not self.label:
            object.__setattr__(self, "label", ORACLE_LABEL if self.hindsight else self.name)
        if not self.legend:
            object.__setattr__(self, "legend", self.label)

    @property
    def solver(self) -> str:
        """The older name of :attr:`method`."""
        return self.method

    @property
    def runnable(self) -> bool:
        """True for a policy anyone can run: it sees only the fit split."""
        return not self.hindsight and self.curves != "true"

    def allocation(self, ctx: FitContext, budget: int) -> Allocation:
        """Allocate ``budget`` total tokens over the queries of ``ctx``.

        Parameters
        ----------
        ctx : FitContext
            The fitted curves (and, for a ceiling, the score split).
        budget : int
            Total tokens for the scored queries.

        Returns
        -------
        Allocation

        See Also
        --------
        run_policy : The same by name, with validation and spend-bounded budgets.
        """
        if self.run is not None:
            return self.run(ctx, budget)
        options: dict[str, Any] = {}
        if self.grid:
            options["grid"] = ctx.grid
        if self.samples is not None:
            options["samples"] = self.samples
        return allocate(ctx.curves(self.curves), budget, self.method, **options)

    def executor(self, ctx: FitContext, budget: int) -> Callable[[], LivePolicy]:
        """What runs under spent accounting: a factory of fresh live policies (one per
        simulated world) for ``budget`` total tokens.

        A policy with :attr:`live` decides as requests end; any other runs its allocation
        (computed once) as a one-shot plan: caps reserved in query order as the ledger
        allows, what finished requests leave usable by later queries of the plan, nothing
        re-planned.
        """
        if self.hindsight or self.samples is not None:
            raise ValueError(f"{self.name!r} has no executable plan under spent accounting")
        if self.live is not None:
            live = self.live
            return lambda: live(ctx, budget)
        caps = self.allocation(ctx, budget).budgets
        return lambda: OneShot(caps)


def _clear_live(ctx: FitContext, budget: int) -> LivePolicy:
    return ClearLive(ctx.shrunk, budget)


def _clear_spent(ctx: FitContext, budget: int) -> Allocation:
    return allocate(ctx.shrunk, budget, "market", grid=ctx.grid, accounting="spent")


def _oracle(ctx: FitContext, budget: int) -> Allocation:
    # Coarsen the granule so the DP table stays bounded; rounding caps up to the granule
    # makes the ceiling very slightly pessimistic, never optimistic.
    g = max(1, int(np.ceil(ctx.n * (budget + 1) / ORACLE_CELLS)))
    if g <= max(1, budget // (ctx.n * ORACLE_MAX_GRANULES_SHARE)):
        return allocate(ctx.hindsight, budget, "oracle", granularity=g)
    # Too many queries for the DP at a granule that keeps caps meaningful: one price over the
    # exact menus of the scoring samples instead. A feasible allocation, so still a ceiling
    # no policy can beat by more than the Lagrangian gap, which is at most one query's value
    # (1/N of the accuracy).
    alloc = allocate(ctx.hindsight, budget, "market")
    return dataclasses.replace(
        alloc,
        policy="oracle",
        message=f"{alloc.message}; the exact DP would need {g}-token granules here, so one "
        f"price over the scoring samples' exact menus (within 1/{ctx.n} of the optimum)",
    )


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


EVAL_POLICIES: dict[str, EvalPolicy] = {
    p.name: p
    for p in [
        EvalPolicy(
            "uniform",
            "the same cap B/N for every query",
            curves="raw",
            method="uniform",
            run_method="uniform",
        ),
        EvalPolicy(
            "clear",
            "shadowprice's recommendation: one market price over empirical-Bayes "
            "shrunk curves fitted on the fit split",
            curves="shrunk",
            method="market",
            grid=True,
            legend="CLEAR (market, shrunk curves)",
            run_method="clear",
        ),
        EvalPolicy(
            "clear-live",
            "CLEAR run live under a token ledger: one price over expected spend on the "
            "shrunk curves, re-cleared as requests end (unused reservations return), capped "
            "requests continued when the price says so, lengths recalibrated online",
            curves="shrunk",
            method="live",
            accounting=("spent",),
            live=_clear_live,
            legend="CLEAR live (spend-aware, re-cleared, extended)",
            run_method="live",
        ),
        EvalPolicy(
            "clear-spent",
            "one market price over the shrunk curves' expected spend (sum of E[min(L, b)] "
            "<= B), run as a one-shot plan: spend-aware, but not re-cleared",
            curves="shrunk",
            method="market",
            grid=True,
            accounting=("spent",),
            run=_clear_spent,
            legend="CLEAR on expected spend (one-shot)",
        ),
        EvalPolicy(
            "clear-paper",
            "the paper's recipe: shifted surge (alpha, beta shared, tau = "
            "shortest correct length per query), closed-form CLEAR",
            curves="surge",
            method="clear",
            legend="CLEAR, paper recipe (surge)",
        ),
        EvalPolicy(
            "clear-gamma",
            "CLEAR closed form on shrunk shifted-Gamma S-curves",
            curves="gamma",
            method="clear",
        ),
        EvalPolicy(
            "market-raw",
            "market price on each query's raw empirical curve from the fit "
            "split (overfits few samples)",
            curves="raw",
            method="market",
        ),
        EvalPolicy(
            "proportional",
            "caps proportional to the shrunk curves' thresholds",
            curves="shrunk",
            method="proportional",
            run_method="proportional",
        ),
        EvalPolicy(
            "length",
            "each query the length where its shrunk curve reaches 90% of its "
            "ceiling, scaled to fit (TALE-EP idea)",
            curves="shrunk",
            method="length",
            run_method="length",
        ),
        EvalPolicy(
            "greedy",
            "myopic greedy on marginal accuracy per token (shrunk curves)",
            curves="shrunk",
            method="greedy",
            grid=True,
            run_method="greedy",
        ),
        EvalPolicy(
            "market",
            "one market price over the concave envelopes of the curves on a budget grid: "
            "evaluated on the shrunk curves (the same budgets as clear), run on the query "
            "file's curves (where clear uses their closed form)",
            curves="shrunk",
            method="market",
            grid=True,
            run_method="market",
        ),
        EvalPolicy(
            "clear-samples",
            "one market price over (k samples x b tokens) menus, k in "
            "{1, 2, 4}, on shrunk curves valued as pass@k",
            curves="shrunk",
            method="market",
            grid=True,
            samples=(1, 2, 4),
            # The serving-engine simulator runs one sample per query.
            accounting=("allotted",),
        ),
        EvalPolicy(
            "oracle",
            "the hindsight ceiling, not a runnable policy: the exact knapsack on the "
            "score split's own curves (allotted accounting); the correct scoring samples, "
            "shortest first, until the budget is spent (spent accounting)",
            curves="hindsight",
            method="oracle",
            hindsight=True,
            run=_oracle,
        ),
        EvalPolicy(
            "oracle-samples",
            "exact knapsack over (k samples x b tokens), k in {1, 2, 4}, "
            "on the score split, valued as replay scores it: the hindsight ceiling of "
            "clear-samples",
            curves="hindsight",
            method="oracle",
            hindsight=True,
            label="hindsight oracle over k x b (ceiling)",
            samples=(1, 2, 4),
            run=_oracle_samples,
            accounting=("allotted",),
        ),
    ]
}

#: Rows that need a synthetic stream's true curves: references, not policies (a FitContext
#: has no true curves, so the bench and the demo run these themselves).
REFERENCES: dict[str, EvalPolicy] = {
    p.name: p
    for p in [
        EvalPolicy(
            "true-clear",
            "allocate(true curves, 'clear') on the synthetic streams' known true curves, "
            "replayed on the same held-out halves; the attainable reference (needs knowledge "
            "no policy has)",
            curves="true",
            method="clear",
            label="CLEAR on the true curves (reference, not runnable)",
        ),
        EvalPolicy(
            "true-market",
            "one market price over the concave envelopes of a synthetic stream's true "
            "curves (budgets multiples of 64 tokens, up to 8192)",
            curves="true",
            method="market",
            label="market (true curves)",
        ),
        EvalPolicy(
            "true-oracle",
            "exact knapsack on a synthetic stream's true curves over budgets that are "
            "multiples of 64 tokens (up to 8192): exact on that grid only",
            curves="true",
            method="oracle",
            label="oracle (true curves, 64-token grid)",
        ),
    ]
}


def policy_info(name: str) -> EvalPolicy:
    """The registry entry of ``name``: an evaluation policy or a true-curve reference.

    Parameters
    ----------
    name : str
        A key of :data:`EVAL_POLICIES` or :data:`REFERENCES`.

    Returns
    -------
    EvalPolicy

    Raises
    ------
    KeyError
        Naming the known entries.
    """
    if name in EVAL_POLICIES:
        return EVAL_POLICIES[name]
    if name in REFERENCES:
        return REFERENCES[name]
    raise KeyError(
        f"no policy {name!r}; evaluation policies: {', '.join(EVAL_POLICIES)}; "
        f"true-curve references: {', '.join(REFERENCES)}"
    )


def run_policy(name: str, ctx: FitContext, budget: int) -> Allocation:
    """Allocate ``budget`` total tokens with evaluation policy ``name`` (its plan: the caps
    replayed under allotted accounting, run as a one-shot plan under spent accounting).

    Parameters
    ----------
    name : str
        A key of :data:`EVAL_POLICIES` that has a plan (not ``clear-live``, which decides as
        requests end: see :meth:`EvalPolicy.executor`).
    ctx : FitContext
        Curves fitted on the fit split (and the score split, for the ceilings).
    budget : int
        Total tokens for the scored queries (>= 1).

    Returns
    -------
    Allocation

    Raises
    ------
    ValueError
        For an unknown name, a true-curve reference, a live policy or a budget below 1.
    """
    if name in REFERENCES:
        raise ValueError(
            f"{name!r} needs a synthetic stream's true curves, which a FitContext does not hold; "
            f"choose an evaluation policy: {', '.join(EVAL_POLICIES)}"
        )
    if name not in EVAL_POLICIES:
        raise ValueError(
            f"unknown evaluation policy {name!r}; choose from {', '.join(EVAL_POLICIES)}"
        )
    if budget < 1:
        raise ValueError(f"budget must be a positive number of tokens, got {budget}")
    pol = EVAL_POLICIES[name]
    if pol.live is not None:
        raise ValueError(
            f"{name!r} decides as requests end and has no plan to allocate; score it with "
            f"evaluate(..., accounting='spent')"
        )
    return pol.allocation(ctx, int(budget))
