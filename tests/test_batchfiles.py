"""Batch files: a priced plan out as Batch API input lines, the batch's output back as graded
results and traces, every token counted by the counting rule.

The round trip runs a real batch: a small runner POSTs each input line's body to a real HTTP
server on 127.0.0.1 that answers with the lengths and correctness of a real trace set (the
bundled Qwen2.5-Math samples), and writes the output file in the OpenAI batch output format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from shadowprice import ShiftedSurge, allocate
from shadowprice.cli import app
from shadowprice.engine.batchfiles import (
    BATCH_URL,
    BatchFileError,
    batch_requests,
    read_batch,
    read_batch_requests,
)
from shadowprice.engine.forcing import fallback_messages
from shadowprice.engine.planning import build_items
from shadowprice.engine.run import DEFAULT_TEMPLATE, prompt_messages
from shadowprice.providers import PROVIDERS, Preset
from shadowprice.serve.testing import ServerThread
from shadowprice.traces import load_traces, read_traces

runner = CliRunner()


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# -- a model server that answers with a real trace's lengths ----------------------------------

TRACES = load_traces("qwen25-math-math100")
WORDS = re.compile(r"\S+")


class TraceServer:
    """Answers query q with the length and correctness of q's first real sample.

    A reply of L tokens is L words; a correct one ends with ``\\boxed{gold}``. Past the cap
    it stops at the cap with ``finish_reason: length`` (no answer). ``faults`` maps a query
    id to a misbehaviour: ``500``, ``400``, ``nousage``, ``garbage`` (a 200 that is not
    JSON), ``overrun`` (ignores the cap, reports what it generated).
    """

    def __init__(self, queries: dict[str, dict[str, Any]], faults: dict[str, str]) -> None:
        self.by_question = {q["question"]: qid for qid, q in queries.items()}
        self.queries, self.faults = queries, faults
        self.generated: dict[str, int] = {}  # what each query really generated

    def answer(self, body: dict[str, Any]) -> tuple[int, Any]:
        content = body["messages"][-1]["content"]
        qid = next(q for text, q in self.by_question.items() if content.startswith(text))
        q, fault = self.queries[qid], self.faults.get(qid, "")
        cap = min(v for k, v in body.items() if k in ("max_tokens", "max_completion_tokens"))
        natural = int(q["length"])
        n = natural if fault == "overrun" else min(natural, cap)
        self.generated[qid] = 0 if fault in ("400",) else n
        if fault in ("500", "400"):
            return int(fault), {"error": {"message": f"fault {fault}", "type": "server_error"}}
        if fault == "garbage":
            return 200, "<html>upstream proxy error</html>"
        finish = "length" if natural > cap and fault != "overrun" else "stop"
        words = ["step"] * n
        if finish == "stop" and n > 0:
            words[-1] = f"\\boxed{{{q['answer'] if q['correct'] else 'wrong'}}}"
        out: dict[str, Any] = {
            "id": f"chatcmpl-{qid}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words)},
                    "finish_reason": finish,
                }
            ],
        }
        if fault != "nousage":
            out["usage"] = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": n + 7}
        return 200, out

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            status, body = self.answer(await request.json())
            if isinstance(body, str):
                return Response(body, status_code=status, media_type="application/json")
            return JSONResponse(body, status_code=status)

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def run_batch_file(
    requests: Path,
    url: str,
    out: Path,
    *,
    expire: Iterable[str] = (),
    drop: Iterable[str] = (),
) -> None:
    """A local batch runner: POST each line's body, write OpenAI batch output lines.

    ``expire``: ids answered by an error line (the batch expired before them); ``drop``: ids
    with no output line at all.
    """
    expire, drop = set(expire), set(drop)
    lines = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for i, line in enumerate(read_jsonl(requests)):
            cid = line["custom_id"]
            row: dict[str, Any] = {"id": f"batch_req_{i}", "custom_id": cid}
            if cid in drop:
                continue
            if cid in expire:
                row.update(
                    response=None,
                    error={"code": "batch_expired", "message": "This request could not be run"},
                )
                lines.append(row)
                continue
            r = http.request(line["method"], line["url"], json=line["body"])
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            response = {"status_code": r.status_code, "request_id": f"req_{i}", "body": body}
            lines.append({**row, "response": response, "error": None})
    write_jsonl(out, lines)


def trace_queries(n: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """n real queries: question, gold answer, first sample's length and correctness."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(TRACES.n, size=n, replace=False)
    out = {}
    for i in pick:
        r = TRACES.records[int(i)]
        s = r["samples"][0]
        out[r["id"]] = {
            "question": r["question"],
            "answer": r["answer"],
            "length": s["tokens"],
            "correct": s["correct"],
        }
    return out


