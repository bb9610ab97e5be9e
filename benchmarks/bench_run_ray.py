"""``run --executor ray`` at 1 and 2 workers against a run in one process, end to end.

    .venv/bin/python benchmarks/bench_run_ray.py                  # 1500 queries, 3 rounds
    .venv/bin/python benchmarks/bench_run_ray.py --queries 400 --rounds 1 --policy uniform

Each configuration is the real command (``shadowprice run``, a fresh process) on the same
queries, against one ``shadowprice replay-server`` (a calibrated stream's samples, answers
paced at ``--tokens-per-second``) and one redis-server, both on this machine; the budget is in
Redis for every configuration (``--state``), so the three differ only in where the queries
run. Ray is started once, before the rounds (``RAY_ADDRESS`` is passed to the command, as on a
cluster), so its start-up is not in the figures; it is printed once. ``--concurrency`` is the
total in flight in every configuration (a Ray run splits it over its blocks).

Printed per configuration: the command's wall time (median of the rounds), queries per second,
the run's own ``wall_s``, tokens spent of the budget, correct answers, and whether the budget
held; then the ratios side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from shadowprice.engine.replay_server import replay_gold
from shadowprice.evaluate.sources import load_trace_source
from shadowprice.serve.localredis import LocalRedis

CLI = [sys.executable, "-c", "from shadowprice.cli import main; main()"]
CONFIGS = (("local", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2))


def _replay_server(spec: str, tps: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [*CLI, "replay-server", spec, "--port", "0", "--tokens-per-second", str(tps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"replay-server did not start: {line!r}")
    return proc, line.removeprefix("listening on ") + "/v1"


def _one(args: argparse.Namespace, base: list[str], workers: int | None, k: int) -> dict[str, Any]:
    out = Path(args.tmp) / f"r-{workers}-{k}.jsonl"
    cmd = [*base, "-o", str(out), "--state-name", f"bench-{os.getpid()}-{workers}-{k}"]
    if workers is not None:
        cmd += ["--executor", "ray", "--workers", str(workers)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=args.env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\nexit {done.returncode}: {done.stderr[-2000:]}")
    s = json.loads(out.with_name(out.name.removesuffix(".jsonl") + ".summary.json").read_text())
    return {"wall": wall, **s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1500)
    ap.add_argument("--stream", default="balanced", help="calibrated stream (stream:NAME:N)")
    ap.add_argument("--per-query", type=int, default=300, help="average budget, tokens")
    ap.add_argument("--policy", default="clear")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight, in all")
    ap.add_argument("--tokens-per-second", type=float, default=4000.0, help="replay pace")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    spec = f"stream:{args.stream}:{args.queries}"
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
        f"{platform.python_version()}, ray {ray.__version__}; {spec}, policy {args.policy}, "
        f"--per-query {args.per_query}, --concurrency {args.concurrency} (in all), replay at "
        f"{args.tokens_per_second:g} tokens/s per request\n"
    )
    with tempfile.TemporaryDirectory() as tmp, LocalRedis() as redis:
        args.tmp = tmp
        q = Path(tmp) / "queries.jsonl"
        traces = load_trace_source(spec)
        # The replay server knows a query by its id in the prompt; its threshold from the
        # stream's own curve (no predictor in the loop); graded against what a right sample says.
        rows = [{"id": r["id"], "question": r["id"], "tau": round(r["meta"]["tau"], 1),
                 "answer": replay_gold(r)} for r in traces.records]  # fmt: skip
        q.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        server, url = _replay_server(spec, args.tokens_per_second)
        t0 = time.perf_counter()
        ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(f"local Ray started in {time.perf_counter() - t0:.1f} s (not in the figures)\n")
        args.env = {**os.environ, "RAY_ADDRESS": ctx.address_info["address"]}
        base = [*CLI, "run", str(q), "--endpoint", url, "--model", "replay", "--no-progress",
                "--template", "{question}", "--per-query", str(args.per_query),
                "--policy", args.policy, "--concurrency", str(args.concurrency),
                "--state", redis.url]  # fmt: skip
        try:
            got: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in CONFIGS}
            for k in range(args.rounds):  # configurations interleaved: drift hits all alike
                for name, workers in CONFIGS:
                    got[name].append(_one(args, base, workers, k))
        finally:
            ray.shutdown()
            server.terminate()
            server.wait(10)
    _report(got, args.queries)


def _report(got: dict[str, list[dict[str, Any]]], n: int) -> None:
    print(
        "| where | command wall (s, median) | queries/s | run's wall_s | tokens spent / budget "
        "| correct | within budget |"
    )
    print("|---|---|---|---|---|---|---|")
    med = {}
    for name, runs in got.items():
        med[name] = statistics.median(r["wall"] for r in runs)
        spent = "; ".join(f"{r['tokens_used']}/{r['budget']}" for r in runs)
        correct = "; ".join(str(r["correct"]) for r in runs)
        held = all(r["within_budget"] and r["tokens_used"] <= r["budget"] for r in runs)
        inner = statistics.median(r["wall_s"] for r in runs)
        print(f"| {name} | {med[name]:.2f} | {n / med[name]:.0f} | {inner:.2f} | {spent} "
              f"| {correct} | {'yes' if held else 'NO'} |")  # fmt: skip
    local, one, two = (med[name] for name, _ in CONFIGS)
    print(
        f"\nratios of command wall time: ray 1 worker / local {one / local:.2f}x, "
        f"ray 2 workers / 1 worker {two / one:.2f}x, ray 2 workers / local {two / local:.2f}x"
    )


if __name__ == "__main__":
    main()
