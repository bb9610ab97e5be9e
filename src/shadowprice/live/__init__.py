"""Live pricing: a planner that re-clears CLEAR's price as requests end (pure, no I/O).

``run`` against a real endpoint and the serving-engine simulator
(:mod:`shadowprice.evaluate.simulate`) drive the same state machines: :class:`ClearLive`
(``clear-live``: reservation, reclaim, extension, online length calibration) and
:class:`OneShot` (a fixed plan executed under a ledger). See :mod:`shadowprice.live.base` for
the protocol.
"""

from .base import Action, LivePolicy
from .calibrate import LengthCalibrator, LengthShift, median_lengths, shift_tables
from .market import SegmentMarket
from .oneshot import OneShot
from .planner import ClearLive, LiveConfig
from .tables import CurveTables, live_grid, tabulate

__all__ = [
    "Action",
    "ClearLive",
    "CurveTables",
    "LengthCalibrator",
    "LengthShift",
    "LiveConfig",
    "LivePolicy",
    "OneShot",
    "SegmentMarket",
    "live_grid",
    "median_lengths",
    "shift_tables",
    "tabulate",
]