def query_file(path: Path, queries: dict[str, dict[str, Any]]) -> Path:
    return write_jsonl(
        path,
        (
            {"id": qid, "question": q["question"], "answer": q["answer"], "tau": q["length"]}
            for qid, q in queries.items()
        ),
    )


# -- the round trip, through the commands -----------------------------------------------------


def test_round_trip_emit_run_read_back(tmp_path: Path) -> None:
    queries = trace_queries(12)
    ids = list(queries)
    faults = {ids[0]: "500", ids[1]: "nousage", ids[2]: "garbage", ids[3]: "400"}
    server = TraceServer(queries, faults)
    qpath = query_file(tmp_path / "queries.jsonl", queries)
    req = tmp_path / "batch.jsonl"
    r = runner.invoke(
        app,
        ["allocate", str(qpath), "--per-query", "400", "--emit", "openai-batch"]
        + ["--model", "qwen", "--provider", "vllm", "-o", str(req), "--format", "json"],
    )
    assert r.exit_code == 0, r.output
    emitted = json.loads(r.stdout)
    lines = read_jsonl(req)
    assert emitted["requests"] == len(lines) and emitted["provider"] == "vllm"
    assert sum(x["body"]["max_tokens"] for x in lines) <= 400 * len(queries)
    for x in lines:  # the messages run would send, the allowance in vLLM's fields
        q = queries[x["custom_id"]]
        assert (x["method"], x["url"]) == ("POST", BATCH_URL)
        assert x["body"]["messages"] == prompt_messages(q["question"], DEFAULT_TEMPLATE)
        assert x["body"]["thinking_token_budget"] < x["body"]["max_tokens"]
    sent = {x["custom_id"] for x in lines}
    expired, dropped = [c for c in ids[4:] if c in sent][:2]
    out = tmp_path / "output.jsonl"
    with ServerThread(server.app()) as s:
        run_batch_file(req, s.url, out, expire=[expired], drop=[dropped])

    traces, results = tmp_path / "traces.jsonl", tmp_path / "results.jsonl"
    r = runner.invoke(
        app,
        ["traces", "from-batch", str(out), "--requests", str(req), "--queries", str(qpath)]
        + ["-o", str(traces), "--results", str(results), "--format", "json"],
    )
    assert r.exit_code == 1, r.output  # some requests failed: status 1, counted
    summary = json.loads(r.stdout.splitlines()[0])
    rows = {x["id"]: x for x in read_jsonl(results)}
    assert list(rows) == ids  # one row per query, in the queries' order
    caps = {x["custom_id"]: x["body"]["max_tokens"] for x in lines}
    for qid, row in rows.items():
        q = queries[qid]
        if qid not in sent:
            assert row["status"] == "abandoned" and row["tokens"] == 0
            continue
        cap = caps[qid]
        assert row["budget"] == cap
        truth = server.generated.get(qid, 0)
        assert row["tokens"] >= truth  # never under-counted
        fault = faults.get(qid)
        if fault == "400":  # refused before generating
            assert (row["status"], row["tokens"]) == ("error", 0)
        elif fault in ("500", "garbage") or qid in (expired, dropped):
            assert (row["status"], row["tokens"]) == ("error", cap)  # charged in full
        elif fault == "nousage":
            assert row["status"] == "done" and row["tokens"] == cap
            assert row["usage_trusted"] is False
        else:
            assert row["status"] == "done" and row["usage_trusted"] is True
            assert row["tokens"] == min(q["length"], cap)
            assert row["correct"] == (q["correct"] and q["length"] <= cap)
            assert row["finish_reason"] == ("stop" if q["length"] <= cap else "length")
    assert summary["tokens_used"] == sum(x["tokens"] for x in rows.values())
    assert summary["budget"] == sum(caps.values())
    assert summary["missing"] == 1 and summary["requests"] == len(lines)
    ts = read_traces(traces)  # the project's trace-set schema, read back by its reader
    answered = [q for q, x in rows.items() if x["status"] == "done"]
    assert ts.ids == answered
    for rec in ts.records:
        sample = rec["samples"][0]
        assert sample["tokens"] == rows[rec["id"]]["tokens"]
        assert sample["correct"] == bool(rows[rec["id"]]["correct"])
        assert sample["max_tokens"] == caps[rec["id"]]
        assert rec["answer"] == queries[rec["id"]]["answer"]
        assert rec["meta"] == {"model": "qwen", "source": "openai-batch"}


