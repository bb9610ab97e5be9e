"""Soak the gateway under random fault sequences: does the budget hold?

    .venv/bin/python benchmarks/bench_faults.py [--sequences 40] [--steps 25] [--seed 0]
        [--budget 3000]

Runs the state machine of ``tests/test_serve_fault_sequences.py`` (one or two ``shadowprice
serve`` replicas on one real Redis, fail closed or open, in front of the fault-capable fake
upstream that counts what it would have generated; bursts of requests with faults drawn from
the whole catalogue, clients that hang up, replicas SIGKILLed and revived, Redis stopped and
restarted) for many more and longer sequences than CI does, and prints one JSON line per
sequence and a total: requests, faults injected, kills, outages, tokens generated against the
budget and against what the ledger charged. Any sequence that breaks an invariant stops the
soak with hypothesis's shrunk counterexample.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_serve_fault_sequences as seq
from shadowprice.serve.localredis import LocalRedis
from shadowprice.serve.testing import ServerThread, fake_upstream


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=40)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=seq.BUDGET, help="tokens per sequence")
    args = ap.parse_args()
    seq.BUDGET = args.budget  # read by the state machine at each sequence
    app, log = fake_upstream(speed=4000, worst_case=True, pause=2.0, keep_bodies=False)
    t0 = time.perf_counter()
    with LocalRedis() as redis, ServerThread(app) as up:
        seq.FaultSequence.world = seq.World(redis, up.url, log)
        case = seq.FaultSequence.TestCase
        case.settings = settings(
            max_examples=args.sequences,
            stateful_step_count=args.steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        from hypothesis import seed

        seed(args.seed)(case.runTest)(case())
    tallies = seq.FaultSequence.tallies
    faults: dict[str, int] = {}
    for t in tallies:
        print(json.dumps({"sequence": t.__dict__}))
        for name, k in t.faults.items():
            faults[name] = faults.get(name, 0) + k
    total = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "sequences": len(tallies),
        "budget_per_sequence": seq.BUDGET,
        "requests": sum(t.requests for t in tallies),
        "faults_injected": sum(k for name, k in faults.items() if name != "none"),
        "faults": faults,
        "replica_kills": sum(t.kills for t in tallies),
        "redis_outages": sum(t.outages for t in tallies),
        "max_generated": max((t.generated for t in tallies), default=0),
        "sequences_over_budget": sum(t.generated > seq.BUDGET for t in tallies),
        "sequences_under_counted": sum(t.generated > t.charged for t in tallies),
        "generated_share_of_budget_mean": round(
            sum(t.generated for t in tallies) / max(1, len(tallies)) / seq.BUDGET, 3
        ),
        "charged_share_of_budget_mean": round(
            sum(t.charged for t in tallies) / max(1, len(tallies)) / seq.BUDGET, 3
        ),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps({"total": total}))


if __name__ == "__main__":
    main()
