"""Text -> predicted threshold for one request, fast enough to sit in the request path.

The gateway only needs a threshold tau (tokens) per request; the curve is the population shape
shifted by it (:mod:`shadowprice.online.shape`). :class:`TextPredictor` wraps the text
predictor: its compiled single-text path where the predictor has one (``compile()`` ->
``predict_one(text)``), else :meth:`ThresholdPredictor.predict` on a one-text batch; repeated
prompts hit an LRU cache. :class:`FixedThreshold` is a route's default curve when no text
predictor is wanted.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["FixedThreshold", "TextPredictor", "ThresholdSource", "load_threshold_source"]


class ThresholdSource(Protocol):
    """Anything that predicts a request's threshold from its text."""

    def tau(self, text: str) -> float:
        """Predicted threshold in tokens (> 0)."""
        ...


class FixedThreshold:
    """The same threshold for every request (a route's default curve).

    Parameters
    ----------
    tau : float
        Tokens (> 0).
    """

    def __init__(self, tau: float) -> None:
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a positive number of tokens, got {tau!r}")
        self._tau = float(tau)

    def tau(self, text: str) -> float:
        return self._tau


class TextPredictor:
    """A fitted threshold predictor behind an LRU cache of recent texts.

    Parameters
    ----------
    model : ThresholdPredictor or any object with ``predict(texts).median``
        The predictor (``compile()`` is used where it exists: a single-text fast path
        returning ``(median, log_sigma)`` from ``predict_one``).
    cache : int
        Texts remembered (0: no cache).
    """

    def __init__(self, model: Any, cache: int = 4096) -> None:
        compiled = getattr(model, "compile", None)
        self._one = None
        if callable(compiled):
            fast = compiled()
            self._one = getattr(fast, "predict_one", None)
        self._model = model
        self._cache: OrderedDict[str, float] = OrderedDict()
        self._size = int(cache)

    def _predict(self, text: str) -> float:
        if self._one is not None:
            out = self._one(text)
            median = out[0] if isinstance(out, tuple) else getattr(out, "median", out)
            return float(median)
        return float(self._model.predict([text]).median[0])

    def tau(self, text: str) -> float:
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        value = max(1.0, self._predict(text or " "))
        if self._size:
            self._cache[text] = value
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return value


def load_threshold_source(predictor: str | None, route_tau: float | None) -> ThresholdSource:
    """The threshold source of a gateway: a text predictor (a directory written by
    ``shadowprice predictor fit``, or ``default`` for the bundled one) or a fixed threshold."""
    if predictor is None:
        if route_tau is None:
            raise ValueError("need a predictor or a fixed route threshold")
        return FixedThreshold(route_tau)
    from ..predict import load_predictor

    return TextPredictor(load_predictor(predictor))
