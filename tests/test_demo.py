"""``shadowprice demo`` on the bundled synthetic stream."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.demo import (
    PAPER_BALANCED,
    DemoPolicy,
    SyntheticSetting,
    run_demo,
    surge_beta,
)
from shadowprice.evaluate.streams import load_stream, make_stream

runner = CliRunner()
SCARCE = (100, 200, 300)


@pytest.fixture(scope="module")
def scarce(tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo"), budgets=SCARCE)


def test_demo_runs_quickly_and_writes_files(scarce) -> None:
    assert scarce.seconds < 15
    assert scarce.png_path is not None and scarce.png_path.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(scarce.json_path.read_text())
    assert {r["policy"] for r in data["rows"]} == {"clear", "uniform", "market", "oracle"}
    assert len(data["table"]) == len(SCARCE)
    assert "SYNTHETIC" in data["description"]


def test_clear_beats_uniform_when_scarce(scarce) -> None:
    clear, uniform = scarce.accuracy("clear"), scarce.accuracy("uniform")
    for b in SCARCE:
        assert clear[b] > uniform[b] + 5.0, (b, clear[b], uniform[b])
    # The paper's headline: several-fold gains in the scarce regime.
    assert clear[200] > 3 * uniform[200]


def test_oracle_bounds_and_abandonment(scarce) -> None:
    rows = {(r["budget_per_query"], r["policy"]): r for r in scarce.rows}
    for b in SCARCE:
        assert rows[b, "oracle"]["accuracy"] >= rows[b, "clear"]["accuracy"] - 1e-9
        assert rows[b, "oracle"]["accuracy"] >= rows[b, "uniform"]["accuracy"] - 1e-9
        assert rows[b, "uniform"]["abandoned"] == 0.0
        for pol in ("clear", "uniform", "market", "oracle"):
            assert rows[b, pol]["spent_per_query"] <= b + 1e-9
    # Abandonment falls as the budget grows, as in the paper.
    ab = [rows[b, "clear"]["abandoned"] for b in SCARCE]
    assert ab == sorted(ab, reverse=True) and ab[0] > 50


def test_table_has_paper_reference(scarce) -> None:
    t = scarce.table()
    assert [r["budget_per_query"] for r in t] == list(SCARCE)
    assert t[0]["paper_clear"] == PAPER_BALANCED[100][0]
    assert t[0]["ratio"] is None or t[0]["ratio"] > 1  # uniform ~0 at 100 tokens/query


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
            return [p for p in inner.policies() if p.key in ("clear", "uniform")]

        def score(self, allocation) -> float:
            return inner.score(allocation)

    r = run_demo(tmp_path, budgets=(150,), setting=Mini(), plot=False)
    assert r.png_path is None and {x["policy"] for x in r.rows} == {"clear", "uniform"}
    with pytest.raises(ValueError, match="budgets"):
        run_demo(tmp_path, budgets=(0,))


def test_cli_demo_text_and_json(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--budgets", "100,300"])
    assert r.exit_code == 0, r.output
    assert "CLEAR" in r.stdout and "uniform" in r.stdout and "SYNTHETIC" in r.stdout
    assert "demo.png" in r.stdout and (tmp_path / "d" / "demo.png").exists()
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "j"), "--budgets", "200",
                            "--format", "json", "--no-plot"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["table"][0]["budget_per_query"] == 200 and d["png_path"] is None
    assert time.perf_counter() - t0 < 30
    r = runner.invoke(app, ["demo", "--budgets", "abc"])
    assert r.exit_code == 2 and "--budgets" in r.stderr


def test_full_demo_under_30s(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    r = run_demo(tmp_path)
    assert time.perf_counter() - t0 < 30
    assert len(r.table()) == 6


def test_live_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "shadowprice.engine", None)  # import now fails
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "--budgets", "100", "--no-plot",
                            "--live"])
    assert r.exit_code == 2 and "--live" in r.stderr
    monkeypatch.undo()

    from shadowprice import engine

    def boom(*args, **kwargs):
        raise RuntimeError("no server")

    monkeypatch.setattr(engine, "live_demo", boom)
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "--budgets", "100", "--no-plot",
                            "--live"])
    assert r.exit_code == 2 and "no server" in r.stderr