def test_fallback_lines_round_trip_as_fallbacks(tmp_path: Path) -> None:
    queries = trace_queries(6, seed=3)
    server = TraceServer(queries, {})
    qpath = query_file(tmp_path / "q.jsonl", queries)
    req = tmp_path / "batch.jsonl"
    r = runner.invoke(
        app,
        ["allocate", str(qpath), "--per-query", "150", "--emit", "openai-batch", "--model"]
        + ["m", "--fallback-tokens", "20", "-o", str(req), "--format", "json"],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["fallback_requests"] > 0 and summary["abandoned_ids"] == []
    assert summary["batch_tokens"] <= 150 * len(queries)  # fallbacks held back, not added
    out = tmp_path / "out.jsonl"
    with ServerThread(server.app()) as s:
        run_batch_file(req, s.url, out)
    report = read_batch(
        [out],
        req,
        list(queries),
        [q["question"] for q in queries.values()],
        [q["answer"] for q in queries.values()],
    )
    fallbacks = [x for x in report.records if x["status"] == "fallback"]
    assert len(fallbacks) == summary["fallback_requests"]
    assert all(x["budget"] == 0 and x["tokens"] <= 20 for x in fallbacks)
    traced = set(report.traces.ids) if report.traces is not None else set()
    assert traced.isdisjoint(x["id"] for x in fallbacks)  # another prompt: not a trace


def test_abandoned_queries_are_listed(tmp_path: Path) -> None:
    qpath = write_jsonl(
        tmp_path / "q.jsonl",
        [{"id": f"q{i}", "question": f"Q{i}?", "tau": t} for i, t in enumerate([50, 80, 9000])],
    )
    ab = tmp_path / "abandoned.jsonl"
    r = runner.invoke(
        app,
        ["allocate", str(qpath), "--budget", "600", "--emit", "openai-batch", "--model", "m"]
        + ["--abandoned", str(ab)],
    )
    assert r.exit_code == 0, r.output
    assert "1 abandoned queries have no request" in r.stderr and "q2" in r.stderr
    assert [x["custom_id"] for x in (json.loads(x) for x in r.stdout.splitlines())] == ["q0", "q1"]
    assert read_jsonl(ab) == [{"id": "q2", "reason": "abandoned by the allocation"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "m"], "--model apply only with --emit openai-batch"),
        (["--emit", "openai-batch"], "--emit needs --model NAME"),
        (["--emit", "jsonl", "--model", "m"], "unknown --emit 'jsonl'"),
        (["--emit", "openai-batch", "--model", "m", "--provider", "bedrock"], "unknown --provider"),
        (
            ["--emit", "openai-batch", "--model", "m", "--reserve", "10"],
            "--reserve needs --provider",
        ),
        (["--emit", "openai-batch", "--model", "m", "--template", "no field"], "{question}"),
    ],
)
def test_emit_options_are_checked(tmp_path: Path, args: list[str], message: str) -> None:
    qpath = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Q?", "tau": 10}])
    r = runner.invoke(app, ["allocate", str(qpath), "--budget", "100", *args])
    assert r.exit_code == 2 and message in r.stderr, r.output


