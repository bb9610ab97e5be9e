"""``shadowprice demo``: the bundled real traces (default) and the synthetic stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.evaluate.demo import (
    DemoPolicy,
    SyntheticSetting,
    TraceSetting,
    default_setting,
    paper_balanced,
    run_demo,
    surge_beta,
)
from shadowprice.evaluate.policies import EVAL_POLICIES
from shadowprice.evaluate.streams import load_stream, make_stream

runner = CliRunner()
SCARCE = (100, 200, 300)


@pytest.fixture(scope="module")
def scarce(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic setting (true curves known)."""
    return run_demo(
        tmp_path_factory.mktemp("demo"), budgets=SCARCE, setting=default_setting("synthetic")
    )


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    """The default setting: bundled real traces, held out."""
    return run_demo(tmp_path_factory.mktemp("real"), budgets=SCARCE + (1000,))


def test_default_demo_is_real_traces(real) -> None:
    assert "REAL" in real.description and real.setting.startswith("real traces")
    assert {r["policy"] for r in real.rows} == {"clear", "uniform", "clear-paper", "oracle"}
    assert real.png_path is not None and real.png_path.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(real.json_path.read_text())
    assert len(data["table"]) == 4 and "clear-paper" in data["table"][0]
    # Labels come from the policy registry, not from the demo.
    labels = {r["policy"]: r["label"] for r in real.rows}
    assert labels == {k: EVAL_POLICIES[k].legend for k in labels}


def test_real_clear_beats_uniform_and_oracle_bounds(real) -> None:
    clear, uniform = real.accuracy("clear"), real.accuracy("uniform")
    oracle, paper = real.accuracy("oracle"), real.accuracy("clear-paper")
    for b in SCARCE:
        assert clear[b] > uniform[b] + 5.0, (b, clear[b], uniform[b])
        assert clear[b] > paper[b], b  # the shrunk curves beat the surge recipe when scarce
    assert clear[200] > 3 * uniform[200]
    for b in SCARCE + (1000,):
        for pol in ("clear", "uniform", "clear-paper"):
            assert oracle[b] >= real.accuracy(pol)[b] - 1e-9, (b, pol)
    # Not scarce: CLEAR ties uniform (never worse by more than a query).
    assert clear[1000] >= uniform[1000] - 1.0
    rows = {(r["budget_per_query"], r["policy"]): r for r in real.rows}
    assert rows[100, "clear"]["abandoned"] > 50 and rows[100, "uniform"]["abandoned"] == 0


def test_trace_setting_is_held_out() -> None:
    """Fit and score halves are disjoint samples of the same queries."""
    from shadowprice.traces import REAL_TRACE_SET, load_traces

    st = TraceSetting(load_traces(REAL_TRACE_SET), seed=3)
    fit, score = st._ctx.fit, st._ctx.score
    assert fit.ids == score.ids and st.n == 100
    assert (fit.n_samples() + score.n_samples() == 8).all()
    with pytest.raises(ValueError, match="setting"):
        default_setting("nope")


def test_demo_writes_files(scarce) -> None:
    assert scarce.png_path is not None and scarce.png_path.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(scarce.json_path.read_text())
    assert {r["policy"] for r in data["rows"]} == {
        "clear-paper",
        "uniform",
        "true-market",
        "true-oracle",
    }
    assert data["headline"] == "clear-paper"
    assert len(data["table"]) == len(SCARCE)
    assert "SYNTHETIC" in data["description"]


def test_clear_beats_uniform_when_scarce(scarce) -> None:
    clear, uniform = scarce.accuracy("clear-paper"), scarce.accuracy("uniform")
    for b in SCARCE:
        assert clear[b] > uniform[b] + 5.0, (b, clear[b], uniform[b])
    # The paper's headline: several-fold gains in the scarce regime.
    assert clear[200] > 3 * uniform[200]


def test_oracle_bounds_and_abandonment(scarce) -> None:
    rows = {(r["budget_per_query"], r["policy"]): r for r in scarce.rows}
    for b in SCARCE:
        assert rows[b, "true-oracle"]["accuracy"] >= rows[b, "clear-paper"]["accuracy"] - 1e-9
        assert rows[b, "true-oracle"]["accuracy"] >= rows[b, "uniform"]["accuracy"] - 1e-9
        assert rows[b, "uniform"]["abandoned"] == 0.0
        for pol in ("clear-paper", "uniform", "true-market", "true-oracle"):
            assert rows[b, pol]["spent_per_query"] <= b + 1e-9
    # Abandonment falls as the budget grows, as in the paper.
    ab = [rows[b, "clear-paper"]["abandoned"] for b in SCARCE]
    assert ab == sorted(ab, reverse=True) and ab[0] > 50


