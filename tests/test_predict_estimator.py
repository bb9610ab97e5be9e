"""ThresholdPredictor as a scikit-learn estimator: clone, params, Pipeline, GridSearchCV,
validation in fit, saved-model checks, and the bundled model's loader."""

from __future__ import annotations

import json
import math
import warnings
from importlib.resources import as_file, files
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from shadowprice.predict import ThresholdPredictor, default_predictor, load_predictor
from shadowprice.predict import default as default_module
from shadowprice.predict.data import normalize_text
from shadowprice.predict.threshold import FORMAT_VERSION, Prediction

WORDS = ["apple", "river", "stone", "cloud", "green", "table", "music", "bread", "light", "sand"]


def synthetic(n: int, seed: int = 0, noise: float = 0.3) -> tuple[list[str], np.ndarray]:
    """Texts whose log-threshold is linear in the number of 'step' words, plus known noise."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 12, n)
    texts = [
        " ".join(["Step"] * int(j) + list(rng.choice(WORDS, 6))) + f"   case {i}"
        for i, j in enumerate(k)
    ]
    tau = np.exp(4.5 + 0.15 * k + noise * rng.standard_normal(n))
    return texts, tau


def small(**params: object) -> ThresholdPredictor:
    """A fast configuration (word n-grams only, a small vocabulary)."""
    return ThresholdPredictor(word_features=500, char_features=0, **params)  # type: ignore[arg-type]


def normalize_all(texts: list[str]) -> list[str]:
    return [normalize_text(t) for t in texts]


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray]:
    return synthetic(120)


# -- the estimator protocol ----------------------------------------------------------------------
def test_init_stores_hyperparameters_untouched() -> None:
    # No validation or conversion in __init__: a bad value is kept as given (fit rejects it).
    enc = object()
    m = ThresholdPredictor(alpha="3", coverage=2, cv=1.5, encoder=enc)  # type: ignore[arg-type]
    assert m.alpha == "3" and m.coverage == 2 and m.cv == 1.5 and m.encoder is enc
    assert m.get_params() == {
        "alpha": "3",
        "coverage": 2,
        "cv": 1.5,
        "word_features": 50_000,
        "char_features": 50_000,
        "random_state": 0,
        "encoder": enc,
    }


def test_clone_and_set_params_round_trip(data) -> None:
    m = small(alpha=0.7, cv=3)
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params()
    assert m.set_params(**m.get_params()) is m
    assert m.set_params(alpha=1.5).alpha == 1.5
    with pytest.raises(ValueError, match="Invalid parameter"):
        m.set_params(nope=1)
    # Cloning a fitted model gives an unfitted one with the same hyper-parameters.
    x, y = data
    fitted = small().fit(x, y)
    fresh = clone(fitted)
    assert not hasattr(fresh, "regressor_") and fresh.get_params() == fitted.get_params()
    assert "ThresholdPredictor" in repr(fitted)


def test_predict_returns_median_tokens_and_named_methods_give_the_rest(data) -> None:
    x, y = data
    m = small().fit(x, y)
    med = m.predict(x[:7])
    assert isinstance(med, np.ndarray) and med.shape == (7,) and med.dtype == np.float64
    np.testing.assert_allclose(med, np.exp(m.predict_log(x[:7])))
    lo, hi = m.predict_interval(x[:7])
    assert np.all(lo < med) and np.all(med < hi)
    lo95, hi95 = m.predict_interval(x[:7], coverage=0.95)
    assert np.all(lo95 <= lo) and np.all(hi95 >= hi)
    dist = m.predict_distribution(x[:7])
    assert isinstance(dist, Prediction) and dist.coverage == 0.8
    np.testing.assert_array_equal(dist.median, med)
    np.testing.assert_array_equal(dist.lower, lo)
    with pytest.raises(ValueError, match=r"coverage must be a number in \(0, 1\)"):
        m.predict_interval(x[:2], coverage=1.0)
    # score is R² on log tokens: the synthetic signal is strong, a shuffled target is not.
    assert m.score(x, y) > 0.5
    assert m.score(x, np.random.default_rng(1).permutation(y)) < m.score(x, y)


def test_runs_as_the_last_step_of_a_pipeline(data) -> None:
    x, y = data
    pipe = make_pipeline(FunctionTransformer(normalize_all), small())
    pipe.fit(x, y)
    out = pipe.predict(x[:5])
    assert out.shape == (5,) and np.all(out > 0)
    # The transformer ran: the model saw normalised text (lower case, single spaces).
    direct = small().fit(normalize_all(x), y)
    np.testing.assert_allclose(out, direct.predict(normalize_all(x[:5])))
    assert clone(pipe).get_params()["thresholdpredictor__alpha"] == 3.0


def test_grid_search_over_alpha(data) -> None:
    x, y = data
    search = GridSearchCV(small(cv=3), {"alpha": [0.3, 30.0]}, cv=2)
    search.fit(x, y)
    assert search.best_params_["alpha"] in (0.3, 30.0)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.predict(x[:4]).shape == (4,)
    # The refit estimator is a fitted ThresholdPredictor with the winning alpha.
    assert search.best_estimator_.alpha == search.best_params_["alpha"]


# -- validation happens in fit, with messages that name the parameter and the fix ----------------
@pytest.mark.parametrize(
    "params, match",
    [
        ({"alpha": float("nan")}, "alpha must be a positive finite number"),
        ({"alpha": -1.0}, "alpha must be a positive finite number"),
        ({"alpha": "3"}, "alpha must be a positive finite number"),
        ({"coverage": 0.0}, r"coverage must be a number in \(0, 1\)"),
        ({"coverage": 1.2}, r"coverage must be a number in \(0, 1\)"),
        ({"cv": 1}, "cv must be an integer >= 2"),
        ({"cv": 2.5}, "cv must be an integer >= 2"),
        ({"word_features": -5}, "word_features must be an integer >= 0"),
        ({"random_state": "seed"}, "random_state must be an integer or None"),
    ],
)
def test_fit_rejects_bad_hyperparameters(data, params, match) -> None:
    x, y = data
    m = ThresholdPredictor(**params)
    with pytest.raises(ValueError, match=match):
        m.fit(x, y)


def test_fit_rejects_an_encoder_without_encode(data) -> None:
    x, y = data
    with pytest.raises(TypeError, match="encode"):
        ThresholdPredictor(encoder=object()).fit(x, y)  # type: ignore[arg-type]


def test_fit_rejects_too_few_texts_and_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"need at least cv=5 training texts, got 1.*smaller cv"):
        ThresholdPredictor().fit(["What is 2 + 2?"], [40.0])
    with pytest.raises(ValueError, match=r"need at least cv=3 training texts, got 2"):
        small(cv=3).fit(["a b c", "d e f"], [10.0, 20.0])


def test_empty_vocabulary_gets_a_clear_message() -> None:
    # Texts with no word of two or more letters: the word block learns nothing.
    texts = ["? !", "+ -", "1 2", "= ="]
    with pytest.raises(
        ValueError, match=r"word TF-IDF block learns no vocabulary.*word_features=0"
    ):
        ThresholdPredictor(cv=2, char_features=0).fit(texts, [10.0, 20.0, 30.0, 40.0])
    # 50+ texts whose n-grams each occur once: min_df=2 prunes every term.
    uniq = [f"{chr(0x4E00 + 2 * i)}{chr(0x4E01 + 2 * i)}" for i in range(60)]
    with pytest.raises(ValueError, match="word TF-IDF block learns no vocabulary"):
        ThresholdPredictor(cv=2, char_features=0).fit(uniq, np.arange(1.0, 61.0))
    # Dropping the block, as the message suggests, works (structure features remain).
    m = ThresholdPredictor(cv=2, word_features=0, char_features=0).fit(texts, [10, 20, 30, 40])
    assert m.predict(["? ?"]).shape == (1,)


def test_calibrate_checks_its_input(data) -> None:
    x, y = data
    m = small().fit(x, y)
    with pytest.raises(ValueError, match="need at least 5 calibration texts"):
        m.calibrate(x[:4], y[:4])
    with pytest.raises(ValueError, match="positive token counts"):
        m.calibrate(x[:10], np.r_[y[:9], 0.0])


# -- saved models --------------------------------------------------------------------------------
def _saved(tmp_path: Path, data) -> Path:
    x, y = data
    return small().fit(x, y).save(tmp_path / "m")


def test_load_refuses_another_format_version(tmp_path, data) -> None:
    d = _saved(tmp_path, data)
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    meta["format_version"] = FORMAT_VERSION - 1
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"format_version {FORMAT_VERSION - 1} is not"):
        ThresholdPredictor.load(d)
    with pytest.raises(ValueError, match="retrain"):
        load_predictor(d)


def test_load_refuses_a_file_holding_another_type(tmp_path, data) -> None:
    d = _saved(tmp_path, data)
    joblib.dump({"not": "a model"}, d / "model.joblib")
    with pytest.raises(TypeError, match="holds a dict, not a ThresholdPredictor"):
        ThresholdPredictor.load(d)


def test_load_needs_the_metadata_and_a_model(tmp_path, data) -> None:
    d = _saved(tmp_path, data)
    assert ThresholdPredictor.load(d / "model.joblib").predict(["a step"]).shape == (1,)
    (d / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"metadata\.json"):
        ThresholdPredictor.load(d)
    with pytest.raises(FileNotFoundError, match="no saved predictor"):
        ThresholdPredictor.load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such predictor directory"):
        load_predictor(tmp_path / "nowhere")


def test_the_bundled_default_loads_without_retraining() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no retrain warning, no version warning
        m = default_predictor()
    assert m.metadata_["format_version"] == FORMAT_VERSION
    with as_file(files("shadowprice") / "data" / "predictor") as d:
        meta = json.loads((Path(d) / "metadata.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    med = m.predict(["What is 2 + 3?", "Prove that there are infinitely many primes."])
    assert med.shape == (2,) and np.all((med > 10) & (med < 10_000))
    assert isinstance(load_predictor("default"), ThresholdPredictor)


def test_default_fallback_warns_and_says_why(monkeypatch) -> None:
    # An unreadable bundled model: the loader says what failed and retrains (stubbed here).
    def unreadable(path: object) -> ThresholdPredictor:
        raise ValueError("format_version 1 is not 2; retrain the predictor")

    marker = ThresholdPredictor(alpha=math.pi)
    monkeypatch.setattr(ThresholdPredictor, "load", staticmethod(unreadable))
    monkeypatch.setattr(default_module, "fit_default", lambda: marker)
    with pytest.warns(RuntimeWarning, match=r"cannot be loaded here \(ValueError: format_version"):
        assert default_predictor() is marker


def test_default_fallback_does_not_swallow_unrelated_errors(monkeypatch) -> None:
    def broken(path: object) -> ThresholdPredictor:
        raise ZeroDivisionError("a bug, not an unreadable file")

    monkeypatch.setattr(ThresholdPredictor, "load", staticmethod(broken))
    with pytest.raises(ZeroDivisionError):
        default_predictor()
