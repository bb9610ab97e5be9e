"""shadowprice: price reasoning tokens and allocate one budget across many LLM queries.

>>> import numpy as np
>>> from shadowprice import ShiftedSurge, allocate
>>> curves = ShiftedSurge(tau=np.array([150, 300, 900]), alpha=1.5, beta=0.005)
>>> result = allocate(curves, budget=900, policy="clear")
>>> int(result.budgets.sum()) <= 900
True
"""

from importlib.metadata import PackageNotFoundError, version

from .allocate import POLICIES, allocate
from .curves import (
    EmpiricalCurve,
    GammaSCurve,
    LogisticCurve,
    ShiftedSurge,
    TabulatedCurve,
    UtilityCurve,
)
from .solve.result import Allocation

try:
    # One source of truth: the version pyproject.toml gave the installed distribution.
    __version__ = version("shadowprice")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "POLICIES",
    "Allocation",
    "EmpiricalCurve",
    "GammaSCurve",
    "LogisticCurve",
    "ShiftedSurge",
    "TabulatedCurve",
    "UtilityCurve",
    "allocate",
]
