"""Evaluate policies on a trace set: fit on one part, replay on the other, tabulate.

``split="half"`` (history): each query's samples are split at random; every policy is fitted
on one half and scored on the other, ``repeats`` times with different splits; per-query
accuracies are averaged over repeats before the bootstrap, so the interval covers query
sampling. ``split="queries"`` (no history): k-fold over queries, each fold allocated with its
own budget (budget x fold size) and scored on its own queries; results pool the folds.
``split="none"`` fits and scores on the same samples (in-sample; optimistic, for reference).

What the budget bounds (``accounting``):

- ``"allotted"`` (the paper's, the default): the sum of caps. Each policy's caps are replayed
  on the scoring samples (:func:`~shadowprice.evaluate.replay.replay`), exactly in
  expectation.
- ``"spent"``: the tokens generated. Each policy runs as ``run`` would execute it, through the
  serving-engine simulator (:func:`~shadowprice.evaluate.simulate.simulate`: ``concurrency``
  slots, every request reserved in a token ledger before it is sent) over *worlds*, one
  scoring sample per query (each scoring sample used equally often). A plan runs as a
  one-shot plan (what its finished requests leave can fund its later queries; nothing is
  re-planned), ``clear-live`` decides as requests end, and ``oracle`` is the spent-accounting
  hindsight ceiling (in each world, the correct samples shortest first until the budget is
  spent). ``engine="http"`` runs the same policies through a real OpenAI-compatible server
  that replays the worlds' samples, the real client and a journal
  (:func:`~shadowprice.evaluate.simulate.drive_worlds`): the same outcomes at concurrency 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from ..limits import MAX_BUDGET, check_budget
from ..solve.menus import ACCOUNTINGS, Accounting
from ..traces import TraceSet
from .policies import EVAL_POLICIES, EvalPolicy, FitContext, Predictor, run_policy
from .replay import bootstrap_ci, replay
from .simulate import (
    DEFAULT_CONCURRENCY,
    ENGINES,
    Worlds,
    drive_worlds,
    sample_worlds,
    spent_ceiling,
)
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
    "accounting",
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
    accounting: Accounting = "allotted",
    repeats: int = 1,
    vote: Literal["pass", "majority"] = "pass",
    n_boot: int = 1000,
    folds: int = 5,
    strength: float = 1.0,
    predictor: Predictor | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    paired: Sequence[str] = ("uniform",),
    engine: str = "sim",
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
    accounting : 'allotted' or 'spent'
        What the budget bounds: caps (the paper's accounting, replayed) or tokens generated
        (run through the serving-engine simulator); see the module docstring.
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
    concurrency : int
        Requests in flight at once (spent accounting): the simulated engine's slots.
    paired : sequence of str
        Policies every row is compared with, query by query: columns ``vs_<name>`` (``-``
        read as ``_``) and their paired bootstrap interval, NaN where ``name`` was not
        scored.
    engine : {'sim', 'http'}
        What runs the policies under spent accounting: the simulated engine, or a real
        OpenAI-compatible server replaying the same samples over HTTP (see the module
        docstring).

    Returns
    -------
    DataFrame with :data:`COLUMNS`: one row per (policy, budget). Token columns are per query
    (averaged over queries): ``tokens_allotted`` the caps (all requests' reservations under
    spent accounting), ``tokens_spent`` what was (expected to be) generated; ``abandoned`` the
    share of queries never sent; ``vs_uniform`` is accuracy minus uniform's (paired bootstrap
    CI) when uniform is among the policies; one more such triple per other ``paired`` name.
    """
    budgets = _check_args(traces, budgets_per_query, policies, split, accounting)
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    reps = 1 if split == "none" else repeats
    contexts = _contexts(traces, split, seed, reps, folds, strength, predictor)
    worlds: dict[int, Worlds] = {}
    if accounting == "spent":
        worlds = {
            id(ctx): sample_worlds(ctx.score, seed=seed + r)
            for r, rep in enumerate(contexts)
            for ctx, _ in rep
        }
    N = traces.n
    per_q: dict[tuple[str, float], np.ndarray] = {}
    rows = []
    for bq in budgets:
        for name in policies:
            acc = np.zeros(N)
            tokens = np.zeros(3)  # allotted, spent, abandoned: per query, averaged
            for rep in contexts:
                for ctx, idx in rep:
                    total = max(1, round(bq * ctx.n))
                    if accounting == "spent":
                        q_acc, t = _spent_scores(
                            EVAL_POLICIES[name], ctx, total, worlds[id(ctx)], concurrency, engine
                        )
                    else:
                        res = replay(run_policy(name, ctx, total), ctx.score, vote=vote, n_boot=0)
                        q_acc = res.per_query
                        t = np.array([res.tokens_allotted, res.tokens_spent, res.abandoned * ctx.n])
                    acc[idx] += q_acc / reps
                    tokens += t / (reps * N)
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
                    "tokens_allotted": float(tokens[0]),
                    "tokens_spent": float(tokens[1]),
                    "abandoned": float(tokens[2]),
                    "split": split,
                    "n_queries": N,
                    "accounting": accounting,
                    "vote": vote,
                }
            )
    extra: list[str] = []
    for ref in dict.fromkeys(["uniform", *paired]):
        cols = _versus(rows, per_q, ref, n_boot, seed)
        extra += [] if ref == "uniform" else cols
    return pd.DataFrame(rows, columns=COLUMNS + extra)


