"""The Engine contract, run against both engines: the simulated one and HTTP (the real client
against a real replay server on a loopback socket).

To check another engine, subclass :class:`EngineContract` and define ``engine(lengths,
correct)``: an async context manager yielding an engine that answers query i with a sample
of ``lengths[i]`` tokens, right when ``correct[i]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from shadowprice.engine.books import Books
from shadowprice.engine.client import ChatClient, Completion
from shadowprice.engine.driver import DriveOptions, Driver, Engine, HttpEngine, PlanItem, Request
from shadowprice.engine.grading import ExactGrader
from shadowprice.engine.replay_server import ReplayServer, replay_gold, serving
from shadowprice.engine.simulated import SimulatedEngine
from shadowprice.ledger import MemoryLedger
from shadowprice.live import OneShot
from shadowprice.traces import TraceSet

LENGTHS = [30, 80, 5, 120]
CORRECT = [True, True, False, True]


def traces(lengths: list[int], correct: list[bool]) -> TraceSet:
    return TraceSet(
        [
            {"id": f"q{i}", "answer": str(7 * i), "samples": [{"tokens": n, "correct": c}]}
            for i, (n, c) in enumerate(zip(lengths, correct, strict=True))
        ]
    )


def items(ts: TraceSet) -> list[PlanItem]:
    return [
        PlanItem(r["id"], [{"role": "user", "content": r["id"]}], 0, gold=replay_gold(r))
        for r in ts.records
    ]


def request(seq: int, q: int, tokens: int, prefix: str = "", kind: str = "start") -> Request:
    messages = [{"role": "user", "content": f"q{q}"}]
    if prefix:
        messages.append({"role": "assistant", "content": prefix})
    return Request(seq, q, kind, messages, tokens, {})


def right(comp: Completion, gold: str, text: str) -> bool:
    """Whether an answer is right, as the driver grades it (the engine's verdict, else the
    text)."""
    if comp.correct is not None:
        return comp.correct
    return ExactGrader()(text, gold).correct is True


class EngineContract:
    """What every :class:`~shadowprice.engine.driver.Engine` must do."""

    def engine(self, lengths: list[int], correct: list[bool]) -> Any:
        raise NotImplementedError

    def run(self, test: Any) -> Any:
        async def go() -> Any:
            async with self.engine(LENGTHS, CORRECT) as eng:
                return await test(eng)

        return asyncio.run(go())

    def test_it_is_an_engine(self) -> None:
        async def test(eng: Any) -> None:
            assert isinstance(eng, Engine) and eng.model and eng.in_flight == 0

        self.run(test)

    def test_a_request_generates_its_sample_up_to_its_cap(self) -> None:
        async def test(eng: Any) -> None:
            for seq, (q, cap) in enumerate([(0, 100), (1, 50), (2, 5)]):
                eng.submit(request(seq, q, cap))
                assert eng.in_flight == 1
                req, comp = await eng.next_done()
                assert req.seq == seq and eng.in_flight == 0
                assert comp.usage.completion_tokens == min(LENGTHS[q], cap)
                assert comp.finish_reason == ("length" if LENGTHS[q] > cap else "stop")

        self.run(test)

    def test_a_continuation_picks_up_where_the_generation_stopped(self) -> None:
        async def test(eng: Any) -> None:
            eng.submit(request(0, 3, 50))
            _, first = await eng.next_done()
            assert (first.usage.completion_tokens, first.finish_reason) == (50, "length")
            assert not right(first, "21", first.text)  # cut off: no answer yet
            eng.submit(request(1, 3, 40, first.text, "extend"))
            _, second = await eng.next_done()
            assert (second.usage.completion_tokens, second.finish_reason) == (40, "length")
            eng.submit(request(2, 3, 100, first.text + second.text, "extend"))
            _, third = await eng.next_done()
            assert (third.usage.completion_tokens, third.finish_reason) == (30, "stop")
            assert right(third, "21", first.text + second.text + third.text)

        self.run(test)

    def test_answers_are_right_only_for_correct_samples_that_finish(self) -> None:
        async def test(eng: Any) -> None:
            for seq, q in enumerate(range(len(LENGTHS))):
                eng.submit(request(seq, q, 1000))
                _, comp = await eng.next_done()
                assert right(comp, str(7 * q), comp.text) == CORRECT[q]

        self.run(test)

    def test_every_request_comes_back_once_and_cancel_drops_the_rest(self) -> None:
        async def test(eng: Any) -> None:
            for seq in range(4):
                eng.submit(request(seq, seq, 10))
            assert eng.in_flight == 4
            seen = set()
            for _ in range(2):
                req, _ = await eng.next_done()
                seen.add(req.seq)
            assert len(seen) == 2 and eng.in_flight == 2
            await eng.cancel()
            assert eng.in_flight == 0

        self.run(test)

    def test_the_driver_gets_the_same_outcomes_from_it(self) -> None:
        """A plan of fixed caps through the one driver: tokens, finish and grade per query
        are the simulated engine's."""

        async def drive(eng: Any) -> list[tuple[int, bool, bool]]:
            ts = traces(LENGTHS, CORRECT)
            ledger = MemoryLedger(400)
            driver = Driver(
                items(ts),
                OneShot([100, 50, 40, 130]),
                eng,
                Books(ledger),
                ExactGrader(),
                DriveOptions(concurrency=1, params={}),
            )
            await driver.run()
            return [
                (driver.tokens(q), driver.last[q].finish_reason == "stop", driver.grade(q).correct)  # type: ignore[union-attr]
                for q in range(len(LENGTHS))
            ]

        got = self.run(drive)
        assert got == [(30, True, True), (50, False, False), (5, True, False), (120, True, True)]


