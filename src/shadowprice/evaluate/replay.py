"""Replay: score an allocation on recorded traces, with a hard cap.

A query given cap b (and k parallel samples) is scored on its recorded samples as if each had
been cut at b tokens: a sample counts only if it is correct *and* finished within b. Expected
accuracy is exact over the recorded samples (no sampling noise added by the scorer):

- ``vote="pass"``: pass@k with a verifier, the unbiased estimator 1 - C(n - c, k) / C(n, k)
  where c of the query's n samples are correct within b (k = 1 gives c / n).
- ``vote="majority"``: the k samples vote with their ``pred`` answers; a sample cut at b has no
  answer; ties are broken uniformly at random; no answer at all counts as wrong. The expectation
  over random k-subsets of the n samples is exact (enumeration) when C(n, k) <= 256 and Monte
  Carlo with a fixed seed otherwise. Where a trace has no ``pred``, each correct sample answers
  "correct" and each wrong one a distinct wrong answer (wrong answers never pool their votes,
  which favours majority vote slightly).

Tokens: *allotted* = sum of k_i b_i (what the paper counts); *spent* = sum over queries of
k_i times the mean over samples of min(length, b_i) (what a user pays when generation stops at
the cap or at the end of the answer, whichever is first). Replay scores fixed caps, which is
*allotted* accounting (the caps are what the budget bounds); both token figures are reported.
Under *spent* accounting, where what a query may use depends on when the others end, policies
are scored by :mod:`~shadowprice.evaluate.simulate` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..solve.result import Allocation
from ..traces import TraceSet

FloatArray = NDArray[np.float64]

__all__ = ["ReplayResult", "bootstrap_ci", "pass_at_k", "replay"]

#: Enumerate k-subsets exactly up to this many per query; Monte Carlo beyond.
MAX_EXACT_SUBSETS = 256
#: Monte Carlo draws per query for majority vote when enumeration is too large.
MC_DRAWS = 512
#: Salt for the bootstrap and Monte Carlo generators (independent of data simulated with the
#: same seed).
_SALT = 0xB007_0001


@dataclass(frozen=True)
class ReplayResult:
    """What an allocation scored on a trace set (a
    :class:`~shadowprice.engine.records.Scored` result).

    Attributes
    ----------
    accuracy : float
        Mean expected accuracy over the N queries (abandoned queries score 0).
    accuracy_ci : (float, float)
        95% percentile-bootstrap interval of ``accuracy`` over queries.
    tokens_allotted : float
        Total tokens allotted, sum k_i b_i.
    tokens_spent : float
        Total expected tokens generated, sum k_i E[min(L, b_i)].
    abandoned : float
        Share of queries given no tokens.
    per_query : ndarray (N,)
        Each query's expected accuracy (for paired comparisons).
    spent_per_query : ndarray (N,)
        Each query's expected spend in tokens.
    budget : float
        The allocation's budget (what its caps had to fit); for bare caps, their total.
    """

    accuracy: float
    accuracy_ci: tuple[float, float]
    tokens_allotted: float
    tokens_spent: float
    abandoned: float
    per_query: FloatArray
    spent_per_query: FloatArray
    budget: float = 0.0

    @property
    def n(self) -> int:
        return int(self.per_query.size)

    @property
    def abandonment(self) -> float:
        """Share of the queries given no tokens (:attr:`abandoned`)."""
        return self.abandoned

    @property
    def within_budget(self) -> bool:
        """The caps fit the budget (allotted accounting: what the budget bounds)."""
        return bool(self.tokens_allotted <= self.budget)

    def summary(self) -> dict[str, Any]:
        """JSON-ready dict (per-query arrays left out)."""
        return {
            "accounting": "allotted",
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "tokens_allotted": self.tokens_allotted,
            "tokens_spent": self.tokens_spent,
            "abandoned": self.abandoned,
            "budget": self.budget,
            "within_budget": self.within_budget,
        }


def pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> FloatArray:
    """Unbiased pass@k: 1 - C(n - c, k) / C(n, k), elementwise.

    Computed as 1 - prod_{j=0}^{k-1} (n - c - j) / (n - j) (no large binomials). Where k > n the
    estimator is undefined; the with-replacement value 1 - (1 - c/n)^k is used instead. k = 0
    gives 0.
    """
    n_a, c_a, k_a = np.broadcast_arrays(
        np.asarray(n, float), np.asarray(c, float), np.asarray(k, np.int64)
    )
    if np.any(c_a < 0) or np.any(c_a > n_a) or np.any(n_a < 1) or np.any(k_a < 0):
        raise ValueError("need n >= 1, 0 <= c <= n and k >= 0")
    kmax = int(k_a.max(initial=0))
    j = np.arange(max(kmax, 1), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (n_a[..., None] - c_a[..., None] - j) / (n_a[..., None] - j)
    ratio = np.where(j < k_a[..., None], np.clip(ratio, 0.0, 1.0), 1.0)
    exact = 1.0 - np.prod(ratio, axis=-1)
    approx = 1.0 - (1.0 - c_a / n_a) ** k_a
    out = np.where(k_a > n_a, approx, exact)
    return np.where(k_a == 0, 0.0, out)


def bootstrap_ci(
    per_query: ArrayLike, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``per_query`` (resampling queries)."""
    x = np.asarray(per_query, float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    if n_boot < 1:
        m = float(x.mean())
        return (m, m)
    rng = np.random.default_rng([_SALT, seed])
    means = np.empty(n_boot)
    # Chunk the (n_boot, N) index matrix so large N stays in memory.
    step = max(1, 4_000_000 // x.size)
    for s in range(0, n_boot, step):
        e = min(s + step, n_boot)
        means[s:e] = x[rng.integers(0, x.size, (e - s, x.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    m = float(x.mean())
    # Percentile intervals can exclude the mean by rounding on degenerate data; keep it inside.
    return (min(float(lo), m), max(float(hi), m))


def _answer_codes(traces: TraceSet, s_max: int) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Per sample an integer answer code (N, S) and per code whether it is correct (N, C).

    Codes are per query: equal ``pred`` strings share a code. A code counts as correct if any
    sample with that answer was graded correct. Without ``pred``, correct samples share one
    code and wrong ones get distinct codes.
    """
    n = traces.n
    codes = np.zeros((n, s_max), np.int64)
    good = np.zeros((n, s_max), bool)
    for i, r in enumerate(traces.records):
        table: dict[Any, int] = {}
        for j, s in enumerate(r["samples"]):
            pred = s.get("pred")
            key: Any = (
                ("__correct__",)
                if pred is None and s["correct"]
                else ("__wrong__", j)
                if pred is None
                else str(pred).strip()
            )
            code = table.setdefault(key, len(table))
            codes[i, j] = code
            good[i, code] |= bool(s["correct"])
    return codes, good


def _majority(
    tokens: FloatArray,
    codes: NDArray[np.int64],
    good: NDArray[np.bool_],
    n: NDArray[np.int64],
    caps: FloatArray,
    ks: NDArray[np.int64],
    seed: int,
) -> FloatArray:
    """Expected majority-vote accuracy per query (see module docstring)."""
    N, S = tokens.shape
    out = np.zeros(N)
    finished = np.nan_to_num(tokens, nan=np.inf) <= caps[:, None]
    rng = np.random.default_rng([_SALT, seed])
    for ni, ki in sorted(set(zip(n.tolist(), ks.tolist(), strict=True))):
        if ki <= 0:
            continue
        rows = np.flatnonzero((n == ni) & (ks == ki))
        kk = min(ki, ni)  # more samples than recorded: vote over all of them
        if comb(ni, kk) <= MAX_EXACT_SUBSETS:
            subsets = np.array(list(combinations(range(ni), kk)), dtype=np.int64)  # (M, k)
            picks = np.broadcast_to(subsets, (rows.size,) + subsets.shape)
        else:
            keys = rng.random((rows.size, MC_DRAWS, ni))
            picks = np.argsort(keys, axis=2)[:, :, :kk]
        r = rows[:, None, None]
        c = codes[r, picks]  # (R, M, k) answer codes
        f = finished[r, picks]  # (R, M, k) answered within cap
        votes = np.zeros(c.shape[:2] + (S,))
        np.add.at(
            votes,
            (np.arange(rows.size)[:, None, None], np.arange(c.shape[1])[None, :, None], c),
            f.astype(float),
        )
        top = votes.max(axis=2, keepdims=True)
        tied = (votes == top) & (top > 0)
        # Random tie-break in expectation: share of the tied answers that are correct.
        win = (tied & good[rows][:, None, :]).sum(axis=2) / np.maximum(tied.sum(axis=2), 1)
        out[rows] = win.mean(axis=1)
    return out


def replay(
    allocation_or_budgets: Allocation | ArrayLike,
    traces: TraceSet,
    *,
    samples: ArrayLike | None = None,
    vote: Literal["pass", "majority"] = "pass",
    n_boot: int = 1000,
    seed: int = 0,
) -> ReplayResult:
    """Score per-query caps on ``traces`` (same N queries, same order).

    Parameters
    ----------
    allocation_or_budgets : Allocation or int array (N,)
        Per-sample caps b_i in tokens (0 = abandoned). An Allocation's ``samples`` are used
        unless ``samples`` is given.
    traces : TraceSet
        The scoring samples.
    samples : int or int array (N,), optional
        Parallel samples k_i per query (default 1).
    vote : 'pass' or 'majority'
        How k samples become one answer (see module docstring).
    n_boot : int
        Bootstrap resamples of queries for the 95% interval (0: no interval).
    seed : int
        Seeds the bootstrap and any Monte Carlo vote.
    """
    if not isinstance(traces, TraceSet):
        raise TypeError(f"traces must be a TraceSet, got {type(traces).__name__}")
    budget = float("nan")  # caps alone: their total is the budget they were given
    if isinstance(allocation_or_budgets, Allocation):
        b = np.asarray(allocation_or_budgets.budgets, dtype=float)
        budget = float(allocation_or_budgets.budget)
        if samples is None:
            samples = allocation_or_budgets.samples
    else:
        b = np.asarray(allocation_or_budgets, dtype=float)
    if b.ndim == 0:
        b = np.full(traces.n, float(b))
    if b.shape != (traces.n,):
        raise ValueError(f"need one cap per query: {traces.n} queries, got shape {b.shape}")
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ValueError("caps must be finite and non-negative")
    k = (
        np.ones(traces.n, np.int64)
        if samples is None
        else np.broadcast_to(np.asarray(samples), (traces.n,)).astype(np.int64)
    )
    if np.any(k < 0):
        raise ValueError("samples must be non-negative")
    if vote not in ("pass", "majority"):
        raise ValueError(f"vote must be 'pass' or 'majority', got {vote!r}")
    t = traces.tokens()
    c = traces.correct()
    n = traces.n_samples()
    active = (b > 0) & (k > 0)
    tt = np.nan_to_num(t, nan=np.inf)
    hits = (c & (tt <= b[:, None])).sum(axis=1)
    if vote == "pass":
        acc = pass_at_k(n, hits, k)
    else:
        codes, good = _answer_codes(traces, t.shape[1])
        acc = _majority(t, codes, good, n, b, k, seed)
    acc = np.where(active, acc, 0.0)
    spent = k * np.where(np.isnan(t), 0.0, np.minimum(t, b[:, None])).sum(axis=1) / n
    spent = np.where(active, spent, 0.0)
    return ReplayResult(
        accuracy=float(acc.mean()),
        accuracy_ci=bootstrap_ci(acc, n_boot, seed),
        tokens_allotted=float((np.where(active, b, 0.0) * k).sum()),
        tokens_spent=float(spent.sum()),
        abandoned=float(np.mean(~active)),
        per_query=acc,
        spent_per_query=spent,
        budget=budget if budget == budget else float((np.where(active, b, 0.0) * k).sum()),
    )
