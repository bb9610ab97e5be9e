"""What the population teaches online: how much of an allowance is used, and the predictor's scale.

Two numbers, learned from every finished request (its allowance, the tokens it generated and
its finish reason), with no I/O:

- ``usage``: the share of an allowance a request actually spends (an exponentially weighted
  ratio of tokens generated to tokens granted). The pricer forecasts what the reservations
  still open will spend with it (what new grants will spend comes from
  :class:`~shadowprice.online.spend.SpendModel`, which knows it depends on the allowance).
- ``scale``: a multiplicative correction of predicted thresholds. Under the shift model an
  answer runs tau + X tokens, X the shape's excess, so with a calibrated predictor a tenth of
  the answers finish below the line ``scale * tau_hat + short_excess`` (X's 10 % quantile). A
  Robbins-Monro quantile tracker moves ``scale`` until that holds. Lengths are censored by the
  allowance (a truncated answer only says "longer than the allowance"), so only requests whose
  allowance reaches the line are informative; a low quantile keeps that line below typical
  allowances. A predictor trained on another model's lengths (a long-reasoning model needs
  many times the tokens) is rescaled after a few hundred requests instead of mispricing every
  request for good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PopulationPrior"]


@dataclass
class PopulationPrior:
    """Online usage ratio and threshold scale of a request population.

    Parameters
    ----------
    usage : float
        Initial share of an allowance that requests use, in (0, 1].
    halflife : float
        Observations after which an old one weighs half (usage ratio).
    step : float
        Log-scale step of the scale tracker per observation.
    max_scale : float
        The scale stays in [1 / max_scale, max_scale].
    short_excess : float
        10th percentile of the tokens an answer runs past its threshold (from the shape).
    learn_scale : bool
        False keeps ``scale`` at 1 (trust the predictor's scale).
    """

    usage: float = 0.7
    halflife: float = 500.0
    step: float = 0.02
    max_scale: float = 16.0
    short_excess: float = 106.0
    quantile: float = 0.1
    learn_scale: bool = True
    scale: float = 1.0
    observed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.usage <= 1:
            raise ValueError(f"usage must be in (0, 1], got {self.usage!r}")
        if not (self.halflife > 0 and self.step > 0 and self.max_scale >= 1):
            raise ValueError("halflife and step must be positive and max_scale >= 1")

    def observe(self, tau_hat: float, allowance: int, used: int, finish_reason: str) -> None:
        """Learn from one finished request.

        Parameters
        ----------
        tau_hat : float
            Its predicted threshold before correction, tokens.
        allowance : int
            Tokens it was granted (``max_tokens`` sent).
        used : int
            Tokens it generated.
        finish_reason : str
            ``stop`` (answered), ``length`` (hit the allowance) or anything else (ignored for
            the scale).
        """
        if allowance <= 0:
            return
        self.observed += 1
        w = math.exp(-math.log(2.0) / self.halflife)
        self.usage = w * self.usage + (1 - w) * min(1.0, max(0.0, used / allowance))
        if not self.learn_scale or tau_hat <= 0:
            return
        line = self.scale * tau_hat + self.short_excess
        if allowance < line or finish_reason not in ("stop", "length"):
            return  # censored below the line (or an error): says nothing about the quantile
        below = finish_reason == "stop" and used <= line
        # Quantile tracking: equilibrium where P(length <= line) = quantile.
        move = -(1.0 - self.quantile) if below else self.quantile
        s = self.scale * math.exp(self.step * move)
        self.scale = min(self.max_scale, max(1.0 / self.max_scale, s))

    def threshold(self, tau_hat: float) -> float:
        """Corrected threshold of a request predicted at ``tau_hat`` tokens."""
        return self.scale * tau_hat
