"""Evaluate policies on a trace set: fit on one part, replay on the other, tabulate.

``split="half"`` (history): each query's samples are split at random; every policy is fitted
on one half and scored on the other, ``repeats`` times with different splits; per-query
accuracies are averaged over repeats before the bootstrap, so the interval covers query
sampling. ``split="queries"`` (no history): k-fold over queries, each fold allocated with its
own budget (budget x fold size) and scored on its own queries; results pool the folds.
``split="none"`` fits and scores on the same samples (in-sample; optimistic, for reference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from ..limits import MAX_BUDGET, check_budget
from ..traces import TraceSet
from .policies import EVAL_POLICIES, FitContext, Predictor, run_policy
from .replay import bootstrap_ci, replay
from .splits import kfold_queries, split_half

__all__ = ["COLUMNS", "evaluate"]

COLUMNS = [
    "policy",
    "label",
    "budget",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "tokens_allotted",
    "tokens_spent",
    "abandoned",
    "vs_uniform",
    "vs_uniform_ci_low",
    "vs_uniform_ci_high",
    "split",
    "n_queries",
    "cost",
    "vote",
]


def _contexts(
    traces: TraceSet,
    split: str,
    seed: int,
    repeats: int,
    folds: int,
    strength: float,
    predictor: Predictor | None,
) -> list[list[tuple[FitContext, np.ndarray]]]:
    """Per repeat, a list of (context, indices of the scored queries)."""
    out = []
    for r in range(repeats):
        if split == "half":
            fit, score = split_half(traces, seed + r)
            out.append([(FitContext(fit, score, True, strength), np.arange(traces.n))])
        elif split == "none":
            out.append([(FitContext(traces, traces, True, strength), np.arange(traces.n))])
        else:
            out.append(
                [
                    (FitContext(traces.subset(f), traces.subset(s), False, strength, predictor), s)
                    for f, s in kfold_queries(traces, folds, seed + r)
                ]
            )
    return out


def evaluate(
    traces: TraceSet,
    budgets_per_query: Sequence[float],
    policies: Sequence[str] = ("uniform", "clear", "oracle"),
    *,
    split: Literal["half", "none", "queries"] = "half",
    seed: int = 0,
    cost: Literal["allotted", "spent"] = "allotted",
    repeats: int = 1,
    vote: Literal["pass", "majority"] = "pass",
    n_boot: int = 1000,
    folds: int = 5,
    strength: float = 1.0,
    predictor: Predictor | None = None,
) -> pd.DataFrame:
    """Score each policy at each average budget per query.

    Parameters
    ----------
    traces : TraceSet
        Queries with several samples each.
    budgets_per_query : sequence of float
        Average tokens per query; the total is budget x (scored queries).
    policies : sequence of str
        Names from :data:`~shadowprice.evaluate.policies.EVAL_POLICIES`.
    split : 'half', 'none' or 'queries'
        See module docstring.
    seed : int
        Seeds splits and bootstrap.
    cost : 'allotted' or 'spent'
        What the budget bounds: caps (the paper's accounting) or expected generated tokens.
    repeats : int
        Random splits averaged (split 'half' and 'queries').
    vote : 'pass' or 'majority'
        How policies with k > 1 samples are scored.
    n_boot : int
        Bootstrap resamples (over queries) for intervals.
    folds : int
        Folds for split 'queries'.
    strength : float
        Shrinkage strength for the fitted curves.
    predictor : callable, optional
        Per-query curves for unseen queries (split 'queries').

    Returns
    -------
    DataFrame with :data:`COLUMNS`: one row per (policy, budget). Token columns are per query
    (averaged over queries); ``vs_uniform`` is accuracy minus uniform's (paired bootstrap CI)
    when uniform is among the policies.
    """
    if not isinstance(traces, TraceSet):
        raise TypeError(f"traces must be a TraceSet, got {type(traces).__name__}")
    budgets = [float(b) for b in budgets_per_query]
    if not budgets or any(not np.isfinite(b) or b <= 0 for b in budgets):
        raise ValueError(f"budgets must be positive numbers of tokens, got {budgets_per_query}")
    for b in budgets:
        total = b * traces.n
        check_budget(
            math.floor(total) if total <= MAX_BUDGET else total,
            f"budget {b:g} per query x {traces.n} queries",
        )
    unknown = [p for p in policies if p not in EVAL_POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(EVAL_POLICIES)}")
    if split not in ("half", "none", "queries"):
        raise ValueError(f"split must be 'half', 'none' or 'queries', got {split!r}")
    if cost not in ("allotted", "spent"):
        raise ValueError(f"cost must be 'allotted' or 'spent', got {cost!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    reps = 1 if split == "none" else repeats
    contexts = _contexts(traces, split, seed, reps, folds, strength, predictor)
    N = traces.n
    per_q: dict[tuple[str, float], np.ndarray] = {}
    rows = []
    for bq in budgets:
        for name in policies:
            acc = np.zeros(N)
            allotted = spent = abandoned = 0.0
            for rep in contexts:
                for ctx, idx in rep:
                    total = max(1, round(bq * ctx.n))
                    alloc = run_policy(name, ctx, total, cost=cost)
                    res = replay(alloc, ctx.score, vote=vote, n_boot=0)
                    acc[idx] += res.per_query / reps
                    allotted += res.tokens_allotted / (reps * N)
                    spent += res.tokens_spent / (reps * N)
                    abandoned += res.abandoned * ctx.n / (reps * N)
            per_q[(name, bq)] = acc
            lo, hi = bootstrap_ci(acc, n_boot, seed)
            rows.append(
                {
                    "policy": name,
                    "label": EVAL_POLICIES[name].label,
                    "budget": bq,
                    "accuracy": float(acc.mean()),
                    "accuracy_ci_low": lo,
                    "accuracy_ci_high": hi,
                    "tokens_allotted": allotted,
                    "tokens_spent": spent,
                    "abandoned": abandoned,
                    "split": split,
                    "n_queries": N,
                    "cost": cost,
                    "vote": vote,
                }
            )
    for row in rows:
        key_b = float(row["budget"])  # type: ignore[arg-type]
        base = per_q.get(("uniform", key_b))
        if base is None:
            row.update(vs_uniform=np.nan, vs_uniform_ci_low=np.nan, vs_uniform_ci_high=np.nan)
            continue
        d = per_q[(str(row["policy"]), key_b)] - base
        lo, hi = bootstrap_ci(d, n_boot, seed)
        row.update(vs_uniform=float(d.mean()), vs_uniform_ci_low=lo, vs_uniform_ci_high=hi)
    return pd.DataFrame(rows, columns=COLUMNS)
