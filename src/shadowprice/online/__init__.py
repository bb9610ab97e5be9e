"""Online pricing: one shadow price for a stream of requests under a per-period budget.

Pure (no I/O): the gateway (``shadowprice serve``), the traffic simulator and tests call the
same functions.

- :class:`DecisionCore`: the decision for each request (price, pacing, rationing at the cut,
  refusal kinds and waits), synchronous with the clock passed in; the gateway and the traffic
  simulator both drive it (:mod:`.decide` explains the price, the pace line and the ration).
- :class:`PacedPricer`: the price it uses: re-clearing kept on the period's pace line
  (:class:`PaceLine`), rationing requests at the cut-off.
- :class:`OnlinePricer`: re-clears over a sliding window of recent requests' predicted curves
  against the budget left in the period, pricing what a grant is expected to spend; O(1)
  decisions (:meth:`OnlinePricer.quote`).
- :class:`ArrivalForecast`: requests still to come in the period (plans for the quiet rate).
- :class:`SpendModel`: tokens an allowance is expected to spend (unused tokens come back).
- :class:`DualAscentPricer`: the alternative, dual ascent on the spend rate.
- :class:`PopulationPrior`: usage ratio and predictor scale learned from finished requests.
- :mod:`.shape`: the population's curve shape (:class:`SurgeShape`, :class:`GammaShape`).

The trace-driven traffic simulator (Poisson, bursty, drifting mixes against hindsight batch
CLEAR) is an evaluation tool: :mod:`shadowprice.evaluate.traffic`.
"""

from .arrivals import ArrivalForecast
from .decide import DecisionCore, Offer, OfferStatus, Ticket
from .pace import PaceLine
from .paced import PacedPricer
from .pricer import DualAscentPricer, OnlinePricer, Quote
from .prior import PopulationPrior
from .shape import GammaShape, Shape, SurgeShape, shape_terms
from .spend import SpendModel

__all__ = [
    "ArrivalForecast",
    "DecisionCore",
    "DualAscentPricer",
    "GammaShape",
    "Offer",
    "OfferStatus",
    "OnlinePricer",
    "PaceLine",
    "PacedPricer",
    "PopulationPrior",
    "Quote",
    "Shape",
    "SpendModel",
    "SurgeShape",
    "Ticket",
    "shape_terms",
]
