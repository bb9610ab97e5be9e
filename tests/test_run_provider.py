"""``run --provider``: every request ``run`` sends carries its allowance in the provider's own
fields (the output cap, a thinking cap with an answer reserve), checked on what a real
loopback server received, for every provider and policy; once on the real llama.cpp server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shadowprice.cli import app
from shadowprice.engine.results import RunFiles, read_records
from shadowprice.providers import PROVIDERS, Preset
from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream

runner = CliRunner()
N = 6


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    server, log = fake_upstream(speed=0)
    thread = ServerThread(server).start()
    yield thread.url + "/v1", log
    thread.stop()


def queries(path: Path) -> Path:
    rows = [
        # The fake server answers LEN:n tokens (cut at the allowance): some run to their cap.
        {"id": f"q{i}", "question": f"LEN:{300 + 700 * (i % 3)} #{i}", "tau": 150 + 200 * (i % 3)}
        for i in range(N)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(url: str, q: Path, out: Path, *extra: str) -> Any:
    args = ["run", str(q), "--endpoint", url, "--model", "m", "--no-progress", "-o", str(out)]
    return runner.invoke(app, [*args, *extra])


def allowance(body: dict[str, Any]) -> int:
    """The output cap of a request body (the one field every preset bounds it by)."""
    return int(body.get("max_tokens") or body["max_completion_tokens"])


@pytest.mark.parametrize("policy", ["uniform", "clear-live"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_request_carries_its_allowance_in_the_providers_fields(
    upstream: tuple[str, FakeLog], tmp_path: Path, provider: str, policy: str
) -> None:
    url, log = upstream
    log.reset()
    out = tmp_path / "r.jsonl"
    budget = N * 1500
    r = run(url, queries(tmp_path / "q.jsonl"), out, "--budget", str(budget), "--policy", policy,
            "--provider", provider, "--temperature", "0.5")  # fmt: skip
    assert r.exit_code == 0, r.output
    preset = Preset(provider)
    assert log.bodies and len(log.bodies) == log.requests
    for body in log.bodies:
        a = allowance(body)
        base = {k: body[k] for k in ("model", "messages")} | {"n": 1, "temperature": 0.5}
        # Exactly the preset's fields over what every request carries: no other cap field.
        assert body == preset.apply(base, a), body
        f = preset.fields(a)
        assert f.thinking + f.reserve == a
    rows = {row["id"]: row for row in read_records(out)}
    # The allowance sent is what was reserved: a query's caps bound its tokens.
    assert sum(allowance(b) for b in log.bodies) >= sum(row["tokens"] for row in rows.values())
    assert log.generated <= budget
    if policy == "uniform":
        assert sorted(allowance(b) for b in log.bodies) == sorted(
            row["budget"] for row in rows.values() if row["budget"] > 0
        )


def test_the_reserve_sets_the_answers_share(upstream: tuple[str, FakeLog], tmp_path: Path) -> None:
    url, log = upstream
    log.reset()
    r = run(url, queries(tmp_path / "q.jsonl"), tmp_path / "r.jsonl", "--per-query", "3000",
            "--policy", "uniform", "--provider", "anthropic", "--reserve", "100")  # fmt: skip
    assert r.exit_code == 0, r.output
    for body in log.bodies:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": body["max_tokens"] - 100}
        assert "max_completion_tokens" not in body


def test_without_a_provider_both_caps_carry_the_allowance(
    upstream: tuple[str, FakeLog], tmp_path: Path
) -> None:
    url, log = upstream
    log.reset()
    r = run(url, queries(tmp_path / "q.jsonl"), tmp_path / "r.jsonl", "--per-query", "500",
            "--policy", "uniform")  # fmt: skip
    assert r.exit_code == 0, r.output
    for body in log.bodies:
        assert body["max_tokens"] == body["max_completion_tokens"] > 0
        assert not {"thinking", "thinking_token_budget", "reasoning_effort"} & set(body)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--provider", "bedrock"], "unknown --provider 'bedrock'; choose one of vllm"),
        (["--reserve", "50"], "--reserve needs --provider"),
        (["--provider", "vllm", "--reserve", "-5"], "--reserve -5: reserve must be >= 0"),
    ],
)
def test_bad_provider_options_are_one_line_errors(
    upstream: tuple[str, FakeLog], tmp_path: Path, extra: list[str], message: str
) -> None:
    url, log = upstream
    log.reset()
    out = tmp_path / "r.jsonl"
    r = run(url, queries(tmp_path / "q.jsonl"), out, "--per-query", "500", *extra)
    assert r.exit_code == 2 and message in r.output, r.output
    assert log.requests == 0 and not RunFiles.of(out).existing()


@pytest.mark.engine
def test_llamacpp_fields_on_the_real_server(llama_url: str, tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    rows = [
        {"id": "a", "question": "What is 2 + 3?", "answer": "5", "tau": 20},
        {"id": "b", "question": "What is 7 times 6?", "answer": "42", "tau": 20},
    ]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "r.jsonl"
    r = runner.invoke(app, ["run", str(q), "--endpoint", llama_url, "--model", "local",
                            "--budget", "160", "--policy", "uniform", "--provider", "llamacpp",
                            "--reserve", "16", "--no-progress", "-o", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output  # the server took thinking_budget_tokens (no 400)
    records = read_records(out)
    assert {row["status"] for row in records} == {"done"}
    for row in records:
        assert row["finish_reason"] in {"stop", "length"}
        assert 0 < row["completion_tokens"] <= row["budget"] == 80
    assert json.loads(RunFiles.of(out).summary.read_text())["tokens_used"] <= 160