def test_emit_needs_each_question(tmp_path: Path) -> None:
    qpath = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "tau": 10}])
    r = runner.invoke(
        app, ["allocate", str(qpath), "--budget", "100", "--emit", "openai-batch", "--model", "m"]
    )
    assert r.exit_code == 2 and 'line 1: field "question" is missing' in r.stderr, r.output


# -- the library: lines out ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 5000), min_size=1, max_size=12),
    st.sampled_from([*PROVIDERS, "generic"]),
    st.integers(0, 64),
    st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
def test_every_line_is_the_plan_item_in_the_providers_fields(
    budgets: list[int], provider: str, fallback: int, system: str | None
) -> None:
    ids = [f"q{i}" for i in range(len(budgets))]
    items = build_items(ids, [f"Question {i}?" for i in ids], budgets, system=system)
    preset = Preset(provider)
    out = batch_requests(items, model="m", preset=preset, fallback_tokens=fallback)
    by_id = {x["custom_id"]: x for x in out.lines}
    assert len(by_id) == len(out.lines)  # one line per query at most
    for item in items:
        line = by_id.get(item.id)
        if item.budget > 0:
            assert line is not None and line["body"]["messages"] == item.messages
            assert line["body"] == preset.apply(
                {"model": "m", "messages": item.messages}, item.budget
            )
        elif fallback > 0:
            assert line is not None and item.id in out.fallback
            assert line["body"]["messages"] == fallback_messages(item.messages)
        else:
            assert line is None and item.id in out.abandoned
    assert out.tokens == sum(budgets) + fallback * sum(1 for b in budgets if b == 0)
    assert [json.loads(x) for x in out.jsonl().splitlines()] == out.lines


def test_emitted_budgets_are_the_allocations(tmp_path: Path) -> None:
    taus = np.array([100, 240, 3000, 60, 500], float)
    alloc = allocate(ShiftedSurge(taus, 1.5, 0.005), 1200, "clear")
    qpath = write_jsonl(
        tmp_path / "q.jsonl",
        [{"id": f"q{i}", "question": f"Q{i}", "tau": t} for i, t in enumerate(taus)],
    )
    r = runner.invoke(
        app,
        ["allocate", str(qpath), "--budget", "1200", "--emit", "openai-batch", "--model", "m"]
        + ["--system", "Be brief.", "--template", "Q: {question}", "--temperature", "0"],
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    funded = [f"q{i}" for i, b in enumerate(alloc.budgets) if b > 0]
    assert [x["custom_id"] for x in lines] == funded
    for x in lines:
        i = int(x["custom_id"][1:])
        body = x["body"]
        assert body["max_tokens"] == body["max_completion_tokens"] == alloc.budgets[i]
        assert body["messages"] == prompt_messages(f"Q{i}", "Q: {question}", "Be brief.")
        assert body["temperature"] == 0


# -- the library: output back, by the counting rule ---------------------------------------------


def _requests_file(tmp_path: Path, caps: dict[str, int]) -> Path:
    items = build_items(list(caps), [f"Q {c}" for c in caps], list(caps.values()))
    return write_jsonl(tmp_path / "in.jsonl", batch_requests(items, model="m").lines)


def _output_line(cid: str, status: int, body: Any, **extra: Any) -> dict[str, Any]:
    response = {"status_code": status, "request_id": f"r-{cid}", "body": body}
    return {"id": f"b-{cid}", "custom_id": cid, "response": response, "error": None, **extra}


def _completion(text: str, finish: str, usage: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}]
    }
    if usage is not None:
        body["usage"] = usage
    return body


