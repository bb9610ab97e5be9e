"""A one-shot plan run live: fixed caps, started in order as the ledger allows.

This is how any allocation (uniform, ``clear``, ...) executes under a token ledger: each
funded query's cap is reserved before it is sent; when a request ends, what it did not use
returns to the ledger, where later queries of the plan can reserve it. The plan itself never
changes: a query whose cap does not fit waits for tokens to come back, and is dropped if
nothing is running and it still does not fit; tokens left when the plan is done stay unspent.

Two optional side requests draw only on tokens no planned query was promised (the caps of the
funded queries not sent yet): answer forcing (``force_tokens``: after a request stops on its
cap, ask for the answer alone) and a direct-answer fallback (``fallback_tokens``) for the
queries the plan does not fund. An unfunded query without a fallback is abandoned by an
action, in plan order.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import Action

__all__ = ["DROPPED_REASON", "OneShot"]

PENDING, RUNNING, DONE, STOPPED, DROPPED, ABANDONED, FAILED = range(7)

#: Why a funded query was dropped: the budget left could not hold its cap.
DROPPED_REASON = "budget exhausted before it could be sent"


class OneShot:
    """Execute fixed per-query caps (see module docstring).

    Parameters
    ----------
    caps : int array (N,)
        ``max_tokens`` per query; 0 = abandoned (never sent, unless as a fallback).
    order : int array, optional
        Order in which queries are started (default: index order).
    max_retries : int
        Times a failed request is sent again.
    force_tokens : int
        Allowance of the answer-forcing request after a length stop (0 = none).
    fallback_tokens : int
        Allowance of the direct-answer fallback of an unfunded query (0 = none).
    """

    def __init__(
        self,
        caps: ArrayLike,
        order: ArrayLike | None = None,
        *,
        max_retries: int = 2,
        force_tokens: int = 0,
        fallback_tokens: int = 0,
    ) -> None:
        c = np.asarray(caps)
        if c.ndim != 1 or np.any(c < 0) or not np.all(np.isfinite(c)):
            raise ValueError("caps must be a 1-D array of non-negative token counts")
        self.caps: NDArray[np.int64] = c.astype(np.int64)
        o = np.arange(c.size) if order is None else np.asarray(order, dtype=np.int64)
        if np.sort(o).tolist() != list(range(c.size)):
            raise ValueError("order must be a permutation of the query indices")
        if force_tokens < 0 or fallback_tokens < 0:
            raise ValueError("force_tokens and fallback_tokens must be >= 0")
        self.order = o
        self.state = np.where(self.caps > 0, PENDING, ABANDONED).astype(np.int8)
        self.head = 0
        self.retries = np.zeros(c.size, dtype=np.int64)
        self.max_retries = int(max_retries)
        self.force_tokens = int(force_tokens)
        self.fallback_tokens = int(fallback_tokens)
        self.retry: deque[int] = deque()
        #: Caps of funded queries not sent yet: side requests may not use these tokens.
        self.promised = int(self.caps.sum())
        self._side: set[int] = set()  # queries whose forcing or fallback request runs
        self._running = 0

    @property
    def n(self) -> int:
        return int(self.caps.size)

    @property
    def running(self) -> int:
        return self._running

    def next_start(self, available: int) -> Action | None:
        """See :meth:`shadowprice.live.LivePolicy.next_start`."""
        while self.retry:
            i = self.retry[0]
            if self.caps[i] <= available:
                self.retry.popleft()
                return self._launch(i, "retry")
            if self._running:
                return None
            self.retry.popleft()
            return self._drop(i, available)
        while self.head < self.order.size:
            i = int(self.order[self.head])
            if self.state[i] == ABANDONED:
                self.head += 1
                return self._unfunded(i, available, "")
            if self.state[i] != PENDING:
                self.head += 1
                continue
            if self.caps[i] <= available:
                self.head += 1
                return self._launch(i, "start")
            if self._running:
                return None  # wait for reservations to come back
            self.head += 1
            return self._drop(i, available)
        return None

    def _launch(self, i: int, kind: str) -> Action:
        self.state[i] = RUNNING
        self._running += 1
        cap = int(self.caps[i])
        self.promised -= cap
        return Action(i, cap, cap, "retry" if kind == "retry" else "start")

    def _drop(self, i: int, available: int) -> Action:
        """A funded query whose cap no longer fits, with nothing running to free tokens."""
        self.state[i] = DROPPED
        self.promised -= int(self.caps[i])
        return self._unfunded(i, available, DROPPED_REASON)

    def _unfunded(self, i: int, available: int, reason: str) -> Action:
        """A fallback for query ``i`` if it fits what nobody was promised, else abandon it."""
        if self.fallback_tokens and available - self.promised >= self.fallback_tokens:
            return self._side_request(i, 0, self.fallback_tokens, "fallback", reason)
        return Action(i, 0, 0, "abandon", reason)

    def _side_request(self, i: int, cap: int, tokens: int, kind: str, reason: str = "") -> Action:
        self._side.add(i)
        self._running += 1
        return Action(i, cap, tokens, "force" if kind == "force" else "fallback", reason)

    def on_finish(self, query: int, generated: int, capped: bool, available: int) -> Action | None:
        """See :meth:`shadowprice.live.LivePolicy.on_finish`; a query that stopped on its cap
        gets its forcing request when that fits what nobody was promised."""
        self._running -= 1
        if query in self._side:
            self._side.discard(query)
            return None
        self.state[query] = STOPPED if capped else DONE
        if capped and self.force_tokens and available - self.promised >= self.force_tokens:
            return self._side_request(query, int(self.caps[query]), self.force_tokens, "force")
        return None

    def on_error(self, query: int, charged: int) -> bool:
        """See :meth:`shadowprice.live.LivePolicy.on_error`; side requests are not retried."""
        self._running -= 1
        if query in self._side:
            self._side.discard(query)
            return False
        self.retries[query] += 1
        if self.retries[query] <= self.max_retries:
            self.state[query] = PENDING
            self.promised += int(self.caps[query])
            self.retry.append(query)
            return True
        self.state[query] = FAILED
        return False

    @property
    def dropped(self) -> int:
        """Funded queries never sent because their cap did not fit."""
        return int((self.state == DROPPED).sum())
