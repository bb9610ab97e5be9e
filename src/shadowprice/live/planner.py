"""``clear-live``: CLEAR's market price, re-cleared as requests end, over expected spend.

The planner holds every query's curve as (expected spend S(b), value V(b)) on one budget grid
and the upper concave envelope of those options. The budget it plans with is what has not
been spent, less what the running requests are expected to spend:

    B_plan = B - spent - sum over running requests of E[remaining spend].

Clearing B_plan over the envelopes of the queries *not yet started* gives one price lambda
(value per expected token; see :class:`~shadowprice.live.market.SegmentMarket`). Then:

- **start**: the next query is the best entry value per expected token (the slope of its
  envelope's first segment) among those the price funds, with the cap its envelope buys at
  lambda; if that cap exceeds what the ledger has available, it waits for tokens to come back;
- **reclaim**: when a request ends, its actual spend replaces its expectation and the unused
  part of its reservation returns to the ledger; the price is re-cleared (cheaply: the
  market is incremental) before the next decision;
- **extend**: a request that stopped on its cap a is continued (the same generation, never a
  restart) to the budget b maximising V(b) - V(a) - lambda (S(b) - S(a)), if that is
  positive: given L > a, the continuation's value and spend are both divided by P(L > a), so
  the decision is the price test on the unconditional curve beyond a;
- **calibrate**: lengths are re-fitted (scale and spread, :mod:`~shadowprice.live.calibrate`)
  from the finished and capped requests, and the curves moved when the data demand it;
- **mop up**: when nothing runs and no query is funded at the price (the budget left is too
  small for any envelope's first step), the leftover buys the most valuable option that fits,
  a fresh start or a continuation of a query that stopped on its cap.

All state is in arrays; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..curves.base import UtilityCurve
from ..solve.envelope import concave_envelope
from .base import Action, ActionKind
from .calibrate import LengthCalibrator, LengthShift, _interp_rows, median_lengths, shift_tables
from .market import SegmentMarket
from .tables import live_grid, tabulate

__all__ = ["ClearLive", "LiveConfig"]

PENDING, RUNNING, DONE, STOPPED, ABANDONED, RETRY = range(6)
#: State names, for summaries.
STATE_NAMES = ("pending", "running", "done", "stopped", "abandoned", "retry")
#: Survival below this is treated as this when conditioning on L > a.
_MIN_SURVIVAL = 1e-3
#: Room for a continuation when the ledger is not the limit (the grid's top and max_tokens
#: still are).
_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class LiveConfig:
    """Settings of :class:`ClearLive`.

    Attributes
    ----------
    levels : int
        Budgets on the planner's grid (geometric, see :func:`~shadowprice.live.live_grid`).
    max_tokens : int, optional
        Most tokens one query may generate in all (the model's context, a server limit).
    extend : bool
        Continue requests that stop on their cap when the price says so (needs an engine
        that can continue a generation; see the README).
    calibrate : bool
        Fit the length scale and spread online (only for curves with a length model).
    max_retries : int
        Times a failed request is sent again.
    step : float, optional
        With extension on, go toward a cap in steps: the first request is capped at the
        query's median length (rounded up to the grid), each continuation at ``step`` times
        what it has generated. A query's expected spend and value are those of one request
        to the full cap, and reservations stay small, so more requests run at once; but
        when tokens run short, queries started in steps can be left half done (measured on
        the real set with the pool's curve only, 5 folds x 8 worlds: 66 % answered instead
        of 79 % at 300 tokens/query; a tie with per-query curves). None (default): the full
        cap at once, so a started query can always finish its plan.
    """

    levels: int = 96
    max_tokens: int | None = None
    extend: bool = True
    calibrate: bool = True
    max_retries: int = 2
    step: float | None = None


class ClearLive:
    """The live CLEAR planner (see module docstring).

    Parameters
    ----------
    curves : UtilityCurve
        N queries' value curves, with a length model for spend (without one, every request
        is assumed to run to its cap and nothing is reclaimed in planning).
    budget : int
        Tokens that may be generated in all (this run's share of the ledger).
    config : LiveConfig
        Settings.
    grid : int array (K,), optional
        Budget grid (0 first, ascending); default :func:`~shadowprice.live.live_grid`.
    """

    def __init__(
        self,
        curves: UtilityCurve,
        budget: int,
        config: LiveConfig | None = None,
        grid: NDArray[np.int64] | None = None,
    ) -> None:
        if budget < 0:
            raise ValueError(f"budget must be a non-negative number of tokens, got {budget}")
        self.config = config or LiveConfig()
        if grid is None:
            grid = live_grid(curves, max(budget, 1), self.config.levels, self.config.max_tokens)
        self.base = tabulate(curves, np.asarray(grid, dtype=np.int64))
        self.tables = self.base
        self.budget = int(budget)
        n = curves.n
        self.state = np.full(n, PENDING, dtype=np.int8)
        self.cap = np.zeros(n, dtype=np.int64)
        self.used = np.zeros(n, dtype=np.int64)
        self.expected = np.zeros(n)  # expected spend of each running request
        self.retries = np.zeros(n, dtype=np.int64)
        self.requests = np.zeros(n, dtype=np.int64)
        self.spent = 0
        self.outstanding = 0.0
        self._running = 0
        self.retry: deque[int] = deque()
        self.resume: deque[int] = deque()  # stopped queries to continue when tokens allow
        self._waiting = False
        self.calibrator = None
        if self.config.calibrate and curves.has_spend:

            def survival(rows: NDArray[np.intp], b: NDArray[np.float64]) -> NDArray[np.float64]:
                return curves[rows].survival(b)

            self.calibrator = LengthCalibrator(self.base, survival)
        self.shift = LengthShift()
        self.rebuilds = 0
        self._build_market()

    # -- market ---------------------------------------------------------------------------
    def _build_market(self) -> None:
        """Envelopes and market of the queries not yet started; start order."""
        pending = np.flatnonzero(self.state == PENDING)
        t = self.tables
        self.median = median_lengths(t)
        self.env = concave_envelope(t.spend[pending], t.value[pending])
        self.market = SegmentMarket(self.env)
        self.row_of = np.full(self.n, -1, dtype=np.int64)
        self.row_of[pending] = np.arange(pending.size)
        first = self.market.first_slopes()
        rank = np.argsort(-first, kind="stable")
        self.order = pending[rank]
        self.head = 0
        self.rebuilds += 1

    @property
    def n(self) -> int:
        return int(self.state.size)

    @property
    def running(self) -> int:
        return self._running

    @property
    def plan_budget(self) -> float:
        """Budget left for queries not yet started: unspent minus running expectations."""
        return self.budget - self.spent - self.outstanding

    @property
    def price(self) -> float:
        """The current clearing price (value per expected token)."""
        return self.market.price(self.market.cutoff(self.plan_budget))

    # -- decisions ------------------------------------------------------------------------
    def next_start(self, available: int) -> Action | None:
        """See :meth:`shadowprice.live.LivePolicy.next_start`."""
        if available < 1:
            return None
        while self.retry:
            act = self._next_retry(available)
            if act is not None or self.retry:
                return act
        while self.resume:
            act = self._next_resume(available)
            if act is not None or self._waiting:
                return act
        while self.head < self.order.size and self.state[self.order[self.head]] != PENDING:
            self.head += 1
        if self.head >= self.order.size:
            return None if self._running else self._mop_up(available)
        i = int(self.order[self.head])
        r = int(self.row_of[i])
        cutoff = self.market.cutoff(self.plan_budget)
        k = self.market.bought(r, cutoff)
        if k == 0:
            # Starts go best-first, so if the head is not funded, no one is.
            return None if self._running else self._mop_up(available)
        target = int(self.tables.grid[self.env.vertex[self.env.starts[r] + k - 1]])
        cap = self._stepped(i, 0, target)
        if cap > available:
            if self._running:
                return None  # its reservation will fit once running requests end
            # Nothing runs, so this is all there will be: spend it where it is worth most.
            return self._mop_up(available)
        return self._launch(i, cap, "start", target=target)

    def _next_resume(self, available: int) -> Action | None:
        """Continue the first query in the resume queue if its next step fits; if not, wait
        (:attr:`_waiting`) while requests run: continuations go before fresh starts."""
        self._waiting = False
        i = self.resume[0]
        a = int(self.used[i])
        b = self._best_within(i, a, _UNLIMITED, self.price) if self.state[i] == STOPPED else 0
        if not b:
            self.resume.popleft()
            return None
        cap = self._stepped(i, a, b)
        if cap - a > available:
            if self._running:
                self._waiting = True
                return None
            self.resume.popleft()  # nothing will come back: the mop-up may still use it
            return None
        self.resume.popleft()
        return self._launch(i, cap, "extend", target=b)

    def _next_retry(self, available: int) -> Action | None:
        """Send the first failed query again with the cap it had, when that fits; while
        requests run, wait for tokens to come back. When nothing runs and it does not fit,
        give it up: a retry is never shrunk to whatever is left (an endpoint whose answers
        cannot be read is charged each one in full, so a shrinking retry would drain the
        budget into it)."""
        i = self.retry[0]
        need = int(self.cap[i] - self.used[i])
        if need > available:
            if not self._running:
                self.retry.popleft()
                self._give_up(i)
            return None
        self.retry.popleft()
        return self._launch(i, int(self.cap[i]), "retry", need)

    def _stepped(self, i: int, a: int, b: int) -> int:
        """The cap of the next request of query ``i`` (generated ``a``) heading for ``b``:
        at most its median length (first request) or ``step`` times ``a``, on the grid."""
        step = self.config.step
        if step is None or not self.config.extend or b <= a:
            return b
        limit = (step * a if a else float(self.median[i])) * (1 - 1e-9)
        g = self.tables.grid_list
        j = min(bisect_left(g, limit), len(g) - 1)
        return min(b, max(int(g[j]), a + 1))

    def _launch(
        self,
        i: int,
        cap: int,
        kind: ActionKind,
        tokens: int | None = None,
        target: int | None = None,
    ) -> Action:
        """Send query ``i`` to ``cap`` in all; its expected spend is counted up to ``target``
        (where it is heading, if it goes in steps) so the price sees what it will take."""
        if self.state[i] == PENDING:
            self.market.remove(int(self.row_of[i]))
        a = int(self.used[i])
        goal = max(cap, target or cap)
        if a == 0:
            exp = self.tables.at(i, goal)[1]
        else:
            _, s_goal, _ = self.tables.at(i, goal)
            _, s_a, u_a = self.tables.at(i, a)
            exp = (s_goal - s_a) / max(u_a, _MIN_SURVIVAL)
        self.expected[i] = min(exp, goal - a)
        self.outstanding += self.expected[i]
        if self.requests[i] == 0 and self.calibrator is not None:
            self.calibrator.started(i)
        self.state[i] = RUNNING
        self.cap[i] = cap
        self.requests[i] += 1
        self._running += 1
        return Action(i, cap, cap - a if tokens is None else tokens, kind)

    def _abandon(self, i: int) -> None:
        if self.state[i] == PENDING:
            self.market.remove(int(self.row_of[i]))
        self.state[i] = ABANDONED

    def _best_within(self, i: int, a: int, room: int, price: float) -> int:
        """Best total cap for query ``i`` (having generated ``a``) within ``room`` more
        tokens: the grid budget maximising V(b) - V(a) - price (S(b) - S(a)); 0 if none
        gains."""
        g = self.tables.grid
        ok = (g > a) & (g <= a + room)
        if self.config.max_tokens is not None:
            ok &= g <= self.config.max_tokens
        if not ok.any():
            return 0
        v_a, s_a, _ = self.tables.at(i, a)
        gain = (self.tables.value[i, ok] - v_a) - price * (self.tables.spend[i, ok] - s_a)
        j = int(np.argmax(gain))
        return int(g[ok][j]) if gain[j] > 1e-12 else 0

    def _mop_up(self, available: int) -> Action | None:
        """Nothing runs and nothing is funded: spend what is left on the option worth most
        that fits (a fresh start, or continuing a query that stopped on its cap)."""
        g = self.tables.grid
        cols = np.flatnonzero((g > 0) & (g <= available))
        fresh = np.flatnonzero(self.state == PENDING)
        best = 1e-12
        choice: tuple[int, int, ActionKind] | None = None
        if cols.size and fresh.size:
            v = self.tables.value[np.ix_(fresh, cols)]
            r, c = np.unravel_index(int(np.argmax(v)), v.shape)
            if v[r, c] > best:
                best, choice = float(v[r, c]), (int(fresh[r]), int(g[cols[c]]), "start")
        stopped = np.flatnonzero(self.state == STOPPED) if self.config.extend else fresh[:0]
        if stopped.size:
            gain, cap = self._continuations(stopped, available)
            j = int(np.argmax(gain))
            if gain[j] > best:
                best, choice = float(gain[j]), (int(stopped[j]), int(cap[j]), "extend")
        if choice is None:
            return None
        return self._launch(choice[0], choice[1], choice[2])

    def _continuations(
        self, rows: NDArray[np.int64], room: int, price: float = 0.0
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """For queries stopped on their caps: the best surplus from continuing within
        ``room`` tokens at ``price``, as P(correct by b | L > a) - price E[spend | L > a],
        and the total cap b that gets it."""
        t = self.tables
        g = t.grid
        a = self.used[rows].astype(float)
        top = float(g[-1]) if self.config.max_tokens is None else float(self.config.max_tokens)
        ok = (g[None, :] > a[:, None]) & (g[None, :] <= np.minimum(a + room, top)[:, None])
        v_a = _interp_rows(t.value, g.astype(float), rows, a)
        u_a = _interp_rows(t.survival, g.astype(float), rows, a)
        s_a = _interp_rows(t.spend, g.astype(float), rows, a)
        surplus = (t.value[rows] - v_a[:, None]) - price * (t.spend[rows] - s_a[:, None])
        gain = np.where(ok, surplus, -np.inf)
        j = np.argmax(gain, axis=1)
        best = gain[np.arange(rows.size), j] / np.maximum(u_a, _MIN_SURVIVAL)
        return np.minimum(best, 1.0), g[j]

    def on_finish(self, query: int, generated: int, capped: bool, available: int) -> Action | None:
        """See :meth:`shadowprice.live.LivePolicy.on_finish`."""
        i = int(query)
        self._settle(i, generated)
        first = self.used[i] == 0 and self.calibrator is not None
        self.used[i] += generated
        if first and self.calibrator is not None:
            self.calibrator.ended(i, int(self.used[i]), not capped)
            if self.calibrator.due():
                self._recalibrate()
        if not capped:
            self.state[i] = DONE
            return None
        self.state[i] = STOPPED
        if not self.config.extend:
            return None
        a = int(self.used[i])
        b = self._best_within(i, a, _UNLIMITED, self.price)
        if not b:
            return None
        cap = self._stepped(i, a, b)
        if cap - a > available:
            # Worth continuing but its next step does not fit yet: it waits for tokens to
            # come back, ahead of fresh starts (its first tokens are already paid).
            self.resume.append(i)
            return None
        return self._launch(i, cap, "extend", target=b)

    def on_error(self, query: int, charged: int) -> bool:
        """See :meth:`shadowprice.live.LivePolicy.on_error`."""
        i = int(query)
        self._settle(i, charged)
        self.retries[i] += 1
        if self.retries[i] <= self.config.max_retries:
            self.state[i] = RETRY
            self.retry.append(i)
            return True
        self._give_up(i)
        return False

    def _give_up(self, i: int) -> None:
        """A query that failed for good: what it generated stands, if anything."""
        self.state[i] = STOPPED if self.used[i] else ABANDONED
        if self.calibrator is not None and not self.used[i]:
            self.calibrator.drop(i)

    def _settle(self, i: int, tokens: int) -> None:
        if self.state[i] != RUNNING:
            raise ValueError(f"query {i} has no request running (state {self.state[i]})")
        self.spent += int(tokens)
        self.outstanding -= self.expected[i]
        self.expected[i] = 0.0
        self._running -= 1

    def _recalibrate(self) -> None:
        assert self.calibrator is not None
        shift = self.calibrator.fit()
        if shift is None:
            return
        self.shift = shift
        self.tables = shift_tables(
            self.base, np.exp(self.calibrator.log_m), shift, self.config.max_tokens
        )
        self._build_market()
        # Queries that stopped on caps the old curves thought ample may be worth continuing.
        stopped = np.flatnonzero(self.state == STOPPED)
        if stopped.size and self.config.extend:
            gain, _ = self._continuations(stopped, self.budget, self.price)
            self.resume.extend(int(i) for i in stopped[gain > 0])

    # -- reporting ------------------------------------------------------------------------
    def summary(self) -> dict[str, object]:
        """Counts per state, tokens, price and the length correction in use (JSON-ready)."""
        counts = np.bincount(self.state, minlength=len(STATE_NAMES))
        return {
            **{name: int(c) for name, c in zip(STATE_NAMES, counts, strict=True)},
            "budget": self.budget,
            "spent": int(self.spent),
            "price": self.price,
            "length_scale": self.shift.scale,
            "length_spread": self.shift.spread,
            "requests": int(self.requests.sum()),
            "extensions": int(np.maximum(self.requests - 1 - self.retries, 0).sum()),
        }

    def __repr__(self) -> str:
        return f"ClearLive(n={self.n}, budget={self.budget}, spent={self.spent})"
