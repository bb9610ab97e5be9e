"""Spent accounting in evaluate: the simulator agrees with replay, clear-live is registered."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.evaluate import EVAL_POLICIES, evaluate
from shadowprice.evaluate.policies import FitContext, run_policy
from shadowprice.evaluate.splits import split_half
from shadowprice.traces import load_traces


def test_plans_that_fit_score_the_same_under_both_accountings() -> None:
    # Every query has 4 scoring samples, so the 4 worlds use each once; caps that sum to at
    # most the budget always fit the ledger, so the simulator must reproduce replay exactly.
    ts = load_traces("qwen25-math-math100")
    kw = {"split": "half", "n_boot": 0}
    a = evaluate(ts, [150, 300], ["uniform", "clear"], **kw).set_index(["policy", "budget"])
    s = evaluate(ts, [150, 300], ["uniform", "clear"], accounting="spent", **kw)
    s = s.set_index(["policy", "budget"])
    np.testing.assert_allclose(s.accuracy, a.accuracy, atol=1e-12)
    np.testing.assert_allclose(s.tokens_spent, a.tokens_spent, rtol=1e-9)
    np.testing.assert_allclose(s.tokens_allotted, a.tokens_allotted, rtol=1e-9)


def test_live_and_ceiling_under_spent_accounting() -> None:
    ts = load_traces("qwen25-math-math100")
    names = ["uniform", "clear", "clear-spent", "clear-live", "oracle"]
    df = evaluate(ts, [150], names, accounting="spent", n_boot=0).set_index("policy")
    assert (df.tokens_spent <= 150 + 1e-9).all()
    # The ceiling bounds every policy in every world, so on average too.
    assert df.accuracy["oracle"] >= df.accuracy.drop("oracle").max()
    # Spending what a one-shot plan leaves pays off when tokens are scarce.
    assert df.accuracy["clear-live"] > df.accuracy["clear"]


def test_registry_knows_which_accounting_each_policy_supports() -> None:
    live = EVAL_POLICIES["clear-live"]
    assert live.accounting == ("spent",) and live.live is not None
    assert "spent" not in EVAL_POLICIES["clear-samples"].accounting
    ts = load_traces("qwen25-math-math100")
    with pytest.raises(ValueError, match="accounting spent"):
        evaluate(ts, [150], ["clear-live"], n_boot=0)
    with pytest.raises(ValueError, match="cannot be scored under spent"):
        evaluate(ts, [150], ["clear-samples"], accounting="spent", n_boot=0)
    fit, score = split_half(ts, 0)
    with pytest.raises(ValueError, match="decides as requests end"):
        run_policy("clear-live", FitContext(fit, score), 15_000)


def test_cli_contract_spent_accounting_json() -> None:
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "bundled:qwen25-math-math100",
            "--accounting",
            "spent",
            "--policies",
            "uniform,clear,clear-live,oracle",
            "--budgets",
            "2000,4000",
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
    assert out["accounting"] == "spent"
    assert {r["policy"] for r in out["results"]} == {"uniform", "clear", "clear-live", "oracle"}
    for r in out["results"]:
        assert {"policy", "budget", "accuracy", "tokens_allotted", "tokens_spent"} <= set(r)
        assert r["tokens_spent"] <= r["budget"]
