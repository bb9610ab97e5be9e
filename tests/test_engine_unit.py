"""The engine against an in-process fake OpenAI-compatible server (real HTTP on 127.0.0.1).

The fake can answer 429/500, stop on the length limit, misreport usage, or drop connections,
so retries, the ledger, resume, forcing and accounting are tested without a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shadowprice.engine.client import ChatClient, EngineError, normalize_base_url, parse_usage
from shadowprice.engine.collect import CollectConfig, CollectQuery, collect
from shadowprice.engine.results import RunFiles, read_records, summary_path
from shadowprice.engine.run import PlanItem, RunConfig, RunStateError, execute, prompt_messages
from shadowprice.ledger import JournalMismatch

Respond = Callable[[dict[str, Any], int], tuple[int, dict[str, Any] | None]]


def completion(text: str, tokens: int, finish: str = "stop", **usage: Any) -> dict[str, Any]:
    """A chat-completions body with one choice."""
    return {
        "choices": [
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": tokens, **usage},
    }


def solver(body: dict[str, Any], _: int) -> tuple[int, dict[str, Any] | None]:
    """Default behaviour: "need=N ans=A" in the prompt means N tokens to reach \\boxed{A}."""
    allowance = int(body.get("max_completion_tokens") or body["max_tokens"])
    last = body["messages"][-1]["content"]
    if "stop reasoning" in last.lower() or "without showing any work" in last.lower():
        ans = _field(body["messages"][0]["content"], "ans")
        return 200, completion(f"\\boxed{{{ans}}}", min(3, allowance))
    need = int(_field(last, "need"))
    if need > allowance:
        return 200, completion("thinking " * allowance, allowance, "length")
    return 200, completion(f"so \\boxed{{{_field(last, 'ans')}}}", need)


def _field(text: str, key: str) -> str:
    return text.split(f"{key}=")[1].split()[0]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or was killed leaves a broken pipe behind: expected here.
        pass


class FakeServer:
    """ThreadingHTTPServer in a thread; ``respond`` decides each answer."""

    def __init__(self) -> None:
        self.respond: Respond = solver
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    index = len(outer.requests) - 1
                status, payload = outer.respond(body, index)
                if payload is None:  # simulate a dropped connection
                    self.connection.close()
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # serve_forever notices shutdown() only once per poll: keep it short.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


def items(spec: list[tuple[int, int, str]]) -> list[PlanItem]:
    """Plan items from (budget, tokens needed, gold)."""
    return [
        PlanItem(f"q{i}", prompt_messages(f"need={need} ans={gold} "), budget, gold)
        for i, (budget, need, gold) in enumerate(spec)
    ]


def run(
    server: FakeServer,
    plan: list[PlanItem],
    total: int,
    out: Path | None = None,
    identity: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    async def main() -> Any:
        async with ChatClient(server.url, "fake", backoff=0.001, max_retries=3) as client:
            cfg = RunConfig(progress=False, **config)
            return await execute(
                plan, client, total_budget=total, out=out, config=cfg, identity=identity
            )

    return asyncio.run(main())


# --- client -----------------------------------------------------------------------------


def test_normalize_base_url() -> None:
    assert normalize_base_url("http://h:1") == "http://h:1/v1"
    assert normalize_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_base_url("http://h:1/v1/chat/completions") == "http://h:1/v1"


def test_parse_usage_distrusts_missing_or_zero_counts() -> None:
    ok = parse_usage(completion("hi", 4, completion_tokens_details={"reasoning_tokens": 2}), 9)
    assert (ok.completion_tokens, ok.reasoning_tokens, ok.trusted) == (4, 2, True)
    missing = parse_usage({"choices": [{"message": {"content": "hi"}}]}, 9)
    assert (missing.completion_tokens, missing.trusted) == (9, False)  # charge the allowance
    zero = parse_usage(completion("some text", 0), 9)
    assert (zero.completion_tokens, zero.trusted) == (9, False)
    llama = parse_usage({**completion("x", 0), "timings": {"predicted_n": 5}}, 9)
    assert llama.completion_tokens == 5


def test_refusals_before_generating_are_retried_under_one_reservation(server: FakeServer) -> None:
    faults = {0: (429, {"error": "slow down"}), 1: (503, {"error": "busy"})}
    server.respond = lambda body, i: faults.get(i) or solver(body, i)
    report = run(server, items([(50, 20, "7")]), 50)
    (rec,) = report.records
    assert rec["status"] == "done" and rec["attempts"] == 3 and rec["correct"] is True
    # Every attempt re-sent the same allowance: one reservation, charged once.
    assert {r["max_tokens"] for r in server.requests} == {50}
    assert report.summary["tokens_used"] == 20


@pytest.mark.parametrize("status", [500, 502, 504, None])
def test_an_error_that_may_follow_generation_is_charged_and_not_retried(
    server: FakeServer, status: int | None
) -> None:
    """A retry under the same reservation could spend it twice: the query ends in error,
    charged its allowance (a re-run retries it under a new reservation). None: the server
    took the request and dropped the connection."""
    failure = (status, {"error": "boom"}) if status else (200, None)
    server.respond = lambda body, i: failure if i == 0 else solver(body, i)  # type: ignore[return-value]
    report = run(server, items([(50, 20, "7")]), 50)
    (rec,) = report.records
    assert rec["status"] == "error" and len(server.requests) == 1
    assert rec["tokens"] == report.summary["tokens_used"] == 50


def test_gives_up_and_frees_the_reservation(server: FakeServer) -> None:
    server.respond = lambda body, i: (503, {"error": "down"})
    report = run(server, items([(50, 20, "7")]), 50)
    (rec,) = report.records
    assert rec["status"] == "error" and "gave up after 4 attempts" in rec["reason"]
    assert report.summary["tokens_used"] == 0 and report.summary["errors"] == 1


def test_non_retryable_status_fails_at_once(server: FakeServer) -> None:
    server.respond = lambda body, i: (401, {"error": "bad key"})

    async def main() -> None:
        async with ChatClient(server.url, "fake", backoff=0.001) as client:
            with pytest.raises(EngineError, match="HTTP 401") as info:
                await client.chat([{"role": "user", "content": "x"}], 5)
            assert info.value.attempts == 1

    asyncio.run(main())
    assert len(server.requests) == 1


def test_token_param_falls_back_when_rejected(server: FakeServer) -> None:
    def respond(body: dict[str, Any], i: int) -> tuple[int, dict[str, Any] | None]:
        if "max_tokens" in body:
            return 400, {"error": "Unsupported parameter: 'max_tokens', use max_completion_tokens"}
        return solver(body, i)

    server.respond = respond
    report = run(server, items([(30, 10, "4")]), 30)
    assert report.records[0]["status"] == "done"
    assert "max_tokens" not in server.requests[-1] and server.requests[-1]["n"] == 1


# --- runner -----------------------------------------------------------------------------


def test_budgets_sent_as_max_tokens_and_abandoned_not_sent(server: FakeServer) -> None:
    report = run(server, items([(40, 30, "1"), (0, 30, "2"), (25, 60, "3")]), 70)
    by_id = {r["id"]: r for r in report.records}
    assert by_id["q0"]["correct"] is True and by_id["q0"]["finish_reason"] == "stop"
    assert by_id["q1"]["status"] == "abandoned" and by_id["q1"]["reason"]
    assert by_id["q2"]["finish_reason"] == "length" and by_id["q2"]["tokens"] == 25
    assert sorted(r["max_tokens"] for r in server.requests) == [25, 40]  # q1 never sent
    s = report.summary
    assert s["tokens_used"] == 55 <= s["budget"] and s["abandoned"] == 1
    assert s["accuracy"] == pytest.approx(1 / 3)


def test_forcing_turns_truncation_into_an_answer_within_budget(server: FakeServer) -> None:
    plan = items([(20, 80, "5"), (20, 80, "6")])
    report = run(server, plan, 20 + 20 + 2 * 8, force_tokens=8)
    for rec in report.records:
        assert rec["forced"] and rec["finish_reason"] == "length"
        assert rec["forcing_tokens"] == 3 and rec["tokens"] == 23 and rec["correct"] is True
    assert report.summary["tokens_used"] == 46 <= report.summary["budget"]
    # The follow-up carries the truncated reply and asks for the answer only.
    follow = [r for r in server.requests if r["max_tokens"] == 8]
    assert len(follow) == 2 and follow[0]["messages"][-2]["role"] == "assistant"


def test_forcing_skipped_when_nothing_is_left(server: FakeServer) -> None:
    report = run(server, items([(20, 80, "5")]), 20, force_tokens=8)
    assert report.records[0]["forced"] is False and report.summary["tokens_used"] == 20


def test_fallback_for_abandoned_queries(server: FakeServer) -> None:
    report = run(server, items([(30, 20, "1"), (0, 50, "2")]), 40, fallback_tokens=6)
    rec = {r["id"]: r for r in report.records}["q1"]
    assert rec["status"] == "fallback" and rec["tokens"] == 3 and rec["correct"] is True
    assert report.summary["tokens_used"] <= 40


def test_server_misreporting_usage_is_not_trusted(server: FakeServer) -> None:
    # Like llama.cpp with n>1: usage that undercounts (0 tokens for a non-empty answer).
    server.respond = lambda body, i: (200, completion("long text \\boxed{1}", 0, "length"))
    report = run(server, items([(30, 0, "1"), (30, 0, "1")]), 60)
    assert all(r["tokens"] == 30 and r["usage_trusted"] is False for r in report.records)
    assert report.summary["tokens_used"] == 60


def test_total_never_exceeds_budget_under_faults(server: FakeServer) -> None:
    seen: dict[str, int] = {}

    def chaos(body: dict[str, Any], i: int) -> tuple[int, dict[str, Any] | None]:
        # Every request is refused twice before it is answered (fewer than the retries
        # allowed), then some fail after generating.
        key = json.dumps(body["messages"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= 2:
            return 503, {"error": "flaky"}
        if seen[key] == 3 and "ans=1" in key:
            return 500, {"error": "died while generating"}
        return solver(body, i)

    server.respond = chaos
    plan = items(
        [
            (b, need, str(k))
            for k, (b, need) in enumerate(
                [(30, 10), (30, 50), (25, 20), (40, 70), (0, 5), (35, 35)]
            )
        ]
    )
    total = 160 + 6 * 5
    report = run(server, plan, total, concurrency=3, force_tokens=5, fallback_tokens=5)
    charged = sum(r["tokens"] for r in report.records)
    assert charged == report.summary["tokens_used"] <= total
    errors = [r for r in report.records if r["status"] == "error"]
    assert len(errors) == report.summary["errors"] and all(r["tokens"] > 0 for r in errors)


def test_reject_bad_plans(server: FakeServer) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        run(server, items([(5, 1, "1")]) * 2, 10)


# --- resume -----------------------------------------------------------------------------


def test_kill_with_a_request_in_flight_counts_it_and_resume_repeats_nothing(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    plan = items([(30, 10, "1"), (30, 10, "2"), (0, 10, "3"), (30, 10, "4")])
    release = threading.Event()

    def hang_on_q3(body: dict[str, Any], i: int) -> tuple[int, dict[str, Any] | None]:
        if "ans=4" in body["messages"][-1]["content"]:
            release.wait(10)  # in flight when the run is killed
        return solver(body, i)

    server.respond = hang_on_q3

    async def killed() -> None:
        async with ChatClient(server.url, "fake", backoff=0.001) as client:
            task = asyncio.ensure_future(
                execute(
                    plan,
                    client,
                    total_budget=90,
                    out=out,
                    config=RunConfig(concurrency=1, progress=False),
                )
            )
            while len(server.requests) < 3 or len(read_records(out)) < 3:
                await asyncio.sleep(0.01)
            task.cancel()  # like SIGKILL: q3's reservation is left unsettled in the journal
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(killed())
    release.set()
    server.respond = solver
    with out.open("a") as f:
        f.write('{"id": "torn')  # a write cut off by the kill
    sent = len(server.requests)
    again = run(server, plan, 90, out)
    assert len(server.requests) - sent == 1  # only q3 again; q0/q1 done, q2 abandoned
    s = again.summary
    assert s["resumed"] == 3 and s["queries"] == 4
    # q3's first request may have been billed (30): counted, so 10 + 10 + 30 + 10.
    assert (s["unsettled_requests"], s["unsettled_counted"]) == (1, 30)
    assert s["tokens_used"] == 60 and s["settled_tokens"] == 30 and s["within_budget"]
    assert sorted(r["id"] for r in read_records(out)) == ["q0", "q1", "q2", "q3"]
    assert json.loads(summary_path(out).read_text())["tokens_used"] == 60
    third = run(server, plan, 90, out)
    assert third.summary["executed"] == 0 and len(server.requests) - sent == 1
    assert third.summary["tokens_used"] == 60 and third.summary["unsettled_counted"] == 0


def test_resume_retries_errors_and_keeps_budget(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    server.respond = lambda body, i: (503, {})
    run(server, items([(30, 10, "1")]), 30, out)
    server.respond = solver
    report = run(server, items([(30, 10, "1")]), 30, out)
    assert report.records[0]["status"] == "done" and report.summary["tokens_used"] == 10


def test_resume_with_less_budget_left_abandons_instead_of_overspending(
    server: FakeServer, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    plan = items([(50, 60, "1"), (40, 10, "2")])

    # The first request is billed in full but its answer is unreadable: 50 charged, retried.
    def unreadable_q0(body: dict[str, Any], i: int) -> tuple[int, dict[str, Any] | None]:
        return (200, {"choices": "nope"}) if "ans=1" in str(body) else solver(body, i)

    server.respond = unreadable_q0
    first = run(server, plan[:1] + [PlanItem("q1", plan[1].messages, 40, "2")], 90, out)
    assert first.summary["tokens_used"] == 50 + 10
    report = run(server, plan[:1] + [PlanItem("q1", plan[1].messages, 40, "2")], 90, out)
    rec = {r["id"]: r for r in report.records}["q0"]
    # 30 left, q0 needs 50: abandoned instead of overspending.
    assert rec["status"] == "abandoned" and "budget exhausted" in rec["reason"]
    assert report.summary["tokens_used"] == 60 <= 90


def test_resume_with_another_policy_or_plan_is_refused(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    plan = items([(30, 10, "1"), (30, 10, "2")])
    run(server, plan, 60, out, identity={"policy": "clear"})
    with pytest.raises(JournalMismatch, match="policy"):
        run(server, plan, 60, out, identity={"policy": "uniform"})
    with pytest.raises(JournalMismatch, match="budget"):
        run(server, plan, 70, out, identity={"policy": "clear"})
    with pytest.raises(JournalMismatch, match="plan"):
        run(server, items([(20, 10, "1"), (40, 10, "2")]), 60, out, identity={"policy": "clear"})
    # Starting over moves the old files aside; nothing is lost.
    moved = RunFiles.of(out).archive()
    assert len(moved) == 3 and all(p.exists() for p in moved)
    assert run(server, plan, 60, out, identity={"policy": "uniform"}).summary["executed"] == 2


def test_results_file_that_is_not_ours_is_never_touched(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "q0", "status": "done"}\n{"half')
    before = out.read_bytes()
    with pytest.raises(RunStateError, match="no journal"):
        run(server, items([(30, 10, "1")]), 30, out)
    assert out.read_bytes() == before


@pytest.mark.parametrize(
    "body",
    [
        {"choices": "nope"},
        {"choices": []},
        {"choices": [{"message": "text"}]},
        {"choices": [{"message": {"content": 5}}]},
        {**completion("x", 5), "usage": {"completion_tokens": -3}},
        {**completion("x", 5), "usage": {"completion_tokens": "12"}},
        {**completion("x", 5), "usage": {"completion_tokens": 10**12}},
        completion("x", 5, completion_tokens_details={"reasoning_tokens": "many"}),
        [1, 2, 3],
    ],
)
def test_malformed_bodies_become_error_records_and_the_batch_goes_on(
    server: FakeServer, body: Any
) -> None:
    def respond(b: dict[str, Any], i: int) -> tuple[int, dict[str, Any] | None]:
        if "ans=1" in b["messages"][-1]["content"]:
            return 200, body
        return solver(b, i)

    server.respond = respond
    report = run(server, items([(30, 10, "1"), (30, 10, "2")]), 60)
    by_id = {r["id"]: r for r in report.records}
    assert by_id["q0"]["status"] == "error" and "malformed response" in by_id["q0"]["reason"]
    # It may have generated up to its allowance: charged and recorded, never lost.
    assert by_id["q0"]["tokens"] == 30
    assert by_id["q1"]["status"] == "done" and by_id["q1"]["correct"] is True
    assert report.summary["tokens_used"] == 40 and report.summary["errors"] == 1


def test_not_json_body_is_an_error_record(server: FakeServer) -> None:
    server.respond = lambda b, i: (200, b"<html>oops</html>")  # type: ignore[assignment,return-value]
    report = run(server, items([(30, 10, "1")]), 30)
    assert report.records[0]["status"] == "error" and report.summary["tokens_used"] == 30


def test_deadline_bounds_a_query_over_all_its_attempts(server: FakeServer) -> None:
    server.respond = lambda body, i: (503, {"error": "busy"})  # retried: nothing generated

    async def main() -> None:
        async with ChatClient(
            server.url, "fake", timeout=0.2, deadline=0.5, max_retries=50, backoff=0.02
        ) as client:
            with pytest.raises(EngineError, match=r"deadline|gave up") as info:
                await client.chat([{"role": "user", "content": "need=1 ans=1"}], 5)
            assert 1 < info.value.attempts < 50
            assert info.value.charge == 0  # every attempt was refused before generating

    asyncio.run(main())


def test_a_timeout_after_sending_is_charged_and_ends_the_call(server: FakeServer) -> None:
    release = threading.Event()

    def hang(body: dict[str, Any], i: int) -> tuple[int, dict[str, Any] | None]:
        release.wait(5)
        return solver(body, i)

    server.respond = hang

    async def main() -> None:
        async with ChatClient(server.url, "fake", timeout=0.2, max_retries=50) as client:
            with pytest.raises(
                EngineError, match=r"ReadTimeout\b.*after the request was sent"
            ) as e:
                await client.chat([{"role": "user", "content": "need=1 ans=1"}], 5)
            assert e.value.attempts == 1 and e.value.charge == 5  # it may have been billed

    try:
        asyncio.run(main())
    finally:
        release.set()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "not a url"}, "not an http"),
        ({"base_url": "ftp://h/v1"}, "not an http"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"deadline": float("inf")}, "deadline"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_client_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"base_url": "http://127.0.0.1:9", **kwargs}
    with pytest.raises(ValueError, match=message):
        ChatClient(args.pop("base_url"), "m", **args)


def test_run_config_is_validated(server: FakeServer) -> None:
    for bad in (
        {"concurrency": 0},
        {"force_tokens": -1},
        {"params": {"temperature": float("nan")}},
        {"params": {"temperature": -0.5}},
    ):
        with pytest.raises(ValueError):
            run(server, items([(5, 1, "1")]), 10, **bad)
    with pytest.raises(ValueError, match="budget"):
        run(server, items([(5, 1, "1")]), 10**16)


# --- collect ----------------------------------------------------------------------------


def test_collect_writes_trace_schema_and_resumes(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "traces.jsonl"
    qs = [
        CollectQuery(f"c{i}", prompt_messages(f"need={n} ans={i} "), f"q{i}", str(i))
        for i, n in enumerate([10, 60])
    ]

    async def main() -> dict[str, Any]:
        async with ChatClient(server.url, "fake") as client:
            cfg = CollectConfig(samples=3, max_tokens=40, progress=False)
            return await collect(qs, client, out=out, config=cfg)

    stats = asyncio.run(main())
    assert stats["completed"] == 2 and len(server.requests) == 6
    assert all(r["n"] == 1 and r["max_tokens"] == 40 for r in server.requests)
    recs = {r["id"]: r for r in read_records(out)}
    assert [s["tokens"] for s in recs["c0"]["samples"]] == [10, 10, 10]
    assert all(s["correct"] for s in recs["c0"]["samples"])
    assert all(s["finish_reason"] == "length" and not s["correct"] for s in recs["c1"]["samples"])
    assert recs["c1"]["answer"] == "1" and recs["c1"]["meta"]["max_tokens"] == 40
    try:
        from shadowprice.traces import read_traces
    except ImportError:
        pytest.skip("shadowprice.traces not available")
    ts = read_traces(out)
    assert len(ts) == 2
    assert asyncio.run(main())["completed"] == 0  # resume: nothing sampled again


# --- CLI input errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "question": "q", "tau": -4}\n', 'q.jsonl line 1: field "tau" must be'),
        (
            '{"id": "a", "question": "q", "tau": 5}\n{"question": "r"}\n',
            'q.jsonl line 2: field "id" is missing',
        ),
        ("not json\n", "q.jsonl line 1: not valid JSON"),
        ('{"id": "a", "tau": 5}\n', 'q.jsonl line 1: field "question" is missing'),
    ],
)
def test_run_cli_rejects_bad_queries(tmp_path: Path, content: str, message: str) -> None:
    from typer.testing import CliRunner

    from shadowprice.cli import app

    path = tmp_path / "q.jsonl"
    path.write_text(content)
    out = tmp_path / "r.jsonl"
    args = ["run", str(path), "--endpoint", "http://127.0.0.1:9", "--model", "m", "--budget", "9"]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 2
    assert message in result.output


def test_run_cli_with_the_default_predictor_sends_the_model_name(
    server: FakeServer, tmp_path: Path
) -> None:
    """QUERIES with only id + question; thresholds come from the bundled text predictor."""
    from typer.testing import CliRunner

    from shadowprice.cli import app

    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"need=20 ans={i} what?", "answer": str(i)})
            + "\n"
            for i in range(4)
        )
    )
    out = tmp_path / "r.jsonl"
    args = [
        "run",
        str(path),
        "--endpoint",
        server.url,
        "--model",
        "served-name",
        "--budget",
        "2000",
        "--predictor",
        "default",
        "--no-progress",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert server.requests and {r["model"] for r in server.requests} == {"served-name"}
    records = read_records(out)
    assert len(records) == 4
    # The default policy (clear-live) bounds what is generated; caps may add up to more.
    assert sum(r["tokens"] for r in records) <= 2000


def test_run_cli_template_and_system_reach_the_server(server: FakeServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shadowprice.cli import app

    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"id": "a", "question": "need=5 ans=7", "answer": "7", "tau": 1}) + "\n"
    )
    args = [
        "run",
        str(path),
        "--endpoint",
        server.url,
        "--model",
        "m",
        "--budget",
        "50",
        "--no-progress",
        "-o",
        str(tmp_path / "r.jsonl"),
        "--system",
        "be brief",
        "--template",
        "Q: {question} ",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    msgs = server.requests[0]["messages"]
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert msgs[1]["content"] == "Q: need=5 ans=7 "
    for bad in ("no placeholder", "{question} and {other}"):
        result = CliRunner().invoke(app, args[:-1] + [bad])
        assert result.exit_code == 2 and "template must contain {question}" in result.output
