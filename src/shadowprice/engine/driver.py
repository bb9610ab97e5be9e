"""The one driver: any policy, against any engine, every token booked in one ledger.

A *policy* (:class:`~shadowprice.live.LivePolicy`: a one-shot plan, ``clear-live``, ...)
decides what to send; an *engine* (:class:`Engine`) runs requests; the driver connects them
and keeps the books. ``run`` drives the HTTP engine (:class:`HttpEngine`, a real endpoint
through :class:`~shadowprice.engine.client.ChatClient`), ``evaluate --accounting spent`` the
simulated one (:class:`~shadowprice.engine.simulated.SimulatedEngine`, trace samples replayed
on slots) or, with ``--engine http``, the HTTP engine against a replay server; the loop below
is the same code in every case.

The loop. Whenever fewer than ``concurrency`` requests are in flight, ask the policy for its
next action given the tokens the ledger has available; **reserve** the request's
``max_tokens`` (a journal writes it to disk before the request can leave) and submit it.
When a request ends, **settle** its reservation with the tokens the engine reports (what it
did not use returns to the ledger) and tell the policy, which may continue the same
generation, ask for the answer (``force``), retry a failure, or send nothing more. Actions
that send nothing (``abandon``) are recorded at once. Every token is charged to the query that
spent it (:class:`~.books.Books`), and an engine whose answers cannot be read is stopped being
sent to (:class:`~.books.UnreadableStreak`): what the policy asks for then is recorded as not
sent.

Each query gets one record when it is over (again if a later request changes it), built in
one place (:meth:`Driver.record`) whatever the policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..ledger import InProcess, Ledger
from ..live.base import Action, LivePolicy
from ..live.oneshot import DROPPED_REASON
from .books import Books, UnreadableStreak
from .client import ChatClient, Completion, Continuation, EngineError
from .forcing import fallback_messages, forcing_messages
from .grading import Grade, Grader
from .records import QueryRecord

__all__ = [
    "VLLM_CONTINUE",
    "DriveOptions",
    "Driver",
    "Engine",
    "HttpEngine",
    "PlanItem",
    "PolicyError",
    "Priced",
    "Request",
    "drive",
]

#: Fields that make vLLM / SGLang continue a final assistant message instead of answering it.
VLLM_CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}
#: Request kinds that carry a query's own generation (the others are side requests).
OWN = frozenset({"start", "extend", "retry"})


class PolicyError(RuntimeError):
    """The policy asked for something it was not offered (more tokens than available, a
    continuation of another query): a bug in the policy."""


@dataclass
class PlanItem:
    """One query to execute. ``budget == 0`` means abandoned (not sent).

    Attributes
    ----------
    id : str
        Unique query id (its reservations are tagged with it).
    messages : list of dict
        The chat messages of the query.
    budget : int
        Its cap under a fixed plan (0: abandoned); a live policy sets caps as it goes.
    gold : str, optional
        The gold answer, for grading.
    reason : str
        Why it was abandoned, when it was.
    meta : dict
        Copied into its record.
    params : dict
        Sampling parameters of this query's requests, over the run's (e.g. ``seed``).
    """

    id: str
    messages: list[dict[str, str]]
    budget: int
    gold: str | None = None
    reason: str = ""  # why it was abandoned, when it was
    meta: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One request the driver submits to an engine.

    Attributes
    ----------
    seq : int
        Order sent (engines break ties between requests that end together by it).
    query : int
        Index of the query in the driver's items.
    kind : str
        The action that sent it (``start``, ``extend``, ``retry``, ``force``, ``fallback``).
    messages : list of dict
        The conversation to complete (a continuation ends with the partial answer).
    max_tokens : int
        Its allowance: exactly what was reserved for it.
    params : mapping
        Sampling parameters.
    """

    seq: int
    query: int
    kind: str
    messages: list[dict[str, str]]
    max_tokens: int
    params: Mapping[str, Any]


#: How a request ended: its completion, or the error (with what it may have cost).
Outcome = Completion | EngineError