def test_table_has_paper_reference(scarce) -> None:
    t = scarce.table()
    assert [r["budget_per_query"] for r in t] == list(SCARCE)
    assert t[0]["paper_clear"] == paper_balanced()[100][0] == 10.2  # the bundled CSV's row
    assert t[0]["ratio"] is None or t[0]["ratio"] > 1  # uniform ~0 at 100 tokens/query
    # The ratio and abandonment columns describe the headline policy, clear-paper here.
    rows = {(r["budget_per_query"], r["policy"]): r for r in scarce.rows}
    assert t[0]["clear_abandoned"] == rows[100, "clear-paper"]["abandoned"]


def test_surge_beta_is_the_90pct_point() -> None:
    s = load_stream()
    b = surge_beta(s)
    # 1/beta_s = mean tokens above threshold to reach 90 % of the solvable accuracy.
    excess = 1 / b
    frac = s.truth.value(s.tau + excess) / s.truth.p
    assert 0.6 < np.median(frac) <= 1.0
    assert surge_beta(s, 1.0) == pytest.approx(1 / np.mean(1 / s.truth.beta))


def test_custom_setting_plugs_in(tmp_path: Path) -> None:
    """A different data source only needs n, policies() and score()."""
    inner = SyntheticSetting(make_stream("mostly-easy", 120, seed=1))

    class Mini:
        name = "mini"
        description = "two policies"
        n = inner.n

        def policies(self) -> list[DemoPolicy]:
            return [p for p in inner.policies() if p.key in ("clear-paper", "uniform")]

        def score(self, allocation) -> float:
            return inner.score(allocation)

    r = run_demo(tmp_path, budgets=(150,), setting=Mini(), plot=False)
    assert r.png_path is None and {x["policy"] for x in r.rows} == {"clear-paper", "uniform"}
    with pytest.raises(ValueError, match="budgets"):
        run_demo(tmp_path, budgets=(0,))


def test_cli_demo_text_and_json(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--budgets", "100,300"])
    assert r.exit_code == 0, r.output
    assert "CLEAR" in r.stdout and "uniform" in r.stdout and "REAL" in r.stdout
    assert "demo.png" in r.stdout and (tmp_path / "d" / "demo.png").exists()
    r = runner.invoke(
        app,
        [
            "demo",
            "--out",
            str(tmp_path / "s"),
            "--budgets",
            "100",
            "--setting",
            "synthetic",
            "--no-plot",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.stdout and "market" in r.stdout
    r = runner.invoke(
        app,
        ["demo", "--out", str(tmp_path / "j"), "--budgets", "200", "--format", "json", "--no-plot"],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["table"][0]["budget_per_query"] == 200 and d["png_path"] is None
    r = runner.invoke(app, ["demo", "--budgets", "abc"])
    assert r.exit_code == 2 and "--per-query" in r.stderr
    r = runner.invoke(app, ["demo", "--setting", "both"])
    assert r.exit_code == 2 and "--setting" in r.stderr


def test_full_demo_has_every_budget(tmp_path: Path) -> None:
    r = run_demo(tmp_path)
    assert len(r.table()) == 6


def test_live_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "shadowprice.engine", None)  # import now fails
    r = runner.invoke(
        app, ["demo", "--out", str(tmp_path), "--budgets", "100", "--no-plot", "--live"]
    )
    assert r.exit_code == 2 and "--live" in r.stderr
    monkeypatch.undo()

    from shadowprice import engine

    def boom(*args, **kwargs):
        raise RuntimeError("no server")

    monkeypatch.setattr(engine, "live_demo", boom)
    r = runner.invoke(
        app, ["demo", "--out", str(tmp_path), "--budgets", "100", "--no-plot", "--live"]
    )
    assert r.exit_code == 2 and "no server" in r.stderr


def test_sample_problems_validates_and_never_swallows(monkeypatch: pytest.MonkeyPatch) -> None:
    from shadowprice.engine.live_demo import sample_problems
    from shadowprice.traces import load_problems

    rows = sample_problems(3)
    gsm = load_problems("gsm8k")
    assert rows == [(gsm.id[i], gsm.question[i], gsm.answer[i]) for i in range(3)]
    for bad in (0, -1, len(gsm) + 1, 5000, 2.0, True):
        with pytest.raises(ValueError, match=f"from 1 to {len(gsm)}"):
            sample_problems(bad)  # type: ignore[arg-type]

    def broken(name: str):
        raise OSError("bundled data unreadable")

    monkeypatch.setattr("shadowprice.traces.load_problems", broken)
    with pytest.raises(OSError, match="unreadable"):
        sample_problems(3)


def test_live_demo_keeps_its_import_paths() -> None:
    import importlib

    from shadowprice.engine import live_demo

    module = importlib.import_module("shadowprice.engine.live_demo")
    assert callable(live_demo) and live_demo is module.live_demo
    assert callable(module.sample_problems)


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    import shadowprice

    assert shadowprice.__version__ == version("shadowprice")
