"""Splits never leak, policies and runner behave, the CLI prints the documented schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.evaluate import EVAL_POLICIES, evaluate, kfold_queries, split_half
from shadowprice.traces import TraceSet, load_traces


def _tagged(n: int = 30, s: int = 8, seed: int = 0) -> TraceSet:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        scale = np.exp(rng.normal(np.log(250), 0.5))
        recs.append(
            {
                "id": f"q{i}",
                "samples": [
                    {
                        "tokens": int(scale * np.exp(rng.normal(0, 0.3))),
                        "correct": bool(rng.random() < 0.8),
                        "uid": f"{i}-{j}",
                    }
                    for j in range(s - (i % 3))
                ],
            }
        )
    return TraceSet(recs)


def test_split_half_is_disjoint_and_complete() -> None:
    ts = _tagged()
    fit, score = split_half(ts, seed=3)
    assert fit.ids == score.ids == ts.ids
    for r, a, b in zip(ts.records, fit.records, score.records, strict=True):
        ua = {s["uid"] for s in a["samples"]}
        ub = {s["uid"] for s in b["samples"]}
        assert not ua & ub
        assert ua | ub == {s["uid"] for s in r["samples"]}
        assert len(ua) == len(r["samples"]) // 2
    # Deterministic in the seed, different across seeds.
    again, _ = split_half(ts, seed=3)
    assert [s["uid"] for s in again.records[0]["samples"]] == [
        s["uid"] for s in fit.records[0]["samples"]
    ]


def test_split_half_rejects_single_samples() -> None:
    ts = TraceSet([{"id": "a", "samples": [{"tokens": 1, "correct": True}]}])
    with pytest.raises(ValueError, match="fewer than 2 samples"):
        split_half(ts)


def test_kfold_partitions_queries() -> None:
    folds = list(kfold_queries(23, k=4, seed=1))
    scored = np.concatenate([s for _, s in folds])
    assert sorted(scored.tolist()) == list(range(23))
    for f, s in folds:
        assert not set(f) & set(s) and len(f) + len(s) == 23


def test_evaluate_table_and_oracle_is_ceiling() -> None:
    ts = _tagged(n=40)
    names = ["uniform", "clear", "clear-paper", "market-raw", "oracle"]
    df = evaluate(ts, [150, 400], names, split="half", n_boot=100)
    assert len(df) == 2 * len(names)
    assert (df.accuracy_ci_low <= df.accuracy).all() and (df.accuracy <= df.accuracy_ci_high).all()
    assert (df.tokens_allotted <= df.budget + 1e-9).all()
    for b, g in df.groupby("budget"):
        best = g.set_index("policy").accuracy
        assert best["oracle"] >= best.drop("oracle").max() - 1e-12, b
    assert df.loc[df.policy == "oracle", "label"].iloc[0] == "hindsight oracle (ceiling)"
    assert (df.loc[df.policy == "uniform", "vs_uniform"] == 0).all()


def test_evaluate_spent_accounting_and_queries_split() -> None:
    ts = _tagged(n=30)
    df = evaluate(ts, [200], ["uniform", "clear", "clear-live"], accounting="spent", n_boot=50)
    # What is generated never exceeds the budget; the live policy's caps may add up to more.
    assert (df.tokens_spent <= 200 + 1e-9).all() and (df.accounting == "spent").all()
    assert df.set_index("policy").tokens_allotted["clear-live"] > 200
    dq = evaluate(ts, [200], ["uniform", "clear"], split="queries", folds=3, n_boot=50)
    assert len(dq) == 2 and dq.n_queries.iloc[0] == 30


def test_registry_and_validation() -> None:
    assert {
        "uniform",
        "clear",
        "clear-paper",
        "market-raw",
        "proportional",
        "length",
        "greedy",
        "oracle",
        "clear-samples",
    } <= set(EVAL_POLICIES)
    with pytest.raises(ValueError, match="unknown policies"):
        evaluate(_tagged(), [100], ["nope"])
    with pytest.raises(ValueError, match="budgets"):
        evaluate(_tagged(), [0], ["uniform"])


def test_cli_json_schema() -> None:
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "bundled:qwen25-math-math100",
            "--budgets",
            "200,400",
            "--policies",
            "uniform,clear,oracle",
            "--split",
            "half",
            "--seed",
            "0",
            "--format",
            "json",
            "--n-boot",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["results"]) == 6
    for r in out["results"]:
        assert {
            "policy",
            "budget",
            "accuracy",
            "accuracy_ci",
            "tokens_allotted",
            "tokens_spent",
            "abandoned",
        } <= set(r)
        assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
    assert load_traces("qwen25-math-math100").n == out["queries"]


def test_cli_errors() -> None:
    res = CliRunner().invoke(
        app, ["evaluate", "bundled:qwen25-math-math100", "--policies", "uniform,bogus"]
    )
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["evaluate", "/no/such/file.jsonl"])
    assert res.exit_code == 2


def test_samples_ceiling_bounds_length_ceiling_and_clear_samples():
    from shadowprice.evaluate import evaluate
    from shadowprice.traces import load_traces

    ts = load_traces("qwen25-math-math100")
    df = evaluate(
        ts, [500], ["clear-samples", "oracle", "oracle-samples"], split="half", seed=0, n_boot=50
    )
    acc = df.set_index("policy")["accuracy"]
    assert acc["oracle-samples"] >= acc["oracle"] - 1e-12
    assert acc["oracle-samples"] >= acc["clear-samples"] - 1e-12
    labels = set(df["label"])
    assert "hindsight oracle over k x b (ceiling)" in labels


def test_oracle_on_a_large_set_stays_a_ceiling() -> None:
    """Past what the exact DP can hold at a fine granule, the ceiling is one price over the
    scoring samples' exact menus: still above every runnable policy, never a coarse DP."""
    from shadowprice.evaluate import FitContext, split_half
    from shadowprice.evaluate.policies import run_policy
    from shadowprice.evaluate.replay import replay
    from shadowprice.evaluate.streams import make_stream

    ts = make_stream("balanced", 3000, 5).sample_traces(8, 6)
    fit, score = split_half(ts, 0)
    ctx = FitContext(fit, score)
    oracle = run_policy("oracle", ctx, 300 * ts.n)
    assert "exact menus" in oracle.message and oracle.spent <= 300 * ts.n
    acc = {
        p: replay(run_policy(p, ctx, 300 * ts.n), score, n_boot=0).accuracy
        for p in ("uniform", "clear")
    }
    assert replay(oracle, score, n_boot=0).accuracy > max(acc.values())