@runtime_checkable
class Engine(Protocol):
    """Where requests run: the driver submits them and takes them back as they end.

    An engine answers each :class:`Request` with a
    :class:`~shadowprice.engine.client.Completion` (its usage says what was generated) or an
    :class:`~shadowprice.engine.client.EngineError` (its ``charge`` says what it may have
    cost). Requests that end together come back in the order they were sent.
    """

    @property
    def model(self) -> str:
        """The model's name (part of a run's identity)."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet taken back."""
        ...

    def submit(self, request: Request) -> None:
        """Start ``request``."""
        ...

    async def next_done(self) -> tuple[Request, Outcome]:
        """Wait for the next request to end (one must be in flight)."""
        ...

    async def cancel(self) -> None:
        """Abandon every request in flight (their answers are never read)."""
        ...

    async def continuation(self) -> Continuation:
        """How this engine continues a final assistant message."""
        ...


@runtime_checkable
class Priced(Protocol):
    """A policy that prices as it goes (its price is shown as it runs)."""

    @property
    def price(self) -> float:
        """The current price, value per token."""
        ...


class HttpEngine:
    """An OpenAI-compatible endpoint, through :class:`~shadowprice.engine.client.ChatClient`.

    Parameters
    ----------
    client : ChatClient
        Its retries never spend a reservation twice (see :mod:`~shadowprice.engine.client`).
    """

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self._tasks: dict[asyncio.Task[Completion], Request] = {}

    @property
    def model(self) -> str:
        return self.client.model

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, request: Request) -> None:
        task = asyncio.ensure_future(
            self.client.chat(request.messages, request.max_tokens, **request.params)
        )
        self._tasks[task] = request

    async def next_done(self) -> tuple[Request, Outcome]:
        done = [t for t in self._tasks if t.done()]
        if not done:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            done = [t for t in self._tasks if t.done()]
        task = min(done, key=lambda t: self._tasks[t].seq)
        request = self._tasks.pop(task)
        try:
            return request, task.result()
        except EngineError as exc:
            return request, exc

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def continuation(self) -> Continuation:
        return await self.client.continuation()


@dataclass
class DriveOptions:
    """How the driver sends.

    Attributes
    ----------
    concurrency : int
        Requests in flight at once (>= 1).
    params : dict
        Sampling parameters of every request (a query's own ``params`` go over them).
    continuation : {'prefill', 'vllm', 'off'}
        How the engine continues a partial answer (``vllm`` sends :data:`VLLM_CONTINUE`).
    policy : str, optional
        The policy's name, written in every record.
    unsent : str
        Why a query the policy never sent (nor abandoned by an action) was not funded.
    records : bool
        Build each query's record as it ends (a simulation that only needs the totals turns
        this off).
    """

    concurrency: int = 8
    params: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.0})
    continuation: Continuation = "off"
    policy: str | None = None
    unsent: str = "not funded by the policy"
    records: bool = True