# A server's answer (what it really generated, given its cap) and what it reports about it.
answers = st.fixed_dictionaries(
    {
        "natural": st.integers(0, 3000),
        "kind": st.sampled_from(
            ["ok", "nousage", "string_usage", "zero_usage", "absurd", "overrun", "http500"]
            + ["http429", "error_line", "missing", "not_completion", "null_content"]
        ),
    }
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(1, 2000), answers), min_size=1, max_size=8))
def test_what_cannot_be_counted_is_charged_in_full(
    tmp_path_factory: pytest.TempPathFactory, cases: list[tuple[int, dict[str, Any]]]
) -> None:
    tmp = tmp_path_factory.mktemp("batch")
    caps = {f"q{i}": cap for i, (cap, _) in enumerate(cases)}
    req = _requests_file(tmp, caps)
    lines, truth = [], {}
    for (cid, cap), (_, a) in zip(caps.items(), cases, strict=True):
        kind, n = a["kind"], min(a["natural"], cap)
        finish = "length" if a["natural"] > cap else "stop"
        usage: Any = {"prompt_tokens": 3, "completion_tokens": n}
        truth[cid] = n
        if kind == "missing":
            continue
        if kind == "error_line":
            lines.append({"id": "x", "custom_id": cid, "response": None, "error": {"code": "e"}})
            continue
        if kind in ("http500", "http429"):
            truth[cid] = n if kind == "http500" else 0  # a 429 is refused before generating
            lines.append(_output_line(cid, int(kind[4:]), {"error": {"message": "no"}}))
            continue
        if kind == "overrun":
            n = truth[cid] = a["natural"] + cap  # ignored its cap, and says so
            usage, finish = {"completion_tokens": n}, "stop"
        usage = {
            "nousage": None,
            "string_usage": {"completion_tokens": str(n)},
            "zero_usage": {"completion_tokens": 0},
            "absurd": {"completion_tokens": 10**9 * cap},
        }.get(kind, usage)
        body: Any = _completion("x " * n + "\\boxed{1}", finish, usage)
        if kind == "not_completion":
            body = {"object": "error", "message": "bad"}
        if kind == "null_content":
            body["choices"][0]["message"]["content"] = None
        lines.append(_output_line(cid, 200, body))
    out = write_jsonl(tmp / "out.jsonl", lines)
    report = read_batch([out], req, list(caps), [None] * len(caps), ["1"] * len(caps))
    rows = {x["id"]: x for x in report.records}
    for cid, cap in caps.items():
        row = rows[cid]
        assert row["tokens"] >= truth[cid], (cid, row)  # never under-counted
        if not row.get("usage_trusted"):
            assert row["tokens"] >= min(cap, truth[cid]) and row["tokens"] in (0, cap, truth[cid])
    assert report.summary["tokens_used"] == sum(x["tokens"] for x in rows.values())
    if report.traces is not None:
        assert all(
            r["samples"][0]["tokens"] == rows[r["id"]]["tokens"] for r in report.traces.records
        )


def test_an_overrun_is_charged_as_reported_and_flagged(tmp_path: Path) -> None:
    req = _requests_file(tmp_path, {"a": 100})
    out = write_jsonl(
        tmp_path / "out.jsonl",
        [_output_line("a", 200, _completion("x", "stop", {"completion_tokens": 180}))],
    )
    report = read_batch([out], req, ["a"], ["Q"], [None])
    assert report.records[0]["tokens"] == 180
    assert report.summary["within_budget"] is False  # 180 charged of 100 allotted


