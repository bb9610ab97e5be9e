"""Utility curves: what each query gains from b tokens, vectorised over N queries."""

from .base import Demand, UtilityCurve
from .empirical import EmpiricalCurve
from .lengths import EmpiricalLengths, GammaLengths, LengthModel, TabulatedLengths
from .scurve import GammaSCurve, LogisticCurve
from .surge import ShiftedSurge, abandonment_threshold, surge_excess
from .tabulated import TabulatedCurve

__all__ = [
    "Demand",
    "EmpiricalCurve",
    "EmpiricalLengths",
    "GammaLengths",
    "GammaSCurve",
    "LengthModel",
    "LogisticCurve",
    "ShiftedSurge",
    "TabulatedCurve",
    "TabulatedLengths",
    "UtilityCurve",
    "abandonment_threshold",
    "surge_excess",
]