class Driver:
    """One run of ``policy`` over ``items`` on ``engine`` (see the module docstring).

    Parameters
    ----------
    items : sequence of PlanItem
        The queries; the policy refers to them by index.
    policy : LivePolicy
        A fresh policy over these items.
    engine : Engine
    books : Books
        The ledger and the tokens charged per query (earlier runs' included).
    grader : Grader
    options : DriveOptions

    Attributes
    ----------
    records : list of dict
        Each record as it was emitted (a query's later record supersedes its earlier one).
    on_record : list of callable
        Called with each query's first record (a progress bar).
    text : list of str
        What each query has generated (its partial answer).
    requests, extensions, allotted : list of int
        Per query: requests of its own generation, continuations among them, and tokens
        reserved for all its requests.
    """

    def __init__(
        self,
        items: Sequence[PlanItem],
        policy: LivePolicy,
        engine: Engine,
        books: Books,
        grader: Grader,
        options: DriveOptions,
        out: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        n = len(items)
        self.items, self.policy, self.engine, self.books = items, policy, engine, books
        self.grader, self.options, self.out = grader, options, out
        self.streak = UnreadableStreak()
        self.text = [""] * n
        self.errors = [""] * n
        self.cap = [int(item.budget) for item in items]
        self.requests = [0] * n
        self.extensions = [0] * n
        self.allotted = [0] * n
        self.last: list[Completion | None] = [None] * n  # last answer of its own generation
        self.answers: list[list[Completion]] = [[] for _ in range(n)]  # every answer it got
        self.forced: list[Completion | None] = [None] * n
        self.fallback: list[Completion | None] = [None] * n
        self.forcing_tokens = [0] * n
        self.unfunded = [""] * n  # why a query given a fallback was not funded
        self.failed_tokens = 0  # charged to requests that failed, in this run
        #: (status, tokens) of each query's last record; None until it has one.
        self.emitted: list[tuple[str, int] | None] = [None] * n
        self.records: list[dict[str, Any]] = []
        self.on_record: list[Callable[[dict[str, Any]], None]] = []
        self._open: dict[int, Any] = {}  # request seq -> reservation
        self._seq = 0
        ledger = books.ledger
        self._book = ledger.book if isinstance(ledger, InProcess) else None

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive until the policy has nothing to send and nothing is in flight; record every
        query. A cancellation cancels the requests in flight and leaves the books as a crash
        would (see :meth:`stop` for a clean stop)."""
        try:
            while True:
                await self._fill()
                if not self.engine.in_flight:
                    break
                request, outcome = await self.engine.next_done()
                await self._ended(request, outcome)
        except asyncio.CancelledError:
            await self.engine.cancel()
            raise
        self._close()

    async def available(self) -> int:
        """Tokens the ledger has available now."""
        if self._book is not None:  # in this process: no need to go through the protocol
            return self._book.available()
        return (await self.books.ledger.state()).available

    async def _fill(self) -> None:
        while self.engine.in_flight < self.options.concurrency:
            available = self._book.available() if self._book else await self.available()
            act = self.policy.next_start(available)
            if act is None:
                return
            await self._act(act, available)

    async def _act(self, act: Action, available: int) -> None:
        """Carry out one action of the policy, offered ``available`` tokens."""
        q = act.query
        if act.kind == "abandon":
            self._abandoned(q, act.reason)
            return
        if act.tokens > available or act.tokens < 1:
            raise PolicyError(
                f"the policy sent query {q} with max_tokens {act.tokens} but only {available} "
                f"tokens are available"
            )
        if self.streak.tripped:
            self._unsent(act, self.streak.reason(), "error")
            return
        item = self.items[q]
        tag = item.id if act.kind in OWN else f"{act.kind}:{item.id}"
        res = await self.books.reserve(item.id, act.tokens, tag=tag)
        if res is None:  # another worker took the tokens meanwhile (a shared budget)
            self._unsent(act, DROPPED_REASON, "abandoned")
            return
        self._send(act, res)

    def _send(self, act: Action, res: Any) -> None:
        q = act.query
        item = self.items[q]
        params = {**self.options.params, **item.params} if item.params else self.options.params
        if act.kind in OWN:
            self.cap[q] = int(act.cap)
            self.requests[q] += 1
            self.extensions[q] += act.kind == "extend"
            messages = item.messages
            if self.text[q]:
                messages = [*messages, {"role": "assistant", "content": self.text[q]}]
                if self.options.continuation == "vllm":
                    params = {**params, **VLLM_CONTINUE}
        elif act.kind == "force":
            messages = forcing_messages(item.messages, self.text[q])
        else:
            messages = fallback_messages(item.messages)
            self.unfunded[q] = self._unfunded_reason(q, act.reason)
        self.allotted[q] += res.tokens
        self._open[self._seq] = res
        self.engine.submit(Request(self._seq, q, act.kind, messages, res.tokens, params))
        self._seq += 1

    def _unsent(self, act: Action, why: str, status: str) -> None:
        """An action that could not be sent: the policy hears it failed at no cost."""
        q = act.query
        if self.policy.on_error(q, 0):
            return  # it will ask again
        if act.kind == "fallback":
            self.finish(q, "abandoned", self._unfunded_reason(q, act.reason))
        elif act.kind == "force" or self.last[q] is not None:
            self.finish(q, "done")
        elif self.errors[q] or self.tokens(q):
            self.finish(q, "error", f"{self.errors[q] or 'earlier attempts failed'}; {why}")
        else:
            self.finish(q, status, why)

    async def _ended(self, request: Any, outcome: Outcome) -> None:
        """A request ended: settle it, tell the policy, record the query if it is over."""
        q, kind = request.query, request.kind
        res = self._open.pop(request.seq)
        if isinstance(outcome, EngineError):
            charged = await self.books.settle(res, min(outcome.charge, res.tokens))
            self.streak.failed(res.tag, str(outcome), charged)
            again = self.policy.on_error(q, charged)
            if kind == "force":
                self.forcing_tokens[q] += charged
                self.finish(q, "done")
            elif kind == "fallback":
                self.finish(q, "abandoned", f"{self.unfunded[q]}; fallback failed: {outcome}")
            else:
                self.errors[q] = str(outcome)
                self.failed_tokens += charged
                if not again:
                    self.finish(q, "error", str(outcome))
            return
        self.streak.answered()
        used = await self.books.settle(res, outcome.usage.completion_tokens)
        if kind in OWN:
            new = outcome.text
            if self.text[q] and new.startswith(self.text[q]):
                new = new[len(self.text[q]) :]  # llama.cpp repeats the prefix it continues
            self.text[q] += new
            self.last[q] = outcome
            self.answers[q].append(outcome)
        elif kind == "force":
            self.forcing_tokens[q] += used
            self.forced[q] = outcome
        else:
            self.fallback[q] = outcome
        capped = kind in OWN and outcome.finish_reason == "length"
        available = self._book.available() if self._book else await self.available()
        nxt = self.policy.on_finish(q, used, capped, available)
        if nxt is None:
            if kind == "fallback":
                self.finish(q, "fallback", self.unfunded[q])
            else:
                self.finish(q, "done")
            return
        if nxt.query != q:
            raise PolicyError(f"a continuation must be of query {q}, got {nxt.query}")
        await self._act(nxt, available)  # what it was offered: a shared budget moves

    def _abandoned(self, q: int, reason: str) -> None:
        """The policy will never send query ``q`` (what earlier attempts cost stays on it)."""
        self.finish(q, "abandoned", self._unfunded_reason(q, reason))

    def _unfunded_reason(self, q: int, reason: str) -> str:
        return self.items[q].reason or reason or "not funded"

    def _close(self) -> None:
        """Record every query the loop left without a record: an answer is done, a failure is
        an error (retried on resume), a query never sent is abandoned (or an error, if the
        run stopped sending to an endpoint that answers garbage)."""
        for q in range(len(self.items)):
            if self.emitted[q] is not None:
                continue
            if self.last[q] is not None:
                self.finish(q, "done")
            elif self.errors[q] or self.tokens(q):
                failed = self.errors[q] or "earlier attempts failed"
                self.finish(q, "error", f"{failed}; not retried: {self._why_not()}")
            elif self.streak.tripped:
                self.finish(q, "error", self.streak.reason())
            else:
                self.finish(q, "abandoned", self._unsent_reason())

    def _unsent_reason(self) -> str:
        """Why a query the policy never sent was abandoned."""
        base = self.options.unsent
        if not self.failed_tokens:
            return base
        return (
            f"{base} ({self.failed_tokens} tokens of the budget were charged to requests that "
            f"failed: see the errors)"
        )

    def _why_not(self) -> str:
        if self.streak.tripped:
            return self.streak.reason().removeprefix("not sent: ")
        return "the budget left could not hold its request"

    async def stop(self, why: str) -> int:
        """The run was stopped by ``why`` (a signal): cancel the requests in flight, count
        each as spent in full, record its query as failed (retried on resume) and every other
        query it started as it stands. Returns the requests so counted."""
        await self.engine.cancel()
        requests = len(self.books.open)
        cut = await self.books.settle_open()
        self._open.clear()
        for q, item in enumerate(self.items):
            if item.id in cut:
                self.finish(q, "error", interrupted_reason(why, cut[item.id]))
            elif self.emitted[q] is None and self.last[q] is not None:
                self.finish(q, "done")
            elif self.emitted[q] is None and (self.errors[q] or self.tokens(q)):
                failed = self.errors[q] or "earlier attempts failed"
                self.finish(q, "error", f"{failed}; interrupted ({why}) before it was retried")
        return requests

    # -- records --------------------------------------------------------------------------
    def tokens(self, q: int) -> int:
        """Everything charged to query ``q`` (earlier runs and failed attempts included)."""
        return int(self.books.charged[self.items[q].id])

    def finish(self, q: int, status: str, reason: str = "") -> None:
        """Record query ``q``; again only if its status or tokens changed since (a query
        recorded when it stopped on its cap may be continued later)."""
        tokens = self.tokens(q)
        if self.emitted[q] == (status, tokens):
            return
        first = self.emitted[q] is None
        self.emitted[q] = (status, tokens)
        if not self.options.records:
            return
        record = self.record(q, status, reason)
        self.records.append(record)
        if self.out is not None:
            self.out(record)
        if first:
            for hook in self.on_record:
                hook(record)

    def grade(self, q: int) -> Grade:
        """The answer of query ``q`` and whether it is right (a forced answer counts when the
        generation itself gave none)."""
        gold = self.items[q].gold
        comp = self.last[q]
        if comp is not None and comp.correct is not None:
            return Grade(None, comp.correct)  # the engine knows (a replayed sample)
        if not self.text[q]:
            return Grade(None, False if gold is not None else None)
        grade = self.grader(self.text[q], gold)
        forced = self.forced[q]
        if forced is not None:
            again = self.grader(forced.text, gold)
            if again.answer is not None:
                grade = again
        return grade

    def record(self, q: int, status: str, reason: str = "") -> dict[str, Any]:
        """The record of query ``q`` with ``status`` (one JSON line of the results)."""
        item = self.items[q]
        unfunded = status in ("abandoned", "fallback")
        rec: dict[str, Any] = {
            "id": item.id,
            "budget": 0 if unfunded else int(self.cap[q]),
            "gold": item.gold,
            **item.meta,
            "status": status,
        }
        if reason:
            rec["reason"] = reason
        if self.options.policy:
            rec["policy"] = self.options.policy
        rec["tokens"] = self.tokens(q)
        answers = self.answers[q]
        if status == "fallback":
            fb = self.fallback[q]
            assert fb is not None
            grade = self.grader(fb.text, item.gold)
            answers, text = [fb], fb.text
        else:
            grade = self.grade(q)
            text = self.text[q]
            rec.update(requests=self.requests[q], extensions=self.extensions[q])
        if answers:
            forced = self.forced[q] if status != "fallback" else None
            both = [*answers, forced] if forced is not None else answers
            rec.update(
                finish_reason=answers[-1].finish_reason,
                completion_tokens=sum(c.usage.completion_tokens for c in answers),
                reasoning_tokens=sum(c.usage.reasoning_tokens for c in answers),
                prompt_tokens=sum(c.usage.prompt_tokens for c in both),
                usage_trusted=all(c.usage.trusted for c in answers),
                attempts=sum(c.attempts for c in answers),
                latency_s=round(sum(c.latency_s for c in both), 4),
            )
        if status != "fallback" and not unfunded:
            rec.update(forced=self.forced[q] is not None, forcing_tokens=self.forcing_tokens[q])
            if self.forced[q] is not None:
                rec["forced_text"] = self.forced[q].text  # type: ignore[union-attr]
        rec.update(
            answer=grade.answer,
            correct=grade.correct if item.gold is not None else None,
            text=text,
        )
        if item.gold is not None and rec["correct"] is None:
            rec["correct"] = False
        return rec


def interrupted_reason(why: str, tokens: int) -> str:
    """The error reason of a query whose request a stopped run cut off."""
    return (
        f"interrupted ({why}) with its request in flight: counted as spent in full "
        f"({tokens} tokens); re-run to retry it"
    )


async def drive(
    items: Sequence[PlanItem],
    policy: LivePolicy,
    engine: Engine,
    ledger: Ledger,
    *,
    options: DriveOptions | None = None,
    grader: Grader | str | None = "math",
    prior: Mapping[str, int] | None = None,
) -> list[QueryRecord]:
    """Run ``policy`` over ``items`` on ``engine``, every token booked in ``ledger``: the loop
    every run uses, for one block of queries (a worker of a larger run, e.g. on another
    machine sharing a Redis ledger or keeping its own journal).

    Parameters
    ----------
    items : sequence of PlanItem
    policy : LivePolicy
        A fresh policy over ``items``.
    engine : Engine
    ledger : Ledger
        Reserves before every request and settles after (a journal makes it resumable).
    options : DriveOptions, optional
    grader : Grader or str, optional
    prior : mapping, optional
        ``query id -> tokens`` earlier attempts charged (kept on their queries).

    Returns
    -------
    list of QueryRecord
        Each query's final record, in the order of ``items``.
    """
    from .grading import get_grader

    driver = Driver(
        items, policy, engine, Books(ledger, prior), get_grader(grader), options or DriveOptions()
    )
    await driver.run()
    last = {str(r["id"]): r for r in driver.records}
    return [QueryRecord.of(last[item.id]) for item in items if item.id in last]