class TestSimulatedEngine(EngineContract):
    @contextlib.asynccontextmanager
    async def engine(self, lengths: list[int], correct: list[bool]) -> AsyncIterator[Any]:
        yield SimulatedEngine(np.asarray(lengths), np.asarray(correct))


class TestHttpEngine(EngineContract):
    @contextlib.asynccontextmanager
    async def engine(self, lengths: list[int], correct: list[bool]) -> AsyncIterator[Any]:
        server = ReplayServer(traces(lengths, correct))
        async with serving(server.app) as url, ChatClient(url, "replay") as client:
            yield HttpEngine(client)


def test_the_simulated_engine_returns_requests_that_end_together_in_send_order() -> None:
    async def go() -> list[int]:
        eng = SimulatedEngine(np.array([10, 10, 10]), np.array([True, True, True]))
        for seq in (0, 1, 2):
            eng.submit(request(seq, seq, 10))
        return [(await eng.next_done())[0].seq for _ in range(3)]

    assert asyncio.run(go()) == [0, 1, 2]


@pytest.mark.parametrize("kind", ["force", "fallback"])
def test_side_requests_on_the_simulated_engine_spend_their_allowance_and_answer_nothing(
    kind: str,
) -> None:
    async def go() -> Completion:
        eng = SimulatedEngine(np.array([10]), np.array([True]))
        eng.submit(request(0, 0, 8, kind=kind))
        _, comp = await eng.next_done()
        assert isinstance(comp, Completion)
        return comp

    comp = asyncio.run(go())
    assert comp.usage.completion_tokens == 8 and comp.correct is False


def test_a_worker_drives_its_block_of_queries_under_a_shared_ledger(tmp_path: Any) -> None:
    """drive(): what a worker process of a larger run calls. Two blocks, each through its own
    journal over one shared budget, on either engine: every token is on a record, and the two
    blocks together never pass the budget."""
    from shadowprice.engine.driver import drive
    from shadowprice.engine.records import QueryRecord
    from shadowprice.ledger import JournalLedger

    lengths, correct = [40, 90, 25, 60, 150, 10], [True, False, True, True, True, False]
    ts = traces(lengths, correct)
    shared = MemoryLedger(250)

    async def block(k: int, eng: Any) -> list[QueryRecord]:
        mine = items(ts)[3 * k : 3 * k + 3]
        journal = JournalLedger(tmp_path / f"w{k}.journal.jsonl", 250, config={}, shared=shared)
        try:
            return await drive(
                mine, OneShot([100] * 3), eng, journal, options=DriveOptions(2, {}), grader="exact"
            )
        finally:
            await journal.aclose()

    async def go() -> list[QueryRecord]:
        server = ReplayServer(ts)
        async with serving(server.app) as url, ChatClient(url, "replay") as client:
            first = await block(0, HttpEngine(client))
        second = await block(1, SimulatedEngine(np.asarray(lengths[3:]), np.asarray(correct[3:])))
        return first + second

    records = asyncio.run(go())
    assert [r.id for r in records] == [f"q{i}" for i in range(6)]
    assert all(isinstance(r, QueryRecord) for r in records)
    spent = asyncio.run(shared.state()).spent
    assert sum(r.tokens for r in records) == spent <= 250
    assert records[0].correct is True and records[1].status == "done"


def test_a_continuation_is_checked_against_what_the_policy_was_offered(tmp_path: Any) -> None:
    """On a shared budget, other workers reserve between any two reads of what is available:
    a continuation that fit what the policy was offered is sent or, if the budget moved
    meanwhile, dropped at reservation; it is never a policy error (the driver used to check it
    against a second read)."""
    from shadowprice.ledger import JournalLedger
    from shadowprice.live.base import Action

    class Sibling(MemoryLedger):
        """A shared budget where another worker reserves 10 tokens at every look once armed."""

        armed = False

        async def state(self) -> Any:
            if self.armed:
                await self.reserve(10)
            return await super().state()

    class ExtendOnce:
        n, running = 1, 0

        def __init__(self) -> None:
            self.started = self.extended = False

        def next_start(self, available: int) -> Action | None:
            if self.started:
                return None
            self.started = True
            return Action(0, 20, 20)

        def on_finish(self, query: int, generated: int, capped: bool, available: int) -> Any:
            if not capped or self.extended:
                return None
            self.extended, shared.armed = True, True
            return Action(0, 20 + available, available, "extend")

        def on_error(self, query: int, charged: int) -> bool:
            return False

    shared = Sibling(100)

    async def go() -> Any:
        journal = JournalLedger(tmp_path / "w.journal.jsonl", 100, config={}, shared=shared)
        try:
            eng = SimulatedEngine(np.array([500]), np.array([True]))
            ts = traces([500], [True])
            driver = Driver(items(ts), ExtendOnce(), eng, Books(journal), ExactGrader(),
                            DriveOptions(1, {}))  # fmt: skip
            await driver.run()
            return driver
        finally:
            await journal.aclose()

    driver = asyncio.run(go())
    rec = driver.records[0]
    assert rec["status"] == "done" and rec["tokens"] == 100  # 20, then the 80 offered
    assert shared.book.state().spent == 100  # the sibling's looks only reserved
    assert driver.books.total == sum(driver.books.charged.values()) == 100
