"""Replay: hand-computed accuracies and token counts, pass@k, majority vote, bootstrap."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from shadowprice.evaluate import bootstrap_ci, pass_at_k, replay
from shadowprice.traces import TraceSet


def _ts() -> TraceSet:
    # q0: lengths 100 (ok), 200 (ok), 300 (wrong), 400 (ok); q1: 50 (wrong), 150 (ok)
    return TraceSet(
        [
            {
                "id": "q0",
                "samples": [
                    {"tokens": 100, "correct": True, "pred": "7"},
                    {"tokens": 200, "correct": True, "pred": "7"},
                    {"tokens": 300, "correct": False, "pred": "8"},
                    {"tokens": 400, "correct": True, "pred": "7"},
                ],
            },
            {
                "id": "q1",
                "samples": [
                    {"tokens": 50, "correct": False, "pred": "1"},
                    {"tokens": 150, "correct": True, "pred": "2"},
                ],
            },
        ]
    )


def test_hard_cap_accuracy_and_tokens() -> None:
    r = replay(np.array([250, 100]), _ts(), n_boot=0)
    # q0: 2 of 4 correct within 250; q1: none correct within 100.
    assert r.per_query.tolist() == [0.5, 0.0]
    assert r.accuracy == 0.25
    assert r.tokens_allotted == 350
    # spent: q0 mean(100, 200, 250, 250) = 200; q1 mean(50, 100) = 75
    assert r.tokens_spent == pytest.approx(275.0)
    assert r.abandoned == 0.0


def test_abandoned_query_costs_nothing() -> None:
    r = replay(np.array([0, 150]), _ts(), n_boot=0)
    assert r.per_query.tolist() == [0.0, 0.5]
    assert r.abandoned == 0.5
    assert r.tokens_spent == pytest.approx(100.0)  # q1: mean(50, 150)


def test_pass_at_k_formula() -> None:
    for n, c, k in [(8, 3, 2), (4, 1, 4), (8, 0, 3), (5, 5, 1), (10, 4, 3)]:
        exact = 1 - comb(n - c, k) / comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(4, 2, 0) == 0.0
    # k > n falls back to sampling with replacement.
    assert pass_at_k(2, 1, 3) == pytest.approx(1 - 0.5**3)


def test_samples_multiply_cost_and_use_pass_at_k() -> None:
    r = replay(np.array([250, 200]), _ts(), samples=np.array([2, 1]), n_boot=0)
    assert r.per_query[0] == pytest.approx(1 - comb(2, 2) / comb(4, 2))
    assert r.tokens_allotted == 2 * 250 + 200
    assert r.tokens_spent == pytest.approx(2 * 200.0 + 100.0)


def test_majority_vote_exact() -> None:
    ts = _ts()
    # k = 3 of q0 at cap 1000: the wrong answer never wins (at most 1 vote of 3).
    r = replay(np.array([1000, 1000]), ts, samples=np.array([3, 2]), vote="majority", n_boot=0)
    assert r.per_query[0] == pytest.approx(1.0)
    # q1, k = 2 (both samples): a 1-1 tie between "1" and "2": half the time right.
    assert r.per_query[1] == pytest.approx(0.5)
    # Cap 150 on q0 with k = 2: pairs containing sample 0 answer "7"; others unanswered.
    r = replay(np.array([150, 0]), ts, samples=2, vote="majority", n_boot=0)
    assert r.per_query[0] == pytest.approx(3 / 6)
    # With k = 1 majority equals pass@1.
    a = replay(np.array([250, 160]), ts, vote="majority", n_boot=0)
    b = replay(np.array([250, 160]), ts, vote="pass", n_boot=0)
    np.testing.assert_allclose(a.per_query, b.per_query)


def test_bootstrap_ci_contains_estimate() -> None:
    x = np.random.default_rng(1).random(50)
    lo, hi = bootstrap_ci(x, 500, seed=0)
    assert lo <= x.mean() <= hi
    r = replay(np.array([250, 160]), _ts(), n_boot=200)
    assert r.accuracy_ci[0] <= r.accuracy <= r.accuracy_ci[1]


def test_replay_validates() -> None:
    with pytest.raises(ValueError, match="one cap per query"):
        replay(np.array([1, 2, 3]), _ts())
    with pytest.raises(ValueError, match="non-negative"):
        replay(np.array([-1, 2]), _ts())
    with pytest.raises(ValueError, match="vote"):
        replay(np.array([1, 2]), _ts(), vote="best")  # type: ignore[arg-type]
