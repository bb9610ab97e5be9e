"""The cross-fitted predictor experiments (evaluate.prediction) and the package layout.

Small and fast: two folds, a proxy model on two small problem sets with word features only,
one or two budgets. The full study is ``tools/prediction_study.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shadowprice import allocate
from shadowprice.curves import GammaSCurve
from shadowprice.evaluate.prediction import (
    ALLOCATION_POLICIES,
    compare_signals,
    crossfit_allocation,
    crossfit_predictions,
    interval_quality,
)
from shadowprice.evaluate.replay import replay
from shadowprice.fit import SurgeFitter
from shadowprice.predict.data import normalize_text, proxy_problems, traced_thresholds
from shadowprice.predict.default import fit_proxy
from shadowprice.traces import REAL_TRACE_SET, load_traces

FAST = {"word_features": 2000, "char_features": 0}
SETS = ("aime24", "minerva")


@pytest.fixture(scope="module")
def traces():
    return load_traces(REAL_TRACE_SET)


@pytest.fixture(scope="module")
def pred(traces) -> pd.DataFrame:
    qs = [str(q) for q in traces.questions()]
    proxy = fit_proxy(qs, sets=SETS, **FAST)
    return crossfit_predictions(traces, folds=2, seed=0, proxy=proxy)


def test_training_sets_exclude_the_scored_texts(traces) -> None:
    tr = traced_thresholds(traces)
    assert len(tr) == traces.n and tr["solved"].sum() == 96
    assert np.all(tr.loc[tr["solved"], "tau"] > 0)
    some = proxy_problems(("math500",))
    dropped = proxy_problems(("math500",), exclude=["  " + some["question"][0].upper() + " "])
    assert len(dropped) == len(some) - 1  # matched after normalisation
    assert normalize_text(" A\n\tB  c ") == "a b c"


def test_crossfit_predictions_scores_each_query_once(pred) -> None:
    assert set(pred["fold"]) == {0, 1} and len(pred) == 100
    assert np.all(pred["lower"] < pred["median"]) and np.all(pred["median"] < pred["upper"])
    assert np.all(pred["sigma"] > 0)
    q = interval_quality(pred)
    assert q["n"] == 96 and 0 <= q["coverage"] <= 1
    assert -1 <= q["spearman"] <= 1 and q["median_abs_log_error"] > 0


def test_crossfit_allocation_rows_and_its_uniform_row(traces, pred) -> None:
    df = crossfit_allocation(budgets=(150,), traces=traces, folds=2, n_boot=20, predictions=pred)
    assert list(df["policy"]) == list(ALLOCATION_POLICIES)
    assert df["accuracy"].between(0, 1).all()
    row = df.set_index("policy")
    assert row.loc["clear-oracle", "gain_kept"] == pytest.approx(1.0)
    assert row.loc["uniform", "vs_uniform"] == 0.0
    assert row.loc["clear-oracle", "accuracy"] > row.loc["uniform", "accuracy"]
    # The uniform row, recomputed directly: 150 tokens per query in each fold, replayed.
    acc = np.zeros(traces.n)
    for k in (0, 1):
        idx = np.flatnonzero(pred["fold"].to_numpy() == k)
        curves = GammaSCurve(np.full(idx.size, 100.0), 0.05, 0.9)
        al = allocate(curves, round(150 * idx.size), "uniform")
        acc[idx] = replay(al, traces.subset(idx), n_boot=0).per_query
    assert row.loc["uniform", "accuracy"] == pytest.approx(acc.mean())


def test_crossfit_allocation_surge_family_runs(traces, pred) -> None:
    df = crossfit_allocation(
        budgets=(200,), traces=traces, folds=2, n_boot=10, family="surge", predictions=pred
    )
    assert len(df) == len(ALLOCATION_POLICIES) and df["accuracy"].between(0, 1).all()
    assert SurgeFitter().fit(traces).beta_ > 0


def test_compare_signals_small(traces) -> None:
    df = compare_signals(traces, folds=2, proxy_sets=SETS, **FAST)
    assert len(df) == 8 and set(df.columns) == {"signal", "spearman", "n", "from_text"}
    assert df["spearman"].between(-1, 1).all() and (df["n"] == 96).all()
    # The known benchmark labels are real signals on these traces.
    level = df[df["signal"].str.startswith("MATH level (known")]["spearman"].item()
    assert level > 0.3


def test_predict_imports_nothing_from_evaluate_engine_or_cli() -> None:
    root = Path(__file__).resolve().parents[1] / "src" / "shadowprice" / "predict"
    bad = []
    for f in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = "." * node.level + (node.module or "")
                names = [mod]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.lstrip(".").split(".")
                top = parts[1] if name.startswith("shadowprice.") else parts[0]
                if name.startswith("..") or name.startswith("shadowprice."):
                    if top in ("evaluate", "engine", "cli"):
                        bad.append(f"{f.name}: {name}")
    assert not bad, bad
    assert not (root / "training.py").exists()
