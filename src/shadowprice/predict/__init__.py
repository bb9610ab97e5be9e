"""Predict each query's curve from its text, with uncertainty (no model weights needed).

- :class:`ThresholdPredictor`: text -> emergence threshold tau with a calibrated interval;
  ``predict_curves`` gives point or expected (uncertainty-aware) utility curves for
  :func:`shadowprice.allocate`.
- :func:`expected_curves`: the expected curve of log-normal thresholds (no text needed).
- :mod:`.default`: the bundled default model (:func:`default_predictor`), how it is trained
  (:func:`fit_default`) and :func:`load_predictor` for it or any saved model.
- :mod:`.data`: training sets from the bundled traces and problem sets.
- :mod:`.encoders`: optional local embedding / encoder backends (extra ``encoders``).

Experiments that evaluate the predictor live in :mod:`shadowprice.evaluate.prediction`.
"""

from .default import default_predictor, fit_default, load_predictor
from .encoders import Encoder, HFEncoder, SentenceEncoder
from .features import StructuralFeatures, make_text_features
from .threshold import Prediction, ThresholdPredictor, expected_curves

__all__ = [
    "Encoder",
    "HFEncoder",
    "Prediction",
    "SentenceEncoder",
    "StructuralFeatures",
    "ThresholdPredictor",
    "default_predictor",
    "expected_curves",
    "fit_default",
    "load_predictor",
    "make_text_features",
]
