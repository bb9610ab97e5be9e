"""Live planner speed: a whole clear-live run of N queries through the serving-engine simulator.

    .venv/bin/python benchmarks/bench_live.py            # N = 1e3, 1e4, 1e5 (about a minute)
    .venv/bin/python benchmarks/bench_live.py --quick    # N = 1e3, 1e4

Times are CPU seconds of this process (``time.process_time``; wall time in brackets): the
development machine's 2 cores are usually shared, and CPU time is what the run costs there.
Each row builds the planner (tabulate value, spend and survival on its grid, the concave
envelopes, the sorted segment market) and simulates one world (16 slots, one token per tick,
a MemoryLedger reserving every request) of a SYNTHETIC balanced-long stream at 2,000 tokens
per query, with the stream's true curves. Side by side, in the same process: the same world
run as a one-shot plan (no re-clearing: the floor of what any live run costs), and one full
re-clear of the spent-accounting market (what re-solving after every request would cost,
times the number of requests).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from shadowprice import GammaSCurve, allocate
from shadowprice.evaluate.simulate import simulate
from shadowprice.evaluate.streams import make_stream
from shadowprice.live import ClearLive, OneShot
from shadowprice.solve.constraints import make_constraints
from shadowprice.solve.envelope import clear_menu
from shadowprice.solve.menus import menu_from_curve

PER_QUERY = 2000


def world(n: int, seed: int = 0) -> tuple[GammaSCurve, np.ndarray, np.ndarray]:
    """True curves (wrong answers twice as long, as the stream samples them) and one sample
    per query."""
    t = make_stream("balanced", n, seed, family="long").truth
    truth = GammaSCurve(t.tau, t.beta, t.p, t.beta / 2)
    rng = np.random.default_rng(seed + 1)
    right = rng.random(n) < truth.p
    rate = np.where(right, truth.beta, truth.wrong_beta)
    lengths = np.rint(truth.tau + rng.gamma(2.0, 1.0, n) / rate).astype(np.int64)
    return truth, lengths, right


def row(n: int) -> str:
    truth, lengths, right = world(n)
    budget = PER_QUERY * n
    c0, t0 = time.process_time(), time.perf_counter()
    planner = ClearLive(truth, budget)
    c1 = time.process_time()
    live = simulate(planner, lengths, right, budget)
    c2, t2 = time.process_time(), time.perf_counter()
    plan = allocate(truth, budget, "uniform")
    t3 = time.perf_counter()
    simulate(OneShot(plan.budgets), lengths, right, budget)
    t4 = time.perf_counter()
    grid = planner.tables.grid
    cons = make_constraints(n, budget)
    menu = menu_from_curve(truth, cons, grid=grid, accounting="spent")
    t5 = time.perf_counter()
    clear_menu(menu, cons)
    t6 = time.perf_counter()
    events = int(live.requests.sum())
    setup, sim = c1 - c0, c2 - c1
    naive = (t6 - t5) * events
    return (
        f"| {n:.0e} | {setup:.2f} | {sim:.2f} | **{setup + sim:.2f}** ({t2 - t0:.2f}) | {events} | "
        f"{sim / max(events, 1) * 1e6:.0f} | {t4 - t3:.2f} | {(t6 - t5) * 1e3:.0f} | "
        f"{naive:.0f} ({naive / (setup + sim):.0f}x) | {planner.env.slope.size / n:.1f} | "
        f"{live.accuracy:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="N = 1e3 and 1e4 only")
    args = ap.parse_args()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    print(
        f"# clear-live, {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )
    print(
        "| N | planner set-up, CPU (s) | simulation, CPU (s) | total, CPU (wall) (s) | requests | "
        "CPU µs per request | "
        "one-shot plan simulated (s) | one full spent re-clear (ms) | re-clearing in full "
        "after every request (s, x total) | envelope segments per query | accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        print(row(n), flush=True)


if __name__ == "__main__":
    main()
