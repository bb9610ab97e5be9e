"""Bounds every public entry point checks token counts against.

Budgets and caps are exact integers; past 2^53 a float64 (numpy's default) can no longer hold
every integer, and sums over queries stop being exact. No real budget comes near the bound.
"""

from __future__ import annotations

import math
from typing import Any

#: Largest total budget (tokens) any command or function accepts.
MAX_BUDGET = 10**15


def check_budget(value: Any, name: str = "budget", *, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is a whole number of tokens in [minimum, MAX_BUDGET].

    Raises
    ------
    ValueError
        Naming ``name``, the value and the accepted range.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number of tokens, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a whole number of tokens, got {value!r}") from None
    if math.isnan(f) or (math.isfinite(f) and f != int(f)):
        raise ValueError(f"{name} must be a whole number of tokens, got {value!r}")
    if not minimum <= f <= MAX_BUDGET:
        raise ValueError(
            f"{name} = {value!r} is out of range: give {minimum} to {MAX_BUDGET:.0e} tokens"
        )
    return int(value) if isinstance(value, int) else int(f)  # finite: in range
