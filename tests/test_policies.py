"""The evaluation-policy registry: every entry says what it runs, and does run that."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shadowprice import POLICIES as SOLVERS
from shadowprice.evaluate import split_half
from shadowprice.evaluate.policies import (
    CURVES,
    EVAL_POLICIES,
    ORACLE_LABEL,
    REFERENCES,
    EvalPolicy,
    FitContext,
    policy_info,
    run_policy,
)
from shadowprice.traces import REAL_TRACE_SET, load_traces

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def ctx() -> FitContext:
    fit, score = split_half(load_traces(REAL_TRACE_SET).subset(slice(0, 40)), seed=0)
    return FitContext(fit, score)


def test_every_entry_names_known_curves_and_solver() -> None:
    for entry in [*EVAL_POLICIES.values(), *REFERENCES.values()]:
        assert entry.curves in CURVES, entry.name
        # A live policy is its own solver (it re-clears as requests end).
        assert entry.solver in SOLVERS or entry.live is not None, entry.name
        assert entry.description and entry.label and entry.legend
    assert set(EVAL_POLICIES).isdisjoint(REFERENCES)


def test_hindsight_entries_are_labelled_as_ceilings() -> None:
    for entry in EVAL_POLICIES.values():
        assert entry.hindsight == (entry.curves == "hindsight"), entry.name
        assert entry.runnable == (not entry.hindsight)
        if entry.hindsight:
            assert "ceiling" in entry.label and "ceiling" in entry.description
        else:
            assert entry.label == entry.name
    assert EVAL_POLICIES["oracle"].label == ORACLE_LABEL
    assert not any(r.runnable for r in REFERENCES.values())


@pytest.mark.parametrize("name", sorted(EVAL_POLICIES))
def test_each_policy_runs_the_solver_it_names(ctx: FitContext, name: str) -> None:
    entry = EVAL_POLICIES[name]
    if entry.live is not None:
        pytest.skip("a live policy has no plan to allocate")
    alloc = run_policy(name, ctx, 300 * ctx.n)
    # Allocation.policy is the solver that produced it (the k x b ceiling names itself).
    assert alloc.policy.split("-")[0] == entry.solver, (name, alloc.policy)
    if "allotted" in entry.accounting:
        assert alloc.budgets.sum() <= 300 * ctx.n
    else:  # planned on expected spend: caps may add up to more than the budget
        assert alloc.info["expected_spend"] <= 300 * ctx.n
    assert (alloc.samples is not None) == (entry.samples is not None)


def test_generic_entries_allocate_the_curves_they_name(ctx: FitContext) -> None:
    from shadowprice import allocate

    for entry in EVAL_POLICIES.values():
        if entry.run is not None or entry.live is not None:
            continue
        options = {"grid": ctx.grid} if entry.grid else {}
        if entry.samples is not None:
            options["samples"] = entry.samples
        expected = allocate(ctx.curves(entry.curves), 200 * ctx.n, entry.solver, **options)
        got = entry.allocation(ctx, 200 * ctx.n)
        np.testing.assert_array_equal(got.budgets, expected.budgets, err_msg=entry.name)


def test_references_and_unknown_names_are_refused(ctx: FitContext) -> None:
    with pytest.raises(ValueError, match="true curves"):
        run_policy("true-clear", ctx, 1000)
    with pytest.raises(ValueError, match="unknown evaluation policy"):
        run_policy("clear-typo", ctx, 1000)
    with pytest.raises(KeyError, match="clear-typo"):
        policy_info("clear-typo")
    with pytest.raises(ValueError, match="no 'true' curves"):
        ctx.curves("true")
    assert policy_info("true-clear") is REFERENCES["true-clear"]
    with pytest.raises(ValueError, match="curves must be one of"):
        EvalPolicy("x", "y", curves="smooth", method="market")


def test_readme_says_which_clear_is_which() -> None:
    text = README.read_text(encoding="utf-8")
    for name in EVAL_POLICIES:
        assert f"`{name}`" in text, name
    # The method and the two policies that share the word are told apart.
    assert 'allocate(…, method="clear")' in text and "`clear-paper`" in text


def test_run_takes_its_policies_and_their_methods_from_the_registry() -> None:
    from shadowprice.allocate import METHODS
    from shadowprice.cli.run_cmd import _POLICIES

    runnable = {name: p.run_method for name, p in EVAL_POLICIES.items() if p.run_method}
    assert set(_POLICIES) == set(runnable)
    assert all(m in METHODS or m == "live" for m in runnable.values())
    # The recommendation: the market price on fitted curves, the clear method on given ones.
    assert (EVAL_POLICIES["clear"].method, runnable["clear"]) == ("market", "clear")
