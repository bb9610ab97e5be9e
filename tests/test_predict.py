"""Threshold predictor: estimator round trip, intervals, calibration, expected curves, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from typer.testing import CliRunner

from shadowprice import allocate
from shadowprice.cli import app
from shadowprice.curves import GammaSCurve, ShiftedSurge, TabulatedCurve
from shadowprice.predict import (
    Encoder,
    HFEncoder,
    SentenceEncoder,
    ThresholdPredictor,
    expected_curves,
    load_predictor,
)
from shadowprice.predict.features import STRUCTURE_NAMES, StructuralFeatures, check_texts

WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "bread", "light", "sand"]


def synthetic(n: int, seed: int = 0, noise: float = 0.3) -> tuple[list[str], np.ndarray]:
    """Texts whose log-threshold is linear in the number of 'step' words, plus known noise."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 12, n)
    texts = [
        " ".join(["step"] * int(j) + list(rng.choice(WORDS, 6))) + f" case {i}"
        for i, j in enumerate(k)
    ]
    tau = np.exp(4.5 + 0.15 * k + noise * rng.standard_normal(n))
    return texts, tau


@pytest.fixture(scope="module")
def fitted() -> ThresholdPredictor:
    x, y = synthetic(600)
    return ThresholdPredictor(word_features=2000, char_features=0).fit(x, y)


def test_fit_predict_save_load_round_trip(fitted: ThresholdPredictor, tmp_path) -> None:
    x, _ = synthetic(20, seed=1)
    p = fitted.predict_distribution(x)
    assert p.median.shape == p.lower.shape == p.upper.shape == p.sigma.shape == (20,)
    d = fitted.save(tmp_path / "m")
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["n_train"] == 600 and "scikit-learn" in meta["versions"]
    q = load_predictor(d).predict_distribution(x)
    np.testing.assert_allclose(q.median, p.median)
    np.testing.assert_allclose(q.upper, p.upper)


def test_intervals_are_ordered(fitted: ThresholdPredictor) -> None:
    x, _ = synthetic(50, seed=2)
    p = fitted.predict_distribution(x)
    assert np.all(p.lower < p.median) and np.all(p.median < p.upper)
    wide = fitted.predict_distribution(x, coverage=0.95)
    assert np.all(wide.lower <= p.lower) and np.all(wide.upper >= p.upper)
    qs = p.quantile([0.1, 0.5, 0.9])
    assert qs.shape == (50, 3) and np.all(np.diff(qs, axis=1) > 0)


def test_calibrated_on_synthetic_truth(fitted: ThresholdPredictor) -> None:
    # Held-out data from the same process: 80 % intervals cover ~80 %, sigma ~ true noise.
    x, tau = synthetic(800, seed=3)
    p = fitted.predict_distribution(x)
    cover = np.mean((tau >= p.lower) & (tau <= p.upper))
    assert 0.72 <= cover <= 0.88
    assert 0.25 <= fitted.sigma_ <= 0.4
    from scipy.stats import spearmanr

    assert spearmanr(p.median, tau)[0] > 0.7


def test_calibrate_maps_proxy_scale() -> None:
    x, tau = synthetic(400, seed=4)
    m = ThresholdPredictor(word_features=2000, char_features=0).fit(x, tau / 3.0)
    xc, tc = synthetic(200, seed=5)
    m.calibrate(xc, tc)
    med = m.predict(xc)
    assert 0.8 < np.median(tc / med) < 1.25
    assert m.metadata_["calibrated_on"]["n"] == 200


def test_bad_input_errors() -> None:
    with pytest.raises(TypeError, match="single string"):
        check_texts("one text")
    with pytest.raises(ValueError, match="empty"):
        check_texts(["ok", "  "])
    x, tau = synthetic(20)
    with pytest.raises(ValueError, match="positive"):
        ThresholdPredictor(char_features=0).fit(x, np.r_[tau[:-1], -1.0])
    with pytest.raises(ValueError, match="one value per text"):
        ThresholdPredictor(char_features=0).fit(x, tau[:5])
    with pytest.raises(NotFittedError, match="not fitted"):
        ThresholdPredictor().predict(x)


def test_structural_features_shape() -> None:
    f = StructuralFeatures().fit_transform(["What is $\\frac{1}{2}+3$?", "Find all primes."])
    assert f.shape == (2, len(STRUCTURE_NAMES)) and np.isfinite(f).all()


