"""The pacing measurements through the real gateway, in real time.

    .venv/bin/python benchmarks/bench_gateway_pacing.py
        [--scenarios repeat_3x,replicas2_fresh,trickle] [--trickle-seconds 600]

Each fresh-start scenario of :data:`shadowprice.evaluate.scenarios.SCENARIOS` (the same
arrivals, thresholds, caps and budget the simulator uses: ``benchmarks/bench_online.py``) is
replayed on the clock against ``shadowprice serve`` processes (two on one real Redis for
``replicas2_fresh``) in front of a fake upstream that spends every allowance. The 60-s
scenarios start on a period boundary (a fresh period); ``trickle`` (an hourly budget) starts
where the hour is and runs ``--trickle-seconds``. Prints one JSON line per scenario: the
granted share per window (10 s; 5 min for ``trickle``), the longest stretch with every request
refused while spending was behind the pace line, the share of the budget used, and tokens
generated over the budget (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
import numpy as np

from shadowprice.evaluate.scenarios import SCENARIOS, budget_for
from shadowprice.serve.localredis import LocalRedis
from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream

PY = sys.executable


class Gateway:
    """``shadowprice serve`` in its own process."""

    def __init__(self, args: list[str]) -> None:
        cmd = [PY, "-c", "from shadowprice.cli import main; main()", "serve", *args]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.p.stdout is not None
        line = self.p.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"gateway did not start: {line!r}")
        self.url = line.removeprefix("listening on ")

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=30)


async def replay(
    urls: list[str], offsets: np.ndarray, caps: np.ndarray, t0: float
) -> list[tuple[float, int, int]]:
    """Send request i at ``t0 + offsets[i]`` to ``urls[i % len(urls)]``; (time, status,
    allowance) of each."""
    out: list[tuple[float, int, int]] = []

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + float(offsets[i]) - time.time()))
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "the same question LEN:1000000"}],
            "max_tokens": int(caps[i]),
        }
        sent = time.time()
        async with http.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body) as r:
            await r.read()
            out.append((sent, r.status, int(r.headers.get("x-shadowprice-allowance", 0))))

    # A connection per request: one every 5 s would race the server's 5 s keep-alive.
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(one(http, i) for i in range(offsets.size)))
    return sorted(out)


def windows(
    rows: list[tuple[float, int, int]], start: float, width: float, end: float
) -> list[float | None]:
    """Granted share of the requests in each window of ``width`` seconds."""
    shares: list[float | None] = []
    k = start
    while k < end:
        inside = [s for t, s, _ in rows if k <= t < k + width]
        shares.append(round(sum(s == 200 for s in inside) / len(inside), 3) if inside else None)
        k += width
    return shares


def lockout_behind(
    rows: list[tuple[float, int, int]], budget: int, period: float, tick: float
) -> float:
    """Longest stretch (seconds) in which every request was refused while the tokens granted
    so far were behind the pace line; a stretch counts from one refused request to the last
    refused before a grant, so a single refusal is 0 s."""
    longest, since, granted = 0.0, None, 0
    for t, status, allowance in rows:
        behind = granted < budget * ((t % period) / period)
        if status == 200:
            granted += allowance
            since = None
        elif behind:
            since = t if since is None else since
            longest = max(longest, t - since)
        else:
            since = None
    return longest


def run(name: str, args: argparse.Namespace, up_url: str, log: FakeLog) -> dict[str, Any]:
    sc = SCENARIOS[name]
    traffic = sc.traffic("synthetic", None, args.seed)
    budget = budget_for(sc, traffic, "spend_all")
    offsets = traffic.arrival - traffic.arrival[0]
    caps = traffic.cap
    if name == "trickle":
        keep = offsets <= args.trickle_seconds
        offsets, caps = offsets[keep], caps[keep]
    tau = float(traffic.tau_hat[0])  # one question: the route's threshold
    common = ["--upstream", up_url, "--budget", str(budget), "--period", str(int(sc.period)),
              "--route-tau", f"{tau:.3f}", "--port", "0"]  # fmt: skip
    redis = LocalRedis().start() if sc.replicas > 1 else None
    extra = ["--state", redis.url, "--namespace", uuid.uuid4().hex] if redis else []
    gws = [Gateway(common + extra) for _ in range(sc.replicas)]
    try:
        now = time.time()
        t0 = now if name == "trickle" else (now // sc.period + 1) * sc.period + 0.05
        log.reset()
        rows = asyncio.run(replay([g.url for g in gws], offsets, caps, t0))
        time.sleep(1.0)
    finally:
        for g in gws:
            g.stop()
        if redis is not None:
            redis.close()
    width = 300.0 if sc.period >= 3600 else 10.0
    end = t0 + float(offsets[-1]) + 1e-6
    # The upstream spends every allowance: what a period's grants hold is what it generated.
    per_period: dict[int, int] = {}
    for t, status, allowance in rows:
        if status == 200:
            k = int(t // sc.period)
            per_period[k] = per_period.get(k, 0) + allowance
    first = int(t0 // sc.period)
    granted = sum(per_period.values())
    return {
        "scenario": name,
        "replicas": sc.replicas,
        "requests": len(rows),
        "budget": budget,
        "period_s": sc.period,
        "started_at_period_share": round((t0 % sc.period) / sc.period, 3),
        "window_s": width,
        "granted_share_per_window": windows(rows, t0, width, end),
        "statuses": {
            str(k): sum(s == k for _, s, _ in rows) for k in sorted({s for _, s, _ in rows})
        },
        "longest_all_refused_behind_pace_s": round(
            lockout_behind(rows, budget, sc.period, args.tick), 2
        ),
        "tick_s": args.tick,
        "granted_tokens_per_period": [
            per_period.get(k, 0) for k in range(first, max(per_period) + 1)
        ],
        "generated_tokens": log.generated,
        "charged_as_generated": log.generated == granted,
        "budget_used_first_period": round(per_period.get(first, 0) / budget, 3),
        "tokens_over_budget": max(0, *(v - budget for v in per_period.values())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="repeat_3x,replicas2_fresh,trickle")
    ap.add_argument("--trickle-seconds", type=float, default=600.0)
    ap.add_argument("--tick", type=float, default=0.25, help="the gateway's price update, s")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                      "python": platform.python_version()}), flush=True)  # fmt: skip
    app, log = fake_upstream(speed=0, keep_bodies=False)
    with ServerThread(app) as up:
        for name in args.scenarios.split(","):
            print(json.dumps(run(name, args, up.url, log)), flush=True)


if __name__ == "__main__":
    main()