def _check_args(
    traces: TraceSet,
    budgets_per_query: Sequence[float],
    policies: Sequence[str],
    split: str,
    accounting: str,
) -> list[float]:
    """Validate :func:`evaluate`'s arguments; the budgets as floats."""
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
    if accounting not in ACCOUNTINGS:
        raise ValueError(
            f"accounting must be 'allotted' (caps) or 'spent' (tokens generated), "
            f"got {accounting!r}"
        )
    wrong = [p for p in policies if accounting not in EVAL_POLICIES[p].accounting]
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)} cannot be scored under {accounting} accounting (only "
            f"{', '.join(EVAL_POLICIES[wrong[0]].accounting)}); choose "
            f"{'--accounting spent' if accounting == 'allotted' else 'other policies'}"
        )
    return budgets


def _versus(
    rows: list[dict[str, object]],
    per_q: dict[tuple[str, float], np.ndarray],
    ref: str,
    n_boot: int,
    seed: int,
) -> list[str]:
    """Add each row's paired difference to ``ref`` at the same budget (NaN without it);
    return the three column names."""
    col = "vs_" + ref.replace("-", "_")
    names = [col, f"{col}_ci_low", f"{col}_ci_high"]
    for row in rows:
        key_b = float(row["budget"])  # type: ignore[arg-type]
        base = per_q.get((ref, key_b))
        if base is None:
            row.update(dict.fromkeys(names, np.nan))
            continue
        d = per_q[(str(row["policy"]), key_b)] - base
        lo, hi = bootstrap_ci(d, n_boot, seed)
        row.update(zip(names, (float(d.mean()), lo, hi), strict=True))
    return names


def _spent_scores(
    pol: EvalPolicy, ctx: FitContext, total: int, worlds: Worlds, concurrency: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Spent accounting: each scored query's answered share over the worlds (n,), and the
    tokens reserved, tokens generated and queries never sent, summed over the queries and
    averaged over the worlds (3,)."""
    n, w = ctx.n, worlds.w
    acc = np.zeros(n)
    tokens = np.zeros(3)
    if pol.hindsight:
        if pol.name != "oracle":
            raise ValueError(f"{pol.name!r} has no spent-accounting ceiling")
        for k in range(w):
            hit = spent_ceiling(worlds.lengths[k], worlds.correct[k], total)
            cost = float(worlds.lengths[k][hit].sum())
            acc += hit
            tokens += [cost, cost, n - hit.sum()]
    else:
        runs = drive_worlds(
            pol.executor(ctx, total),
            ctx.score,
            worlds,
            total,
            concurrency=concurrency,
            engine=engine,
        )
        for r in runs:
            acc += r.answered
            tokens += [r.tokens_allotted, r.tokens_spent, float((r.requests == 0).sum())]
    return acc / w, tokens / w
