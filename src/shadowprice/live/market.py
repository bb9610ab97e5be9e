"""An incremental market over envelope segments: clear in O(sqrt M), remove a query cheaply.

On each query's upper concave envelope of (expected spend, value) options, the query buys, at
a price lambda, every segment whose slope (value per token) is at least lambda. Aggregate
demand is therefore the sum of the costs of all segments with slope >= lambda, whoever owns
them. With the M segments of all queries sorted by slope once, clearing a budget B is a
prefix-sum search: the market buys the longest prefix whose costs fit in B, and the price is
the slope of the first segment left out. Removing a query (it has started, or given up) zeroes
its segments' costs.

Costs live in blocks, and blocks in super-blocks, each about the cube root of M wide, with a
running sum per block and per super-block: a clear is three short cumulative sums (over the
super-blocks, over the blocks of one, over the segments of one block) and a removal touches
only that query's segments: both are a few vectorised calls on O(M^(1/3)) numbers.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..solve.envelope import Envelope

__all__ = ["SegmentMarket"]


class SegmentMarket:
    """Segments of the queries still in the market, sorted by slope (see module docstring).

    Parameters
    ----------
    envelope : Envelope
        Envelopes of N queries (rows); every row starts in the market.
    """

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        m = envelope.slope.size
        order = np.argsort(-envelope.slope, kind="stable")
        #: Position of each segment (envelope order) in slope order.
        self.rank = np.empty(m, dtype=np.int64)
        self.rank[order] = np.arange(m)
        self.slope_sorted = envelope.slope[order]
        self.cost_sorted = envelope.dcost[order].astype(np.float64)
        # Two levels of blocks, each about the cube root of M wide: a search is three short
        # cumulative sums (over super-blocks, the blocks of one, the segments of one block).
        self.block = max(32, int(np.ceil(max(m, 1) ** (1 / 3))))
        nb = -(-m // self.block) if m else 0
        ns = -(-nb // self.block) if nb else 0
        padded = np.zeros(ns * self.block * self.block)
        padded[:m] = self.cost_sorted
        self.block_sum = padded.reshape(ns * self.block, self.block).sum(axis=1)
        self.super_sum = self.block_sum.reshape(ns, self.block).sum(axis=1)
        self.block_sum = self.block_sum[: max(nb, 0)]
        self.in_market = np.ones(envelope.n, dtype=bool)
        self._cache: tuple[float, int] | None = None  # (budget, cutoff) since the last removal

    @property
    def size(self) -> int:
        """Number of segments (removed ones included)."""
        return int(self.cost_sorted.size)

    def remove(self, query: int) -> None:
        """Take ``query``'s segments out of the market (it started, or gave up)."""
        if not self.in_market[query]:
            return
        self.in_market[query] = False
        self._cache = None
        pos = self.rank[self.envelope.row(query)]
        if pos.size == 0:
            return
        cost = self.cost_sorted[pos]
        blocks = pos // self.block
        np.subtract.at(self.block_sum, blocks, cost)
        np.subtract.at(self.super_sum, blocks // self.block, cost)
        self.cost_sorted[pos] = 0.0

    def cutoff(self, budget: float) -> int:
        """Length p of the longest slope-ordered prefix whose costs fit in ``budget``.

        Segments at positions < p are bought; position p (if any) is the marginal one.
        """
        m = self.size
        if m == 0:
            return 0
        # Removed segments cost nothing, so a budget of 0 still passes them.
        budget = max(float(budget), 0.0)
        if self._cache is not None and self._cache[0] == budget:
            return self._cache[1]
        p = self._search(budget)
        self._cache = (budget, p)
        return p

    def _search(self, budget: float) -> int:
        m, w = self.size, self.block
        left = budget
        sup = np.cumsum(self.super_sum)
        s = int(np.searchsorted(sup, left, side="right"))
        if s >= sup.size:
            return m
        left -= float(sup[s - 1]) if s else 0.0
        blk = np.cumsum(self.block_sum[s * w : (s + 1) * w])
        b = int(np.searchsorted(blk, left, side="right"))
        left -= float(blk[b - 1]) if b else 0.0
        lo = (s * w + b) * w
        inner = np.cumsum(self.cost_sorted[lo : lo + w])
        return min(lo + int(np.searchsorted(inner, left, side="right")), m)

    def price(self, cutoff: int) -> float:
        """The clearing price for a cutoff: the marginal segment's slope (0 if all fit)."""
        return float(self.slope_sorted[cutoff]) if cutoff < self.size else 0.0

    def bought(self, query: int, cutoff: int) -> int:
        """How many of ``query``'s segments the prefix of length ``cutoff`` buys (its
        segments' ranks rise along its envelope, so they are a prefix of them)."""
        pos = self.rank[self.envelope.row(query)]
        return int(np.searchsorted(pos, cutoff))

    def demand(self, cutoff: int) -> float:
        """Total cost of the segments still in the market that the prefix buys."""
        return float(self.cost_sorted[:cutoff].sum())

    def first_slopes(self) -> NDArray[np.float64]:
        """Each query's first segment's slope (its value per token of entry), 0 if none."""
        env = self.envelope
        has = env.starts[1:] > env.starts[:-1]
        out = np.zeros(env.n)
        out[has] = env.slope[env.starts[:-1][has]]
        return out