def test_an_error_file_joins_the_output_file(tmp_path: Path) -> None:
    req = _requests_file(tmp_path, {"a": 50, "b": 60})
    ok = write_jsonl(
        tmp_path / "out.jsonl",
        [_output_line("a", 200, _completion("\\boxed{2}", "stop", {"completion_tokens": 9}))],
    )
    err = write_jsonl(
        tmp_path / "err.jsonl",
        [{"id": "e", "custom_id": "b", "response": None, "error": {"message": "expired"}}],
    )
    report = read_batch([ok, err], req, ["a", "b"], ["Q", "Q"], ["2", "3"])
    a, b = report.records
    assert (a["status"], a["tokens"], a["correct"]) == ("done", 9, True)
    assert (b["status"], b["tokens"], b["reason"]) == ("error", 60, "batch error: expired")
    assert report.summary["missing"] == 0 and report.summary["accuracy"] == 0.5


# -- bad input names the file, the line and the field ------------------------------------------

GOOD = _output_line("a", 200, _completion("1", "stop", {"completion_tokens": 1}))


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (["{not json"], "line 1: is not JSON"),
        ([[1, 2]], "line 1: is a JSON list, not a batch line object"),
        ([{"response": GOOD["response"]}], 'line 1: field "custom_id" must be a non-empty'),
        ([{**GOOD, "custom_id": "zzz"}], "line 1: field \"custom_id\" 'zzz' is not a request"),
        ([GOOD, GOOD], "line 2: field \"custom_id\" 'a' repeats"),
        ([{"custom_id": "a"}], 'line 1: field "response" is missing'),
        ([{"custom_id": "a", "response": "ok"}], 'line 1: field "response" must be an object'),
        (
            [{"custom_id": "a", "response": {"status_code": "200", "body": {}}}],
            'line 1: field "response.status_code" must be an HTTP status',
        ),
    ],
)
def test_a_bad_output_line_is_named(tmp_path: Path, lines: list[Any], where: str) -> None:
    req = _requests_file(tmp_path, {"a": 10})
    out = tmp_path / "out.jsonl"
    out.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    with pytest.raises(BatchFileError) as err:
        read_batch([out], req, ["a"], [None], [None])
    assert str(err.value).startswith(f"{out} {where}"), str(err.value)


def test_a_duplicate_across_two_output_files_names_both(tmp_path: Path) -> None:
    req = _requests_file(tmp_path, {"a": 10})
    one = write_jsonl(tmp_path / "one.jsonl", [GOOD])
    two = write_jsonl(tmp_path / "two.jsonl", [GOOD])
    with pytest.raises(BatchFileError) as err:
        read_batch([one, two], req, ["a"], [None], [None])
    assert str(err.value) == f"{two} line 1: field \"custom_id\" 'a' repeats {one} line 1"


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ({"custom_id": "a", "method": "GET", "url": "/v1/x", "body": {}}, '"method" and url'),
        ({"custom_id": "a", "method": "POST", "url": BATCH_URL, "body": []}, '"body" must be'),
        (
            {"custom_id": "a", "method": "POST", "url": BATCH_URL, "body": {"messages": [{}]}},
            '"body.max_tokens" is missing',
        ),
        (
            {
                "custom_id": "a",
                "method": "POST",
                "url": BATCH_URL,
                "body": {"max_tokens": 0, "messages": [{}]},
            },
            '"body.max_tokens" must be a positive integer',
        ),
        (
            {"custom_id": "a", "method": "POST", "url": BATCH_URL, "body": {"max_tokens": 5}},
            '"body.messages" must be a non-empty list',
        ),
    ],
)
def test_a_bad_request_line_is_named(tmp_path: Path, line: dict[str, Any], where: str) -> None:
    req = write_jsonl(tmp_path / "in.jsonl", [line])
    with pytest.raises(BatchFileError, match=f"{re.escape(str(req))} line 1: field {where}"):
        read_batch_requests(req)


