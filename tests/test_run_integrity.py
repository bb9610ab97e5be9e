"""``run`` keeps its books straight whatever the endpoint does and however the run ends.

A real loopback HTTP server answers each query as its prompt says:
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

import json
import os
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.engine.results import RunFiles, read_records

runner = CliRunner()

FIXED_CAP = ("clear", "uniform")
POLICIES = ("clear-live", *FIXED_CAP)


class ScriptedServer:
    """An OpenAI-compatible server whose every answer is scripted in the prompt."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()  # requests per query id
        self.billed = 0  # what the requests may have cost, counted on arrival
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, data = outer.answer(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that left (a signalled run) breaks its pipe

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.attempts.clear()
            self.billed = 0

    def answer(self, body: dict[str, Any]) -> tuple[int, bytes]:
        prompt = " ".join(m["content"] for m in body["messages"] if m["role"] == "user")
        fields = dict(re.findall(r"(\w+)=(\S+)", prompt))
        qid, cap = fields["qid"], int(body["max_tokens"])
        script = fields.get("script", "ok").split(",")
        need = int(fields.get("need", "10"))
        used = min(need, cap)
        with self.lock:
            k = self.attempts[qid]
            self.attempts[qid] += 1
            outcome = script[min(k, len(script) - 1)]
            self.billed += {"ok": used, "garbage": cap, "nousage": cap}.get(outcome, 0)
        time.sleep(float(fields.get("delay", "0")))
        if outcome == "500":
            return 500, b'{"error": {"message": "boom"}}'
        if outcome == "garbage":
            return 200, b"<html>not json"
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
        return 200, json.dumps(payload).encode()


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


def journal_open(out: Path) -> dict[str, int]:
    """Reservations the journal leaves open (id -> tokens)."""
    open_: dict[str, int] = {}
    for line in RunFiles.of(out).journal.read_text().splitlines()[1:]:
        ev = json.loads(line)
        if ev["event"] == "reserve":
            open_[ev["id"]] = ev["tokens"]
        else:
            open_.pop(ev["id"], None)
    return open_


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
    ]:
        r = runner.invoke(app, args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert lines[0].startswith("shadowprice: error: ") and fragment in lines[0].lower(), lines[
            0
        ]
        assert "--help" in lines[0]


def test_serve_help_says_periods_are_aligned_to_the_epoch() -> None:
    r = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "epoch" in " ".join(r.output.split())
