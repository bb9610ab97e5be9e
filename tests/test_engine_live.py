"""End-to-end on the real local llama.cpp server (``tools/engine.sh start``; CI always does).

Needs ``SHADOWPRICE_LLAMA_URL``; skips with the reason when it is unset or unreachable.
Budgets are tiny (the CPU model decodes ~35 tok/s over 4 slots): assert structure (finish
reasons, counts <= budget, no repeats on resume), never exact text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shadowprice.engine.collect import CollectConfig, CollectQuery, collect_traces
from shadowprice.engine.live_demo import sample_problems
from shadowprice.engine.planning import build_items, heuristic_tau, plan_budgets
from shadowprice.engine.results import read_records
from shadowprice.engine.run import RunConfig, prompt_messages, run_plan

pytestmark = pytest.mark.engine

N = 6
PER_QUERY = 50  # uniform gets 50 tokens each: far below what a step-by-step answer needs
FORCE = 16


@pytest.fixture(scope="module")
def url(llama_url: str) -> str:
    return llama_url


@pytest.fixture(scope="module")
def problems() -> list[tuple[str, str, str]]:
    return sample_problems(N)


def _queries_file(path: Path, problems: list[tuple[str, str, str]]) -> Path:
    taus = heuristic_tau([q for _, q, _ in problems])
    with path.open("w") as f:
        for (qid, q, a), tau in zip(problems, taus, strict=True):
            f.write(json.dumps({"id": qid, "question": q, "answer": a, "tau": float(tau)}) + "\n")
    return path


def _check_run(records: list[dict], budget: int, n: int) -> None:
    assert len(records) == n
    assert sum(r["tokens"] for r in records) <= budget
    for r in records:
        assert r["status"] in {"done", "abandoned"}, r.get("reason")
        assert r["correct"] in (True, False)  # every query graded (abandoned = wrong)
        if r["status"] == "done":
            assert r["finish_reason"] in {"stop", "length"}
            assert r["completion_tokens"] <= r["budget"]
            assert r["forcing_tokens"] <= FORCE
        else:
            assert r["tokens"] == 0 and r["reason"]


def test_uniform_vs_clear_with_kill_and_resume(
    url: str, problems: list[tuple[str, str, str]], tmp_path: Path
) -> None:
    from shadowprice import ShiftedSurge

    budget = N * PER_QUERY
    ids, questions, golds = (list(col) for col in zip(*problems, strict=True))

    # Uniform, in-process.
    curves = ShiftedSurge(heuristic_tau(questions))
    planned = plan_budgets(curves, budget, "uniform", force_tokens=FORCE)
    uniform = run_plan(
        build_items(ids, questions, planned.budgets.tolist(), golds),
        endpoint=url,
        model="local",
        total_budget=budget,
        out=tmp_path / "uniform.jsonl",
        config=RunConfig(concurrency=4, force_tokens=FORCE, progress=False),
    )
    _check_run(uniform.records, budget, N)
    assert np.all(planned.budgets < 100)  # too thin for a worked GSM8K answer

    # CLEAR through the CLI, killed after its first result, then re-run to completion.
    queries = _queries_file(tmp_path / "q.jsonl", problems)
    out = tmp_path / "clear.jsonl"
    cli = "from shadowprice.cli import main; main()"
    cmd = [
        sys.executable,
        "-c",
        cli,
        "run",
        str(queries),
        "--endpoint",
        url,
        "--model",
        "local",
        "--budget",
        str(budget),
        "--policy",
        "clear",
        "--force-answer",
        "--force-tokens",
        str(FORCE),
        "--concurrency",
        "2",
        "--no-progress",
        "-o",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Killed once a first query is done: the one still in flight is counted in full on
    # resume (it may have been billed). A slow machine gets time to finish one.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r["status"] == "done" for r in read_records(out)):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = out.read_text() if out.exists() else ""
    done_before = {r["id"] for r in read_records(out)}

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = out.read_text()
    assert after.startswith(before.rsplit("\n", 1)[0])  # finished work kept as it was
    records = read_records(out)
    counts = Counter(r["id"] for r in records)
    assert set(counts) == set(ids) and max(counts.values()) == 1  # nothing lost or repeated
    _check_run(records, budget, N)
    summary = json.loads(out.with_name("clear.summary.json").read_text())
    assert summary["resumed"] == len(done_before)
    assert summary["tokens_used"] <= budget and summary["within_budget"]
    # CLEAR concentrates the budget: fewer, larger grants than uniform's thin spread.
    funded = [r["budget"] for r in records if r["budget"] > 0]
    assert funded, "no query finished before the kill: the machine is too slow for this test"
    assert max(funded) > max(r["budget"] for r in uniform.records)
    print(
        f"\nuniform: {uniform.summary['correct']}/{N} correct, "
        f"{uniform.summary['tokens_used']}/{budget} tokens; "
        f"clear: {summary['correct']}/{N} correct, {summary['tokens_used']}/{budget} tokens, "
        f"{summary['abandoned']} abandoned"
    )


def test_collect_produces_a_trace_set_evaluate_reads(
    url: str, problems: list[tuple[str, str, str]], tmp_path: Path
) -> None:
    out = tmp_path / "traces.jsonl"
    qs = [CollectQuery(qid, prompt_messages(q), q, a) for qid, q, a in problems[:2]]
    stats = collect_traces(
        qs,
        endpoint=url,
        model="local",
        out=out,
        config=CollectConfig(samples=2, max_tokens=40, concurrency=4, progress=False),
    )
    assert stats["completed"] == 2 and stats["failed_samples"] == 0
    for rec in read_records(out):
        assert len(rec["samples"]) == 2
        for s in rec["samples"]:
            assert 0 < s["tokens"] <= 40 and s["finish_reason"] in {"stop", "length"}
    from shadowprice.traces import read_traces

    traces = read_traces(out)
    assert len(traces) == 2
