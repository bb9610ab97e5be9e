"""Utility curves: what each query gains from b tokens, vectorised over N queries."""

from .base import Demand, UtilityCurve
from .empirical import EmpiricalCurve
from .scurve import GammaSCurve, LogisticCurve
from .surge import ShiftedSurge, abandonment_threshold, surge_excess
from .tabulated import TabulatedCurve

__all__ = [
    "Demand",
    "EmpiricalCurve",
    "GammaSCurve",
    "LogisticCurve",
    "ShiftedSurge",
    "TabulatedCurve",
    "UtilityCurve",
    "abandonment_threshold",
    "surge_excess",
]
