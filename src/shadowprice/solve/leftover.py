"""What to do with tokens the price left unallotted.

A price solution stops where no query gains from another token *under the model*. With the
shifted surge that happens past each query's peak, where the model's utility declines; but a
real request capped at b usually stops earlier, and accuracy under a hard cap never falls as the
cap grows. So by default those tokens are spread evenly over the funded queries as extra
headroom, instead of being left unused.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..curves.base import UtilityCurve
from .constraints import Constraints
from .result import Allocation

#: Accepted values of ``allocate(..., leftover=...)``.
LEFTOVER_MODES = ("spread", "keep")


def spread_leftover(curves: UtilityCurve, alloc: Allocation, cons: Constraints) -> Allocation:
    """Water-fill the leftover over funded queries in whole granules, up to each cap.

    Parameters
    ----------
    curves : UtilityCurve
        The N queries' curves (to recompute the expected utility).
    alloc : Allocation
        A price policy's result. Only length-only allocations (``samples`` is None) that
        succeeded and left at least one granule are changed.
    cons : Constraints
        Limits and granularity.

    Returns
    -------
    Allocation
        ``alloc`` with the leftover spread (``info["spread_leftover"]`` tokens, said in the
        message), or ``alloc`` itself when nothing was spread.
    """
    g = cons.granularity
    if alloc.samples is not None or not alloc.success or alloc.leftover < g:
        return alloc
    b = alloc.budgets.copy()
    granules = alloc.leftover // g
    given = 0
    while granules > 0:
        # Room for a granule: (hi - b) // g > 0, that is hi - b >= g.
        open_ = np.flatnonzero(alloc.funded & (cons.hi - b >= g))
        if open_.size == 0:
            break
        share = max(granules // open_.size, 1)
        # Each open query gets at least one granule, so only the first ones can get any.
        open_ = open_[:granules]
        add = np.minimum((cons.hi[open_] - b[open_]) // g, share)
        # With share 1 and fewer granules than queries, the first ones in index order get one.
        add[np.cumsum(add) > granules] = 0
        b[open_] += add * g
        granules -= int(add.sum())
        given += int(add.sum()) * g
    if given == 0:
        return alloc
    return replace(
        alloc,
        budgets=b,
        utility=float(curves.value(b.astype(float)).sum()),
        message=alloc.message + f"; {given} leftover tokens spread over funded queries as headroom",
        info={**alloc.info, "spread_leftover": given},
    )
