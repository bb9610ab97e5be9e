"""No peeking: splits that keep what a policy is fitted on apart from what it is scored on.

- :func:`split_half`: every query in both parts, its samples divided at random (history: the
  same queries were seen before, with other samples).
- :func:`kfold_queries`: queries divided into folds (no history: for predictors that work from
  the query text).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from ..traces import TraceSet

__all__ = ["kfold_queries", "split_half"]

#: Salts mixed into the seed so that a split never reuses the random numbers that generated
#: the data: ``default_rng(seed)`` in a simulator and in the split would otherwise draw the
#: same uniforms (e.g. send exactly the samples that came out correct to one half).
_SALT_HALF = 0x5A17_0001
_SALT_FOLDS = 0x5A17_0002


def split_half(traces: TraceSet, seed: int = 0) -> tuple[TraceSet, TraceSet]:
    """Split each query's samples at random into a fit half and a score half.

    A query with n samples puts floor(n/2) in the fit half and the rest in the score half
    (8 -> 4 + 4, 5 -> 2 + 3). Every query needs at least 2 samples; a query with fewer cannot
    appear on both sides without leaking, so it is an error (drop it first with
    ``traces.subset(traces.n_samples() >= 2)``). Sample order within each half is kept.

    Returns
    -------
    (fit, score) : TraceSets with the same N queries in the same order; disjoint samples.
    """
    if not isinstance(traces, TraceSet):
        raise TypeError(f"traces must be a TraceSet, got {type(traces).__name__}")
    n = traces.n_samples()
    few = np.flatnonzero(n < 2)
    if few.size:
        raise ValueError(
            f"{few.size} queries have fewer than 2 samples (first: {traces.ids[few[0]]!r}); "
            f"split='half' needs 2+ per query: drop them with "
            f"traces.subset(traces.n_samples() >= 2)"
        )
    rng = np.random.default_rng([_SALT_HALF, seed])
    # One uniform key per sample; a query's floor(n/2) smallest keys go to the fit half.
    keys = rng.random((traces.n, int(n.max())))
    keys[np.arange(keys.shape[1])[None, :] >= n[:, None]] = np.inf
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    to_fit: NDArray[np.bool_] = rank < (n // 2)[:, None]

    present = np.arange(keys.shape[1])[None, :] < n[:, None]
    return traces.select_samples(to_fit), traces.select_samples(present & ~to_fit)


def kfold_queries(
    traces: TraceSet | int, k: int = 5, seed: int = 0
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """k-fold over queries: yields (fit_idx, score_idx) integer index arrays, k times.

    Folds are a random partition (sizes differ by at most one); indices are sorted. Accepts a
    TraceSet or its number of queries.
    """
    n = traces.n if isinstance(traces, TraceSet) else int(traces)
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of queries ({n}), got {k}")
    perm = np.random.default_rng([_SALT_FOLDS, seed]).permutation(n)
    for fold in np.array_split(perm, k):
        score = np.sort(fold).astype(np.int64)
        fit = np.setdiff1d(np.arange(n, dtype=np.int64), score)
        yield fit, score
