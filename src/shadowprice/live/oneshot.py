"""A one-shot plan run live: fixed caps, started in order as the ledger allows.

This is how any allocation (uniform, ``clear``, ...) executes under a token ledger: each
funded query's cap is reserved before it is sent; when a request ends, what it did not use
returns to the ledger, where later queries of the plan can reserve it. The plan itself never
changes: a query whose cap does not fit waits for tokens to come back, and is dropped if
nothing is running and it still does not fit; tokens left when the plan is done stay unspent.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import Action

__all__ = ["OneShot"]

PENDING, RUNNING, DONE, STOPPED, DROPPED, ABANDONED = range(6)


class OneShot:
    """Execute fixed per-query caps (see module docstring).

    Parameters
    ----------
    caps : int array (N,)
        ``max_tokens`` per query; 0 = abandoned (never sent).
    order : int array, optional
        Order in which queries are started (default: index order).
    max_retries : int
        Times a failed request is sent again.
    """

    def __init__(
        self, caps: ArrayLike, order: ArrayLike | None = None, *, max_retries: int = 2
    ) -> None:
        c = np.asarray(caps)
        if c.ndim != 1 or np.any(c < 0) or not np.all(np.isfinite(c)):
            raise ValueError("caps must be a 1-D array of non-negative token counts")
        self.caps: NDArray[np.int64] = c.astype(np.int64)
        o = np.arange(c.size) if order is None else np.asarray(order, dtype=np.int64)
        if np.sort(o).tolist() != list(range(c.size)):
            raise ValueError("order must be a permutation of the query indices")
        self.order = o
        self.state = np.where(self.caps > 0, PENDING, ABANDONED).astype(np.int8)
        self.head = 0
        self.retries = np.zeros(c.size, dtype=np.int64)
        self.max_retries = int(max_retries)
        self.retry: deque[int] = deque()
        self._running = 0

    @property
    def n(self) -> int:
        return int(self.caps.size)

    @property
    def running(self) -> int:
        return self._running

    def next_start(self, available: int) -> Action | None:
        while self.retry:
            i = self.retry[0]
            if self.caps[i] <= available:
                self.retry.popleft()
                return self._launch(i, "retry")
            if self._running:
                return None
            self.retry.popleft()
            self.state[i] = DROPPED
        while self.head < self.order.size:
            i = int(self.order[self.head])
            if self.state[i] != PENDING:
                self.head += 1
                continue
            if self.caps[i] <= available:
                self.head += 1
                return self._launch(i, "start")
            if self._running:
                return None  # wait for reservations to come back
            self.state[i] = DROPPED
            self.head += 1
        return None

    def _launch(self, i: int, kind: str) -> Action:
        self.state[i] = RUNNING
        self._running += 1
        cap = int(self.caps[i])
        return Action(i, cap, cap, "retry" if kind == "retry" else "start")

    def on_finish(self, query: int, generated: int, capped: bool, available: int) -> Action | None:
        self._running -= 1
        self.state[query] = STOPPED if capped else DONE
        return None

    def on_error(self, query: int, charged: int) -> None:
        self._running -= 1
        self.retries[query] += 1
        if self.retries[query] <= self.max_retries:
            self.state[query] = PENDING
            self.retry.append(query)
        else:
            self.state[query] = DROPPED

    @property
    def dropped(self) -> int:
        """Funded queries never sent because their cap did not fit."""
        return int((self.state == DROPPED).sum())
