"""How many requests are still to come in the period: a forecast that errs toward spending.

The price clears the budget left against the requests still to arrive, so the forecast of
their number decides how much is saved for later. Its two errors do not cost the same: a
forecast that is too low spends the budget early and refuses the period's last requests (what a
counting gateway does every period), while one that is too high saves tokens for requests that
never come, and tokens left at the end of a period are lost. Traffic that comes in bursts makes
the second error the common one: during a burst the current rate says the burst goes on, and
across a whole period a burst that was expected may never come.

So the forecast plans for the quiet rate and lets the current excess fade:

    N(L) = r_low L + max(r_now - r_low, 0) k (1 - exp(-L / k))

for the L seconds left, where ``r_now`` is the arrival rate of the last few seconds (an
exponentially weighted count, time constant k), ``r_low`` the lower quartile of the rates seen
in equal slices (``bins`` per period) over the last ``history`` periods, and k one slice. On
steady (Poisson) traffic the lower quartile of a slice's rate is a few per cent under the mean,
so the price is about what a perfect forecast would set; on bursty traffic it is the rate
between bursts, so the price rations a burst against what is left instead of saving for the
next one. ``docs/benchmarks.md`` compares it with the window rate it replaces.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ArrivalForecast"]


class ArrivalForecast:
    """Arrival rate now, the quiet rate, and the arrivals expected before a horizon.

    Parameters
    ----------
    period : float
        Budget period, seconds (> 0).
    bins : int
        Slices per period over which rates are counted (>= 2); one slice is also the time
        constant of the current rate.
    history : int
        Periods of slices the quiet rate looks back on (>= 1).
    quantile : float
        Which quantile of the slices' rates is the quiet rate, in (0, 1).
    """

    def __init__(
        self, period: float, *, bins: int = 12, history: int = 4, quantile: float = 0.25
    ) -> None:
        if not period > 0:
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        if bins < 2 or history < 1 or not 0 < quantile < 1:
            raise ValueError("need bins >= 2, history >= 1 and a quantile in (0, 1)")
        self.width = float(period) / bins
        self.quantile = float(quantile)
        self._counts = np.zeros(bins * history + 1, dtype=np.int64)  # ring of slice counts
        self._slice: int | None = None  # slice of the latest observation (absolute index)
        self._first = 0  # first slice observed (only partly covered)
        self._weight = 0.0  # exponentially weighted arrival count, at time _last
        self._last = 0.0
        self._start = 0.0

    def observe(self, now: float) -> None:
        """Count one arrival at ``now`` (seconds; non-decreasing up to clock jitter)."""
        if self._slice is None:
            self._slice = self._first = int(now // self.width)
            self._last = self._start = now
        self._advance(now)
        self._counts[self._slice % self._counts.size] += 1
        if now > self._last:
            self._weight *= math.exp(-(now - self._last) / self.width)
            self._last = now
        self._weight += 1.0

    def _advance(self, now: float) -> None:
        """Move to ``now``'s slice, emptying the ring's slots of the slices skipped."""
        assert self._slice is not None
        new = int(now // self.width)
        if new <= self._slice:
            return
        size = self._counts.size
        for k in range(self._slice + 1, min(new, self._slice + size) + 1):
            self._counts[k % size] = 0
        self._slice = new

    def rate(self, now: float) -> float:
        """Arrivals per second over about the last slice (0 before any arrival)."""
        if self._slice is None:
            return 0.0
        decay = math.exp(-max(now - self._last, 0.0) / self.width)
        # Corrects the start-up bias of an exponential average over a short history.
        seen = 1.0 - math.exp(-max(now - self._start, 1e-3) / self.width)
        return self._weight * decay / (self.width * seen)

    def quiet_rate(self, now: float) -> float | None:
        """The ``quantile`` of the completed slices' rates, or None before a whole slice."""
        if self._slice is None:
            return None
        self._advance(now)
        current = self._slice
        oldest = max(self._first + 1, current - self._counts.size + 1)
        if oldest >= current:
            return None
        ring = np.arange(oldest, current) % self._counts.size
        return float(np.quantile(self._counts[ring], self.quantile)) / self.width

    def expected(self, now: float, horizon: float) -> float:
        """Arrivals expected in the ``horizon`` seconds after ``now`` (see the module)."""
        if horizon <= 0:
            return 0.0
        now_rate = self.rate(now)
        quiet = self.quiet_rate(now)
        low = now_rate if quiet is None else min(quiet, now_rate)
        k = self.width
        return low * horizon + (now_rate - low) * k * (1.0 - math.exp(-horizon / k))
