"""The simulated engine: slots that replay trace samples, one token per slot per tick.

Each query has one sample (a *world*: its length L and whether it is correct). A request with
``max_tokens`` m for a query that has generated g tokens so far generates min(L - g, m)
tokens, ending that many ticks after it was sent, on its cap if L - g > m; a continuation
picks up where the generation stopped. Its answer is right when the generation reached its
end and the sample is correct (:attr:`~shadowprice.engine.client.Completion.correct`).
Requests that end at the same tick come back in the order they were sent, so a run is
deterministic. The engine never waits: driving it costs no time.

A forcing or fallback request has no sample to replay: it generates its whole allowance and
gives no answer.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from .client import Completion, Continuation, EngineError, Usage
from .driver import OWN, Outcome, Request

__all__ = ["CrashModel", "SimulatedEngine"]

#: Decides whether a request fails: (query, request number of that query, tokens it would
#: generate) -> tokens generated before it fails, or None if it does not fail.
CrashModel = Callable[[int, int, int], "int | None"]

#: A request in flight: (end tick, send order, request, tokens it generates, stopped on its
#: cap, fails). Tuples order by end tick, then send order.
_Flight = tuple[int, int, Request, int, bool, bool]


class SimulatedEngine:
    """Replays one sample per query (see the module docstring).

    Parameters
    ----------
    lengths : int array (N,)
        Each query's sample length, tokens.
    correct : bool array (N,)
        Whether that sample is correct.
    crash : callable, optional
        Failure injection (see :data:`CrashModel`): a failed request generated the tokens
        it says (charged) and its partial output is lost.
    model : str
        Its name in a run's identity.

    Attributes
    ----------
    generated : int array (N,)
        Tokens each query's generation has reached.
    now : int
        Ticks elapsed (the end of the last request taken back).
    """

    def __init__(
        self,
        lengths: NDArray[np.int64],
        correct: NDArray[np.bool_],
        *,
        crash: CrashModel | None = None,
        model: str = "simulated",
    ) -> None:
        self.lengths = [int(x) for x in lengths]
        self.correct = [bool(x) for x in correct]
        self.crash = crash
        self._model = model
        self.generated = np.zeros(len(self.lengths), dtype=np.int64)
        self._sent = [0] * len(self.lengths)
        self._heap: list[_Flight] = []
        self.now = 0

    @property
    def model(self) -> str:
        return self._model

    @property
    def in_flight(self) -> int:
        return len(self._heap)

    def submit(self, request: Request) -> None:
        q, cap = request.query, request.max_tokens
        if request.kind in OWN:
            left = self.lengths[q] - int(self.generated[q])
            tokens, capped = min(left, cap), left > cap
        else:
            tokens, capped = cap, False
        failed = False
        if self.crash is not None:
            cut = self.crash(q, self._sent[q], tokens)
            if cut is not None:
                tokens, capped, failed = max(0, min(int(cut), tokens)), False, True
        self._sent[q] += 1
        heapq.heappush(
            self._heap, (self.now + tokens, request.seq, request, tokens, capped, failed)
        )

    async def next_done(self) -> tuple[Request, Outcome]:
        end, _, request, tokens, capped, failed = heapq.heappop(self._heap)
        self.now = end
        q = request.query
        if failed:
            return request, EngineError("simulated failure", charge=tokens)
        right: bool | None = None
        if request.kind in OWN:
            self.generated[q] += tokens
            right = self.correct[q] and not capped
        return request, Completion(
            text="",
            finish_reason="length" if capped else "stop",
            usage=Usage(0, tokens),
            latency_s=float(tokens),
            attempts=1,
            correct=right if request.kind in OWN else False,
        )

    async def cancel(self) -> None:
        self._heap.clear()

    async def continuation(self) -> Continuation:
        return "prefill"
