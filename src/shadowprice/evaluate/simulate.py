"""Score live policies exactly as ``run`` executes them: the one driver on the simulated engine.

Under *spent* accounting what a query costs depends on when the others end (tokens they leave
return to the ledger, the price moves, a request may be continued), so a policy cannot be
scored by replaying fixed caps. :func:`simulate` runs it instead through the same driver as
``run`` (:class:`~shadowprice.engine.driver.Driver`), on the simulated engine
(:class:`~shadowprice.engine.simulated.SimulatedEngine`):

- ``concurrency`` slots, each generating one token per tick; a request capped at m tokens for
  a query whose sample is L tokens long ends after min(L - generated so far, m) ticks, on its
  cap if L is longer;
- a :class:`~shadowprice.ledger.MemoryLedger` holds the budget: every request's ``max_tokens``
  is reserved before it is sent and settled with the tokens generated when it ends, so Σ spent
  can never exceed the budget;
- the policy (:class:`~shadowprice.live.LivePolicy`: ``clear-live``, a one-shot plan, ...) is
  asked what to start whenever a slot is free, and told about every request that ends; events
  at the same tick are handled in the order their requests were sent.

A **world** fixes one scoring sample per query (its length and whether it is correct); a
query counts as answered if its sample is correct and the generation reached its end.
Policies are scored over several worlds, each query's samples used equally often
(:func:`sample_worlds`), which for a fixed plan whose caps all fit reproduces
:func:`~shadowprice.evaluate.replay.replay`'s expectation exactly.

The **spent-accounting hindsight ceiling** (:func:`spent_ceiling`): in each world, run only
the correct samples, shortest first, until the budget is spent. Nothing can answer more in that
world with the same tokens (an exchange argument: every answer costs at least its length).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..engine.books import Books
from ..engine.client import ChatClient
from ..engine.driver import DriveOptions, Driver, HttpEngine, PlanItem
from ..engine.grading import ExactGrader
from ..engine.replay_server import ReplayServer, serving
from ..engine.simulated import CrashModel, SimulatedEngine
from ..ledger import JournalLedger, LedgerState, MemoryLedger
from ..live.base import LivePolicy
from ..traces import TraceSet

__all__ = [
    "DEFAULT_CONCURRENCY",
    "ENGINES",
    "WorldResult",
    "Worlds",
    "drive_worlds",
    "run_now",
    "sample_worlds",
    "simulate",
    "spent_ceiling",
]

#: Slots of the simulated engine unless told otherwise (``--concurrency``).
DEFAULT_CONCURRENCY = 16
#: Engines a policy can be scored on (:func:`drive_worlds`).
ENGINES = ("sim", "http")
#: Salt for the worlds' generator (independent of data simulated with the same seed).
_SALT_WORLDS = 0x5107_0001


@dataclass(frozen=True)
class WorldResult:
    """What one run of a policy on one world did, per query and in total (a
    :class:`~shadowprice.engine.records.Scored` result).

    Attributes
    ----------
    answered : bool array (N,)
        The query's sample is correct and its generation reached the end within its caps.
    spent : int array (N,)
        Tokens generated for the query (failed attempts included).
    allotted : int array (N,)
        Tokens reserved for the query, summed over its requests (its caps).
    requests : int array (N,)
        Requests sent for the query (starts, continuations, retries).
    finished : bool array (N,)
        The generation reached its end (correct or not).
    budget : int
        The ledger's total.
    ledger : LedgerState
        The ledger at the end (``spent`` equals ``spent.sum()``).
    ticks : int
        Simulated time of the last event (one token per slot per tick).
    """

    answered: NDArray[np.bool_]
    spent: NDArray[np.int64]
    allotted: NDArray[np.int64]
    requests: NDArray[np.int64]
    finished: NDArray[np.bool_]
    budget: int
    ledger: LedgerState
    ticks: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.answered.size)

    @property
    def accuracy(self) -> float:
        return float(self.answered.mean()) if self.n else 0.0

    @property
    def tokens_spent(self) -> int:
        return int(self.spent.sum())

    @property
    def tokens_allotted(self) -> int:
        return int(self.allotted.sum())

    @property
    def abandonment(self) -> float:
        """Share of the queries never sent."""
        return float((self.requests == 0).mean()) if self.n else 0.0

    @property
    def within_budget(self) -> bool:
        """The ledger held: nothing generated past the budget or past a cap."""
        return self.ledger.spent <= self.budget and self.ledger.overrun == 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals (spent accounting: the budget bounded what was generated)."""
        return {
            "accounting": "spent",
            "accuracy": self.accuracy,
            "budget": self.budget,
            "tokens_spent": self.tokens_spent,
            "tokens_allotted": self.tokens_allotted,
            "abandonment": self.abandonment,
            "within_budget": self.within_budget,
            "requests": int(self.requests.sum()),
            "sent": int((self.requests > 0).sum()),
            "ticks": self.ticks,
        }

    @classmethod
    def of(cls, driver: Driver, ledger: LedgerState, ticks: int = 0) -> WorldResult:
        """The per-query outcome of a finished drive (on either engine)."""
        n = len(driver.items)
        requests = np.asarray(driver.requests, dtype=np.int64)
        finished = np.asarray(
            [c is not None and c.finish_reason != "length" for c in driver.last], dtype=bool
        )
        answered = [
            c is not None and driver.grade(q).correct is True for q, c in enumerate(driver.last)
        ]
        return cls(
            answered=np.asarray(answered, dtype=bool),
            spent=np.fromiter((driver.tokens(q) for q in range(n)), np.int64, n),
            allotted=np.asarray(driver.allotted, dtype=np.int64),
            requests=requests,
            finished=finished & (requests > 0),
            budget=ledger.total,
            ledger=ledger,
            ticks=int(ticks),
        )


