"""The period's pace line: how much of the budget should be spent by now, and the band around it.

A budget of B tokens per period P is *on pace* at time t of the period when the tokens
committed so far (settled, plus what open reservations are expected to spend) equal

    D(t) = B * t / P                    (the pace line)

Spending may run ahead of the line by a ``margin`` (a share of B), never behind it for long:
over the next ``horizon`` seconds h (or what is left of the period, if less) the requests
expected to arrive should spend at least what brings spending back to the line, and at most
what keeps it within the margin:

    need = B * min(1, (t + h) / P) - committed
    room = B * min(1, (t + h) / P + margin) - committed

Divided by the arrivals expected in those h seconds, these are the least and the most each
coming request may spend on average (:meth:`PaceLine.bounds`). Behind the line ``need`` is at
least B h / P, so the least is never below the budget's rate over the arrival rate: the price
can never refuse everyone while spending lags. Ahead of the line by more than the margin
``room`` is 0 and nothing is admitted until the line catches up (:meth:`PaceLine.resume_in`).

The price moves only at updates, so between two of them the line's :meth:`PaceLine.ceiling`
(the line one horizon ahead plus the margin) is also held grant by grant
(:meth:`~shadowprice.online.paced.PacedPricer.within_pace`): a burst that arrives before the
price has seen it, at a fresh start or after a quiet spell that left the price at 0, takes at
most what the margin allows, not the whole period's budget.
"""

from __future__ import annotations

import math

__all__ = ["PaceLine"]


class PaceLine:
    """Pace line of a budget renewed every period, with a margin ahead of it.

    Parameters
    ----------
    budget : int
        Tokens per period (> 0).
    period : float
        Period length, seconds (> 0), aligned to the epoch like the ledger's.
    margin : float
        Share of the budget spending may run ahead of the line, in [0, 1]. 0 paces strictly;
        a larger margin lets a burst take more of the period's budget at once.
    horizon : float, optional
        Seconds over which spending is brought back to the line (> 0; default: a twelfth of
        the period).
    """

    def __init__(
        self, budget: int, period: float, *, margin: float = 0.2, horizon: float | None = None
    ) -> None:
        if not budget > 0:
            raise ValueError(f"budget must be a positive number of tokens, got {budget!r}")
        if not period > 0:
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        if not (isinstance(margin, (int, float)) and 0.0 <= margin <= 1.0):
            raise ValueError(f"margin must be a share of the budget in [0, 1], got {margin!r}")
        h = period / 12.0 if horizon is None else horizon
        if not (isinstance(h, (int, float)) and h > 0 and math.isfinite(h)):
            raise ValueError(f"horizon must be a positive number of seconds, got {horizon!r}")
        self.budget, self.period = float(budget), float(period)
        self.margin, self.horizon = float(margin), float(h)

    def elapsed(self, now: float) -> float:
        """Share of the current period elapsed at ``now`` (seconds since the epoch), in [0, 1)."""
        return (now % self.period) / self.period

    def line(self, now: float) -> float:
        """D(now): tokens that should be committed by ``now``."""
        return self.budget * self.elapsed(now)

    def span(self, now: float) -> float:
        """Seconds the bounds look ahead from ``now``: the horizon, or what is left of the
        period if less (a deficit is made up before the budget renews)."""
        return min(self.horizon, self.period - now % self.period)

    def behind(self, now: float, committed: float) -> bool:
        """Whether spending lags the pace line at ``now``."""
        return committed < self.line(now)

    def ceiling(self, now: float) -> float:
        """Tokens that may be committed by ``now``: the line one :meth:`span` ahead plus the
        margin, at most the budget (what :meth:`bounds` keeps spending under)."""
        ahead = self.elapsed(now) + self.span(now) / self.period
        return self.budget * min(1.0, ahead + self.margin)

    def bounds(self, now: float, committed: float, arrivals: float) -> tuple[float, float]:
        """(least, most) tokens each of the ``arrivals`` expected over the horizon may spend.

        Parameters
        ----------
        now : float
            Seconds since the epoch.
        committed : float
            Tokens settled in the period plus the expected spend of open reservations.
        arrivals : float
            Requests expected in the next :meth:`span` seconds (all replicas).

        Returns
        -------
        (float, float)
            Per-request spend that brings spending back to the line, and that keeps it within
            the margin; (0, inf) when no arrival is expected.
        """
        if not arrivals > 0:
            return 0.0, math.inf
        ahead = self.elapsed(now) + self.span(now) / self.period
        need = self.budget * min(1.0, ahead) - committed
        room = self.ceiling(now) - committed
        return max(need, 0.0) / arrivals, max(room, 0.0) / arrivals

    def resume_in(self, now: float, committed: float) -> float:
        """Seconds until the line plus the margin reaches ``committed`` (0 when it has), at
        most what is left of the period."""
        left = self.period - now % self.period
        over = committed - self.budget * min(1.0, self.elapsed(now) + self.margin)
        if over <= 0:
            return 0.0
        return min(left, over / self.budget * self.period)

    def __repr__(self) -> str:
        return (
            f"PaceLine(budget={self.budget:.0f}, period={self.period}, margin={self.margin}, "
            f"horizon={self.horizon})"
        )
