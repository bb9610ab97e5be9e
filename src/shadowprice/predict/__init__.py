"""Predict each query's curve from its text, with uncertainty (no model weights needed).

- :class:`ThresholdPredictor`: text -> emergence threshold tau with a calibrated interval;
  ``predict_curves`` gives point or expected (uncertainty-aware) utility curves for
  :func:`shadowprice.allocate`.
- :func:`expected_curves`: the expected curve of log-normal thresholds (no text needed).
- :mod:`.training`: training sets from the bundled traces and problem sets, the signal
  comparison, the default predictor and the cross-fitted evaluation adapter.
- :mod:`.encoders`: optional local embedding / encoder backends (extra ``encoders``).
"""

from .encoders import Encoder, HFEncoder, SentenceEncoder
from .features import StructuralFeatures, make_text_features
from .threshold import Prediction, ThresholdPredictor, expected_curves, load_predictor

__all__ = [
    "Encoder",
    "HFEncoder",
    "Prediction",
    "SentenceEncoder",
    "StructuralFeatures",
    "ThresholdPredictor",
    "expected_curves",
    "load_predictor",
    "make_text_features",
]
