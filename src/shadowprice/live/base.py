"""What a live policy is: a pure state machine that a driver (the serving-engine simulator or
``run`` against a real endpoint) feeds with events and asks for the next request.

The driver owns the budget ledger and the clock; the policy owns the decisions. The protocol:

1. whenever a slot is free, the driver asks :meth:`LivePolicy.next_start` with the tokens the
   ledger has available, reserves the returned :class:`Action`'s ``tokens`` (which never
   exceed what is available) and sends the request with that ``max_tokens``; ``None`` means
   "nothing to start now" (wait for a request to end, or, with nothing running, the run is over);
2. when a request ends, the driver settles its reservation with the tokens generated and calls
   :meth:`LivePolicy.on_finish` with whether it stopped on its cap; a returned action continues
   the *same* generation (its partial output sent back as a prefill) for more tokens;
3. when a request fails, the driver settles what it may have generated and calls
   :meth:`LivePolicy.on_error`; the policy may start it again later.

Besides sending a query's own generation (``start``, ``extend``, ``retry``), a policy may ask
for a side request (``force``: the answer after a length stop; ``fallback``: a direct answer
for a query it does not fund) or say that it will never send a query (``abandon``, with the
reason): the driver records the query then, instead of special-casing plans.

Because every request's ``max_tokens`` is reserved before it is sent, the tokens generated can
never exceed the budget, whatever the policy decides and whenever requests end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Action", "LivePolicy"]

ActionKind = Literal["start", "extend", "retry", "force", "fallback", "abandon"]


@dataclass(frozen=True)
class Action:
    """One request to send.

    Attributes
    ----------
    query : int
        Index of the query.
    cap : int
        Tokens the query may have generated in all once this request ends (its total cap).
    tokens : int
        ``max_tokens`` of this request, to reserve before sending: ``cap`` minus what the
        query has already generated (a continuation sends only the increment).
    kind : {'start', 'extend', 'retry', 'force', 'fallback', 'abandon'}
        A first request, a continuation of a request that stopped on its cap, a request
        sent again after a failure; a request for the answer after a length stop, a direct
        answer for an unfunded query; or no request at all (the query is abandoned:
        ``tokens`` 0).
    reason : str
        Why, for ``abandon`` (empty: the query was never funded).
    """

    query: int
    cap: int
    tokens: int
    kind: ActionKind = "start"
    reason: str = ""


class LivePolicy(Protocol):
    """The driver's view of a live policy (see the module docstring)."""

    @property
    def n(self) -> int:
        """Number of queries."""
        ...

    @property
    def running(self) -> int:
        """Requests sent and not yet ended."""
        ...

    def next_start(self, available: int) -> Action | None:
        """The next request to send given ``available`` ledger tokens, or None."""
        ...

    def on_finish(self, query: int, generated: int, capped: bool, available: int) -> Action | None:
        """A request of ``query`` ended after ``generated`` tokens; ``capped``: it stopped on
        its ``max_tokens``. Returns a continuation of the same generation, or None."""
        ...

    def on_error(self, query: int, charged: int) -> bool:
        """A request of ``query`` failed; ``charged`` tokens were settled for it. Returns
        whether the policy means to send it again."""
        ...
