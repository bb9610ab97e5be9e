"""CompiledPredictor: single-text prediction that reproduces ThresholdPredictor exactly."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer

from shadowprice.predict import ThresholdPredictor, default_predictor
from shadowprice.predict.data import PROXY_SETS, proxy_problems
from shadowprice.predict.fast import CompiledPredictor, _padded_word_grams
from shadowprice.traces import REAL_TRACE_SET, load_traces

# Texts that exercise the tokenisers' corners: case, tabs and newlines, Unicode whitespace,
# one-letter words, repeated n-grams (counts above 1 go through the sublinear tf), accents,
# LaTeX, numbers, and words no vocabulary holds.
EDGE = [
    "What is 2 + 3?",
    "A  B\tC\nD\u00a0E\u2003F a b c",
    "step step step step step step step step: repeat the the the the",
    "Ünïcödé ÀÉÎ straße İstanbul ǅemal",
    r"Find all $x$ with $\frac{x^2}{\sqrt{3}} = \sum_{k=1}^{n} k$ and \textbf{(A)} 12,345.67",
    "zzqx vvkj wwpl",
    "x",
    "Prove that there are infinitely many primes. " * 40,
]


@pytest.fixture(scope="module")
def bundled() -> ThresholdPredictor:
    return default_predictor()


@pytest.fixture(scope="module")
def questions() -> list[str]:
    """A few hundred bundled questions from every proxy set plus the traced ones."""
    d = proxy_problems(PROXY_SETS)
    picked = d.groupby("set", group_keys=False).apply(
        lambda g: g.sample(min(len(g), 50), random_state=0)
    )
    traced = [str(q) for q in load_traces(REAL_TRACE_SET).questions()]
    return picked["question"].tolist() + traced


def test_bundled_model_agrees_with_predict(bundled, questions) -> None:
    assert len(questions) >= 300
    fast = bundled.compile()
    texts = questions + EDGE
    ref = bundled.predict(texts)
    got = fast.predict(texts)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    med, sigma = fast.predict_one(texts[0])
    assert med == got[0]
    assert sigma == bundled.predict_distribution(texts[:1]).sigma[0]


@pytest.mark.parametrize(
    "params",
    [
        {"word_features": 300, "char_features": 0},
        {"word_features": 0, "char_features": 400},
        {"word_features": 200, "char_features": 200},
        {"word_features": 0, "char_features": 0},  # structure only
    ],
)
def test_small_models_agree_including_calibration(questions, params) -> None:
    x, y = questions[:200], np.linspace(50, 900, 200)
    m = ThresholdPredictor(cv=3, **params).fit(x, y)
    m.calibrate(questions[200:260], np.linspace(80, 600, 60))
    texts = questions[260:] + EDGE
    np.testing.assert_allclose(m.compile(cache_size=0).predict(texts), m.predict(texts), rtol=1e-12)


def test_char_wb_ngrams_are_sklearns(questions) -> None:
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5))
    analyze = vec.build_analyzer()
    for text in EDGE + questions[:50]:
        ours = [g for w in text.lower().split() for g in _padded_word_grams(w, 3, 5)]
        assert Counter(ours) == Counter(analyze(text))


def test_cache_hits_and_clearing(bundled) -> None:
    fast = bundled.compile(cache_size=2)
    a = fast.predict_one("What is 7 * 8?")
    assert fast.predict_one("What is 7 * 8?") == a
    info = fast.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 1, 2)
    fast.cache_clear()
    assert fast.cache_info().currsize == 0
    off = bundled.compile(cache_size=0)
    assert off.cache_info() is None and off.predict_one("What is 7 * 8?") == a


def test_compiled_model_is_a_snapshot(questions) -> None:
    m = ThresholdPredictor(cv=3, word_features=300, char_features=0)
    m.fit(questions[:100], np.linspace(50, 900, 100))
    fast = m.compile()
    before = fast.predict(questions[100:110])
    m.fit(questions[:100], np.linspace(900, 50, 100))  # refit: the compiled copy keeps its numbers
    np.testing.assert_array_equal(fast.predict(questions[100:110]), before)
    assert not np.allclose(m.predict(questions[100:110]), before)


def test_bad_input(bundled) -> None:
    fast = bundled.compile()
    assert isinstance(fast, CompiledPredictor) and "CompiledPredictor(" in repr(fast)
    with pytest.raises(TypeError, match="must be a string"):
        fast.predict_one(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        fast.predict_one("  \n")
    with pytest.raises(TypeError, match="not a single string"):
        fast.predict("one text")
    with pytest.raises(ValueError, match="cache_size"):
        bundled.compile(cache_size=-1)
    with pytest.raises(NotFittedError):
        ThresholdPredictor().compile()


def test_compile_refuses_an_encoder_model(questions) -> None:
    class Lengths:
        def encode(self, texts):
            return np.array([[len(t), t.count(" ")] for t in texts], float)

    m = ThresholdPredictor(encoder=Lengths(), cv=3).fit(questions[:30], np.linspace(50, 500, 30))
    with pytest.raises(ValueError, match="encoder"):
        m.compile()