def test_expected_curve_properties() -> None:
    med = np.array([100.0, 300.0, 900.0])
    c = expected_curves(med, 0.4, "gamma", beta=0.02, p=0.8)
    assert isinstance(c, TabulatedCurve)
    v = c.values
    assert np.all(np.diff(v, axis=1) >= -1e-12)  # monotone
    assert v.min() >= 0 and v.max() <= 0.8 + 1e-9  # between 0 and the ceiling
    assert np.all(v[:, -1] > 0.75)  # reaches (near) the ceiling at the top of the grid
    # Smoothing: at the point threshold the expected curve is already positive.
    point = GammaSCurve(med, 0.02, 0.8)
    assert np.all(c.value(med) > point.value(med))
    # sigma = 0 gives the closed-form point curve; the surge stays below its ceiling.
    assert isinstance(expected_curves(med, 0.0, "surge"), ShiftedSurge)
    s = expected_curves(med, 0.3, "surge", alpha=1.5, beta=0.005)
    assert s.values.min() >= 0 and s.values.max() <= 1.5 / (0.005 * np.e) + 1e-9
    a = allocate(c, 900, "clear", grid=c.grid)
    assert a.budgets.sum() <= 900


def test_predict_curves_point_and_expected(fitted: ThresholdPredictor) -> None:
    x, _ = synthetic(10, seed=6)
    pt = fitted.predict_curves(x, "surge", uncertainty=False)
    assert isinstance(pt, ShiftedSurge) and pt.n == 10
    ex = fitted.predict_curves(x, "gamma", uncertainty=True, beta=0.02, p=0.9)
    assert isinstance(ex, TabulatedCurve) and ex.n == 10


def test_encoders_are_optional_and_local_only(tmp_path) -> None:
    assert isinstance(SentenceEncoder(tmp_path), Encoder)
    with pytest.raises((ImportError, FileNotFoundError)):
        SentenceEncoder(tmp_path / "missing").encode(["x"])
    with pytest.raises((ImportError, FileNotFoundError)):
        HFEncoder(tmp_path / "missing").encode(["x"])

    class Fake:
        def encode(self, texts):
            return np.array([[len(t), t.count("step")] for t in texts], float)

    x, tau = synthetic(100, seed=7)
    m = ThresholdPredictor(encoder=Fake()).fit(x, tau)
    assert m.predict(x[:3]).shape == (3,)


def _jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_fit_and_predict(tmp_path) -> None:
    x, tau = synthetic(60, seed=8)
    _jsonl(
        tmp_path / "train.jsonl",
        [{"text": t, "target": float(y)} for t, y in zip(x, tau, strict=True)],
    )
    _jsonl(tmp_path / "q.jsonl", [{"id": f"q{i}", "question": t} for i, t in enumerate(x[:4])])
    r = CliRunner().invoke(
        app, ["predictor", "fit", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "m")]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, ["predictor", "predict", str(tmp_path / "m"), str(tmp_path / "q.jsonl")]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["id"] for row in rows] == ["q0", "q1", "q2", "q3"]
    assert all(row["tau_low"] < row["tau"] < row["tau_high"] for row in rows)


@pytest.mark.parametrize(
    "rows, msg",
    [
        ([{"text": "a b", "target": "many"}], "number of tokens"),
        ([{"text": "a b", "target": -3}], "positive"),
        ([{"target": 30}], 'field "question" is missing'),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, rows, msg) -> None:
    _jsonl(tmp_path / "bad.jsonl", rows * 3)
    r = CliRunner().invoke(
        app, ["predictor", "fit", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "m")]
    )
    assert r.exit_code == 2
    assert msg in r.output


def test_cli_needs_data_or_bundled(tmp_path) -> None:
    r = CliRunner().invoke(app, ["predictor", "fit", "-o", str(tmp_path / "m")])
    assert r.exit_code == 2
    r = CliRunner().invoke(
        app, ["predictor", "predict", str(tmp_path / "nope"), str(tmp_path / "q.jsonl")]
    )
    assert r.exit_code == 2


def test_evaluate_split_queries_with_the_text_predictor_beats_uniform_when_scarce():
    """Cross-fitted end to end through evaluate(split='queries') (small proxy sets for speed)."""
    from shadowprice.evaluate import evaluate
    from shadowprice.evaluate.prediction import text_curve_predictor
    from shadowprice.traces import REAL_TRACE_SET, load_traces

    ts = load_traces(REAL_TRACE_SET)
    pred = text_curve_predictor(uncertainty=True, proxy_sets=("aime24", "amc23", "math500"))
    df = evaluate(
        ts, [150], ["uniform", "clear"], split="queries", folds=2, n_boot=50, predictor=pred
    )
    acc = df.set_index("policy")["accuracy"]
    assert acc["clear"] > acc["uniform"]
