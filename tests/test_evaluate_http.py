"""``evaluate --engine http`` scores what the simulator scores: the same policies through the
one driver, but over a real socket to a replay server, the real client and a real journal.

At concurrency 1 the two engines see the same events in the same order, so every per-query
outcome (answered, tokens spent and reserved, requests, finished) is identical, on the bundled
traces and on any trace set; above it the order requests end in is the server's, and the
results agree within the bootstrap interval.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.evaluate import EVAL_POLICIES, evaluate
from shadowprice.evaluate.policies import FitContext
from shadowprice.evaluate.simulate import WorldResult, drive_worlds, sample_worlds
from shadowprice.evaluate.splits import split_half
from shadowprice.traces import TraceSet, load_traces

FIELDS = ("answered", "spent", "allotted", "requests", "finished")


def outcomes(runs: list[WorldResult]) -> dict[str, np.ndarray]:
    return {f: np.stack([getattr(r, f) for r in runs]) for f in FIELDS}


def both_engines(
    ctx: FitContext, policy: str, per_query: float, concurrency: int = 1, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    total = max(1, round(per_query * ctx.n))
    make = EVAL_POLICIES[policy].executor(ctx, total)
    worlds = sample_worlds(ctx.score, seed=seed)
    sim, http = (
        outcomes(drive_worlds(make, ctx.score, worlds, total, concurrency=c, engine=e))
        for e, c in (("sim", concurrency), ("http", concurrency))
    )
    return sim, http


def test_http_equals_the_simulator_query_by_query_on_the_bundled_traces() -> None:
    ts = load_traces("qwen25-math-math100")
    ctx = FitContext(*split_half(ts, 0))
    for policy in ("uniform", "clear", "clear-live"):
        for per_query in (150, 300):
            sim, http = both_engines(ctx, policy, per_query)
            for f in FIELDS:
                np.testing.assert_array_equal(http[f], sim[f], err_msg=f"{policy} {per_query} {f}")
            assert sim["requests"].sum() > 0


def test_the_command_gives_the_same_table_over_http_at_concurrency_1() -> None:
    args = [
        "evaluate",
        "bundled:qwen25-math-math100",
        "--accounting",
        "spent",
        "--policies",
        "uniform,clear-live,oracle",
        "--per-query",
        "200",
        "--concurrency",
        "1",
        "--format",
        "json",
        "--n-boot",
        "200",
    ]
    runner = CliRunner()
    sim = runner.invoke(app, args)
    http = runner.invoke(app, [*args, "--engine", "http"])
    assert sim.exit_code == 0 and http.exit_code == 0, (sim.output, http.output)
    assert json.loads(http.stdout) == json.loads(sim.stdout)


def test_above_concurrency_1_the_engines_agree_within_the_bootstrap_interval() -> None:
    ts = load_traces("qwen25-math-math100")
    kw = {"accounting": "spent", "concurrency": 8, "n_boot": 400}
    sim = evaluate(ts, [200], ["uniform", "clear-live"], **kw).set_index("policy")  # type: ignore[arg-type]
    http = evaluate(ts, [200], ["uniform", "clear-live"], engine="http", **kw)  # type: ignore[arg-type]
    http = http.set_index("policy")
    assert ((http.accuracy >= sim.accuracy_ci_low) & (http.accuracy <= sim.accuracy_ci_high)).all()
    assert (http.tokens_spent <= 200 + 1e-9).all()


@st.composite
def trace_sets(draw: st.DrawFn) -> TraceSet:
    n = draw(st.integers(1, 6))
    records = []
    for i in range(n):
        k = draw(st.integers(1, 3))
        samples = [
            {"tokens": draw(st.integers(1, 300)), "correct": draw(st.booleans())} for _ in range(k)
        ]
        record = {"id": f"q{i}", "samples": samples}
        if draw(st.booleans()):
            record["answer"] = str(draw(st.integers(-99, 999)))
        records.append(record)
    return TraceSet(records)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    trace_sets(),
    st.sampled_from(["uniform", "clear-live", "clear-spent"]),
    st.integers(5, 400),
    st.integers(0, 3),
)
def test_http_equals_the_simulator_on_any_trace_set(
    ts: TraceSet, policy: str, per_query: int, seed: int
) -> None:
    ctx = FitContext(ts, ts)  # split none: the policy fits on the samples it is scored on
    sim, http = both_engines(ctx, policy, per_query, seed=seed)
    for f in FIELDS:
        np.testing.assert_array_equal(http[f], sim[f], err_msg=f)


def test_evaluate_refuses_an_unknown_engine() -> None:
    ts = load_traces("qwen25-math-math100")
    with pytest.raises(ValueError, match="engine must be one of sim, http"):
        evaluate(ts, [100], ["uniform"], accounting="spent", engine="gpu")
    r = CliRunner().invoke(app, ["evaluate", "bundled:qwen25-math-math100", "--engine", "gpu"])
    assert r.exit_code == 2 and "--engine must be one of sim, http" in r.output


def test_every_result_reports_the_same_core_under_the_same_names() -> None:
    """A run's summary, a world's run and a replay share the core fields (Scored), each with
    one summary() for JSON that keeps its own field names."""
    from shadowprice import allocate
    from shadowprice.engine.records import RunSummary, Scored
    from shadowprice.engine.run import summarize
    from shadowprice.evaluate.replay import replay

    ts = load_traces("qwen25-math-math100")
    ctx = FitContext(*split_half(ts, 0))
    world = drive_worlds(
        EVAL_POLICIES["uniform"].executor(ctx, 20_000), ctx.score, sample_worlds(ctx.score), 20_000
    )[0]
    rep = replay(allocate(ctx.shrunk, 20_000, method="market", grid=ctx.grid), ctx.score)
    run = summarize(
        [{"id": "a", "status": "done", "budget": 30, "tokens": 20, "gold": "1", "correct": True},
         {"id": "b", "status": "abandoned", "budget": 0, "tokens": 0, "gold": "2"}],
        100,
    )  # fmt: skip
    for result in (world, rep, run):
        assert isinstance(result, Scored)
        assert result.within_budget and 0 <= result.abandonment <= 1
        assert result.tokens_spent <= result.budget and result.accuracy is not None
        json.dumps(result.summary())
    assert isinstance(run, RunSummary)
    assert (run.tokens_spent, run.tokens_allotted, run.abandonment) == (20, 30, 0.5)
    assert run.summary()["tokens_used"] == run["tokens_used"] == 20  # the JSON names stay
    assert world.budget == 20_000 and rep.budget == 20_000
