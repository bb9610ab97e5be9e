"""Text -> predicted threshold for one request, fast enough to sit in the request path.

The gateway only needs a threshold tau (tokens) per request; the curve is the population shape
shifted by it (:mod:`shadowprice.online.shape`). :class:`TextPredictor` wraps the text
predictor on its compiled single-text path (:meth:`ThresholdPredictor.compile`), whose LRU
cache answers repeated prompts. :class:`FixedThreshold` is a route's default curve when no text
predictor is wanted.

A request without text to read (images only, token ids, an empty message) is legal: it is
priced on the default curve, the median threshold of the recent requests that had text.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol

import numpy as np

__all__ = ["FixedThreshold", "TextPredictor", "ThresholdSource", "load_threshold_source"]


class ThresholdSource(Protocol):
    """Anything that predicts a request's threshold from its text."""

    def tau(self, text: str) -> float:
        """Predicted threshold in tokens (> 0); a default one for a text with no words."""
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
    """A fitted threshold predictor on its compiled single-text path.

    Parameters
    ----------
    model : ThresholdPredictor
        The predictor; :meth:`ThresholdPredictor.compile` gives the fast path (which keeps
        an LRU cache of ``cache`` recent texts). A model that cannot be compiled (features
        from an encoder) is called on one-text batches instead.
    cache : int
        Texts remembered (0: no cache).
    recent : int
        Predictions the default threshold (their median) is taken over.
    """

    def __init__(self, model: Any, cache: int = 4096, recent: int = 1024) -> None:
        try:
            self._fast: Any = model.compile(cache_size=cache)
        except ValueError:
            self._fast = None
        self._model = model
        self._recent: deque[float] = deque(maxlen=recent)
        self._default: float | None = None

    @property
    def compiled(self) -> bool:
        """Whether predictions take the compiled single-text path."""
        return self._fast is not None

    def tau(self, text: str) -> float:
        """Predicted median threshold of ``text`` in tokens (at least 1); the default
        threshold (see the module docstring) when it has nothing to read."""
        try:
            if not text.strip():
                raise ValueError("no text")
            if self._fast is not None:
                median = float(self._fast.predict_one(text)[0])
            else:
                median = float(self._model.predict([text])[0])
        except ValueError:  # nothing the predictor can read: the default curve
            return self.default_tau
        if not math.isfinite(median):
            return self.default_tau
        tau = max(1.0, median)
        self._recent.append(tau)
        self._default = None
        return tau

    @property
    def default_tau(self) -> float:
        """Median threshold of the recent requests with text (of a one-word question before
        any), tokens."""
        if self._default is None:
            if self._recent:
                self._default = float(np.median(self._recent))
            else:
                self._default = max(1.0, float(self._model.predict(["question"])[0]))
        return self._default


def load_threshold_source(predictor: str | None, route_tau: float | None) -> ThresholdSource:
    """The threshold source of a gateway: a text predictor (a directory written by
    ``shadowprice predictor fit``, or ``default`` for the bundled one) or a fixed threshold."""
    if predictor is None:
        if route_tau is None:
            raise ValueError("need a predictor or a fixed route threshold")
        return FixedThreshold(route_tau)
    from ..predict import load_predictor

    return TextPredictor(load_predictor(predictor))
