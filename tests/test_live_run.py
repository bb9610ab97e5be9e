"""``run --policy clear-live`` on the real local llama.cpp server (``tools/engine.sh start``).

Needs ``SHADOWPRICE_LLAMA_URL``; skips with the reason when it is unset or unreachable. Budgets
are tiny: assert structure (spend within budget, continuation not restart, no repeats on
resume), never exact text.
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

from shadowprice import GammaSCurve
from shadowprice.engine.live import LiveRunOptions, run_live
from shadowprice.engine.live_demo import sample_problems
from shadowprice.engine.planning import build_items
from shadowprice.engine.results import read_records
from shadowprice.engine.run import RunConfig

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def url(llama_url: str) -> str:
    return llama_url


def test_capped_requests_are_continued_not_restarted(url: str, tmp_path: Path) -> None:
    problems = sample_problems(2)
    ids, questions, golds = (list(c) for c in zip(*problems, strict=True))
    # Curves that expect ~60-token answers: the model writes more, so first requests (capped
    # at the median length: step=2) stop on their caps and the price continues them.
    curves = GammaSCurve(np.full(2, 20.0), 0.05)
    budget = 500
    report = run_live(
        build_items(ids, questions, [0, 0], golds),
        curves,
        endpoint=url,
        model="local",
        total_budget=budget,
        out=tmp_path / "live.jsonl",
        config=RunConfig(concurrency=2, progress=False),
        options=LiveRunOptions(max_tokens=240, calibrate=False, step=2.0),
    )
    s = report.summary
    assert s["continuation"] == "prefill"  # detected: llama.cpp continues a final message
    assert s["tokens_used"] <= budget and s["within_budget"] and s["overrun"] == 0
    assert sum(r["tokens"] for r in report.records) == s["tokens_used"]
    continued = [r for r in report.records if r["requests"] > 1]
    assert continued, [(r["requests"], r["tokens"], r["finish_reason"]) for r in report.records]
    for r in continued:
        assert r["extensions"] >= 1 and r["tokens"] <= 240
        head = r["text"][:40]
        assert head and r["text"].count(head) == 1  # continued: the start is not repeated
    assert s["live"]["extensions"] >= 1


def _queries_file(path: Path, problems: list[tuple[str, str, str]]) -> Path:
    with path.open("w") as f:
        for qid, q, a in problems:
            f.write(json.dumps({"id": qid, "question": q, "answer": a, "tau": 40.0}) + "\n")
    return path


def test_live_run_killed_and_resumed_repeats_nothing(url: str, tmp_path: Path) -> None:
    problems = sample_problems(4)
    ids = [p[0] for p in problems]
    budget = 4 * 90
    queries = _queries_file(tmp_path / "q.jsonl", problems)
    out = tmp_path / "live.jsonl"
    cmd = [
        sys.executable,
        "-c",
        "from shadowprice.cli import main; main()",
        "run",
        str(queries),
        "--endpoint",
        url,
        "--model",
        "local",
        "--budget",
        str(budget),
        "--beta",
        "0.03",
        "--concurrency",
        "2",
        "--no-progress",
        "-o",
        str(out),
    ]  # the default policy is clear-live
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r["status"] == "done" for r in read_records(out)):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {r["id"] for r in read_records(out)}

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    records = read_records(out)
    counts = Counter(r["id"] for r in records)
    assert set(counts) == set(ids) and max(counts.values()) == 1  # nothing lost or repeated
    summary = json.loads(out.with_name("live.summary.json").read_text())
    assert summary["policy"] == "clear-live" and summary["resumed"] == len(done_before)
    assert summary["tokens_used"] <= budget and summary["within_budget"]
    # What the killed run had in flight is counted as spent, never given out twice.
    assert sum(r["tokens"] for r in records) <= summary["tokens_used"]
    assert "spent" in rerun.stdout and "price" in rerun.stdout