def _check_world(
    lengths: ArrayLike, correct: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    L = np.asarray(lengths)
    c = np.asarray(correct)
    if L.ndim != 1 or c.shape != L.shape:
        raise ValueError(f"lengths and correct must be 1-D of one length, got {L.shape}, {c.shape}")
    if c.dtype != bool:
        raise ValueError(f"correct must be boolean, got dtype {c.dtype}")
    if not np.all(np.isfinite(L)) or np.any(L < 0):
        raise ValueError("lengths must be non-negative finite token counts")
    return L.astype(np.int64), c


@lru_cache(maxsize=8)
def _items(n: int) -> tuple[PlanItem, ...]:
    """N anonymous queries (ids ``"0"`` … ``"N-1"``) for simulated runs."""
    return tuple(PlanItem(str(i), [], 0) for i in range(n))


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits (a drive of the simulated engine over an in-process
    ledger) to its end, without an event loop.

    Raises
    ------
    RuntimeError
        If it does wait (an engine or ledger that does I/O): run it with :func:`asyncio.run`.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the drive waited for I/O: run it in an event loop instead")


def simulate(
    policy: LivePolicy,
    lengths: ArrayLike,
    correct: ArrayLike,
    budget: int,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    ledger: MemoryLedger | None = None,
    crash: CrashModel | None = None,
) -> WorldResult:
    """Run ``policy`` on one world (see module docstring): the one driver on the simulated
    engine.

    Parameters
    ----------
    policy : LivePolicy
        A fresh policy for these N queries (it is mutated).
    lengths : int array (N,)
        Each query's sample length in this world, tokens.
    correct : bool array (N,)
        Whether that sample is correct.
    budget : int
        Tokens that may be generated in all.
    concurrency : int
        Engine slots (requests generating at once).
    ledger : MemoryLedger, optional
        The ledger to charge (default: a fresh one of ``budget`` tokens).
    crash : callable, optional
        Failure injection for tests (see :data:`~shadowprice.engine.simulated.CrashModel`):
        a failed request is settled with the tokens it generated and its partial output is
        lost.

    Raises
    ------
    shadowprice.engine.driver.PolicyError
        When the policy asks for more tokens than it was offered.
    """
    L, c = _check_world(lengths, correct)
    if policy.n != L.size:
        raise ValueError(f"policy covers {policy.n} queries but the world has {L.size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if budget < 0:
        raise ValueError(f"budget must be non-negative, got {budget}")
    book = MemoryLedger(int(budget)) if ledger is None else ledger
    engine = SimulatedEngine(L, c, crash=crash)
    options = DriveOptions(concurrency, {}, "prefill", records=False)
    driver = Driver(_items(L.size), policy, engine, Books(book), ExactGrader(), options)
    run_now(driver.run())
    return WorldResult.of(driver, book.state_now(), engine.now)


def drive_worlds(
    make: Callable[[], LivePolicy],
    traces: TraceSet,
    worlds: Worlds,
    budget: int,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    engine: str = "sim",
) -> list[WorldResult]:
    """Run a fresh policy ``make()`` on each world drawn from ``traces``.

    Parameters
    ----------
    make : callable
        Makes a fresh policy over the N queries of ``traces``.
    traces : TraceSet
        The queries whose samples the worlds replay.
    worlds : Worlds
        From :func:`sample_worlds` on ``traces``.
    budget : int
        Tokens each run may generate.
    concurrency : int
        Requests in flight at once.
    engine : {'sim', 'http'}
        ``sim``: the simulated engine (:func:`simulate`). ``http``: the same runs through a
        real OpenAI-compatible server on a loopback socket that replays the worlds' samples
        (:class:`~shadowprice.engine.replay_server.ReplayServer`, each request's ``seed``
        naming its sample), the real client and a write-ahead journal in a temporary folder
        (in memory, ``/dev/shm``, where there is one: a journal fsyncs every reservation),
        answers graded from their text; at ``concurrency`` 1 it gives the simulated engine's
        outcomes exactly (above it, requests end in the order the server answers them).

    Returns
    -------
    list of WorldResult
        One per world.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "sim":
        return [
            simulate(make(), worlds.lengths[k], worlds.correct[k], budget, concurrency=concurrency)
            for k in range(worlds.w)
        ]
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return asyncio.run(_http_worlds(make, traces, worlds, int(budget), concurrency))


def _scratch() -> str | None:
    """A folder in memory for temporary journals, if this machine has one (else the default)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


async def _http_worlds(
    make: Callable[[], LivePolicy], traces: TraceSet, worlds: Worlds, budget: int, concurrency: int
) -> list[WorldResult]:
    """:func:`drive_worlds` through a replay server (see there)."""
    server = ReplayServer(traces)
    out = []
    async with serving(server.app) as url, ChatClient(url, server.model, timeout=120.0) as client:
        engine = HttpEngine(client)
        options = DriveOptions(concurrency, {}, await client.continuation())
        for k in range(worlds.w):
            items = [
                PlanItem(
                    qid,
                    [{"role": "user", "content": qid}],
                    0,
                    gold=server.golds[i],
                    params={"seed": int(worlds.index[k, i])},
                )
                for i, qid in enumerate(traces.ids)
            ]
            with tempfile.TemporaryDirectory(prefix="shadowprice-eval-", dir=_scratch()) as tmp:
                ledger = JournalLedger(Path(tmp) / "run.journal.jsonl", budget, config={"world": k})
                try:
                    driver = Driver(items, make(), engine, Books(ledger), ExactGrader(), options)
                    await driver.run()
                    out.append(WorldResult.of(driver, await ledger.state()))
                finally:
                    await ledger.aclose()
    return out


def spent_ceiling(lengths: ArrayLike, correct: ArrayLike, budget: float) -> NDArray[np.bool_]:
    """Hindsight ceiling of one world under spent accounting: which queries it answers.

    Correct samples, shortest first, while their lengths fit in ``budget`` (answering a query
    costs at least its length, so no policy answers more in this world). Shape (N,) bool.
    """
    L, c = _check_world(lengths, correct)
    idx = np.flatnonzero(c)
    order = idx[np.argsort(L[idx], kind="stable")]
    take = order[np.cumsum(L[order]) <= budget]
    out = np.zeros(L.size, dtype=bool)
    out[take] = True
    return out


@dataclass(frozen=True)
class Worlds:
    """W worlds over N queries: one sample each.

    Attributes
    ----------
    lengths : int array (W, N)
        Sample length per world and query, tokens.
    correct : bool array (W, N)
        Whether that sample is correct.
    index : int array (W, N)
        Which of the query's samples (its position in the trace record) each world uses.
    """

    lengths: NDArray[np.int64]
    correct: NDArray[np.bool_]
    index: NDArray[np.int64]

    @property
    def w(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n(self) -> int:
        return int(self.lengths.shape[1])


def sample_worlds(traces: TraceSet, n_worlds: int | None = None, seed: int = 0) -> Worlds:
    """Worlds from a trace set: world w gives query i its sample perm_i[w mod n_i].

    perm_i is a seeded random order of query i's samples, so with ``n_worlds`` a multiple of
    every query's sample count each sample is used equally often, and different queries'
    samples are paired at random. Default ``n_worlds``: the largest sample count.
    """
    if not isinstance(traces, TraceSet):
        raise TypeError(f"traces must be a TraceSet, got {type(traces).__name__}")
    n = traces.n_samples()
    if traces.n and n.min() < 1:
        raise ValueError("every query needs at least one sample to build worlds from")
    w = int(n.max(initial=1)) if n_worlds is None else int(n_worlds)
    if w < 1:
        raise ValueError(f"n_worlds must be at least 1, got {n_worlds}")
    t = traces.tokens()
    c = traces.correct()
    rng = np.random.default_rng([_SALT_WORLDS, seed])
    keys = rng.random(t.shape)
    keys[np.isnan(t)] = np.inf
    perm = np.argsort(keys, axis=1)  # present samples first, in random order
    j = perm[np.arange(traces.n)[None, :], np.arange(w)[:, None] % n[None, :]]  # (W, N)
    rows = np.arange(traces.n)[None, :]
    return Worlds(
        lengths=np.rint(t[rows, j]).astype(np.int64),
        correct=c[rows, j].astype(bool),
        index=j.astype(np.int64),
    )