def test_request_ids_must_be_unique_and_known(tmp_path: Path) -> None:
    req = _requests_file(tmp_path, {"a": 10, "b": 20})
    out = write_jsonl(tmp_path / "out.jsonl", [GOOD])
    with pytest.raises(
        BatchFileError,
        match=f"{re.escape(str(req))} line 2: field \"custom_id\" 'b' is not a query id",
    ):
        read_batch([out], req, ["a"], [None], [None])
    lines = read_jsonl(req)
    dup = write_jsonl(tmp_path / "dup.jsonl", [lines[0], lines[1], lines[0]])
    with pytest.raises(BatchFileError, match="line 3: field \"custom_id\" 'a' repeats line 1"):
        read_batch_requests(dup)


def test_from_batch_refuses_to_overwrite_its_inputs(tmp_path: Path) -> None:
    req = _requests_file(tmp_path, {"a": 10})
    out = write_jsonl(tmp_path / "out.jsonl", [GOOD])
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "question": "Q"}])
    base = ["traces", "from-batch", str(out), "--requests", str(req), "--queries", str(q)]
    r = runner.invoke(app, [*base, "-o", str(out)])
    assert r.exit_code == 2 and "refusing to overwrite an input" in r.stderr
    t = tmp_path / "t.jsonl"
    r = runner.invoke(app, [*base, "-o", str(t), "--results", str(t)])
    assert r.exit_code == 2 and "also --output" in r.stderr
    r = runner.invoke(app, [*base, "-o", str(t), "--results", str(tmp_path / "r.jsonl")])
    assert r.exit_code == 0, r.output
    assert "1 requests, 1 answered" in r.stdout


# -- the real engine ---------------------------------------------------------------------------


@pytest.mark.engine
def test_round_trip_on_the_real_llama_cpp_server(tmp_path: Path, llama_url: str) -> None:
    """Emit for llama.cpp, run each line on the real server, read the output back."""
    from shadowprice.traces import load_problems

    problems = load_problems("gsm8k").head(3)
    qpath = write_jsonl(
        tmp_path / "q.jsonl",
        (
            {"id": str(r.id), "question": str(r.question), "answer": str(r.answer)}
            for r in problems.itertuples()
        ),
    )
    req = tmp_path / "batch.jsonl"
    r = runner.invoke(
        app,
        ["allocate", str(qpath), "--budget", "120", "--policy", "uniform"]
        + ["--emit", "openai-batch", "--model", "local", "--provider", "llamacpp"]
        + ["--temperature", "0", "-o", str(req), "--format", "json"],
    )
    assert r.exit_code == 0, r.output
    lines = read_jsonl(req)
    assert [x["body"]["max_tokens"] for x in lines] == [40, 40, 40]
    assert all(x["body"]["thinking_budget_tokens"] == 0 for x in lines)  # 40 - 64 reserve
    out = tmp_path / "out.jsonl"
    run_batch_file(req, llama_url, out)
    traces = tmp_path / "traces.jsonl"
    r = runner.invoke(
        app,
        ["traces", "from-batch", str(out), "--requests", str(req), "--queries", str(qpath)]
        + ["-o", str(traces), "--format", "json"],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["answered"] == 3 and summary["errors"] == 0
    assert 0 < summary["tokens_used"] <= 120  # the server's own usage, within the allowances
    ts = read_traces(traces)
    assert ts.n == 3 and all(0 < s["tokens"] <= 40 for rec in ts.records for s in rec["samples"])


def test_a_line_break_inside_a_question_stays_inside_its_line() -> None:
    items = build_items(["a", "b"], ["one\u2028two\x85three\nfour", "é ü 中"], [10, 10])
    text = batch_requests(items, model="m").jsonl()
    assert text.isascii() and len(text.splitlines()) == 2
    assert [json.loads(x)["body"]["messages"] for x in text.splitlines()] == [
        i.messages for i in items
    ]
