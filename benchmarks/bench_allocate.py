"""Allocation speed, memory and optimality gap, measured in one process.

    .venv/bin/python benchmarks/bench_allocate.py            # full table (about 2 minutes)
    .venv/bin/python benchmarks/bench_allocate.py --quick    # N up to 1e5
    .venv/bin/python benchmarks/bench_allocate.py --before   # and the solvers before the
                                                             # speed work, in the same rounds
    .venv/bin/python benchmarks/bench_allocate.py --sizes 1000000 --no-gap  # one size only

In each of ``--repeat`` rounds every solver is timed right after np.sort of the same
thresholds; the table gives median times and the median of those pairs' ratios, so that
machine speed, load and the memory state cancel. Peak memory is traced by
``tracemalloc`` (numpy reports its buffers to it).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shadowprice import GammaSCurve, ShiftedSurge, allocate

ALPHA, BETA = 1.5, 0.005


def one_time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def before_solvers() -> Callable[..., Any]:
    """``allocate`` with the price policies as they were before the speed work (the
    verbatim copy the equivalence tests compare with)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _solve_before import allocate as before

    return before  # type: ignore[no-any-return]


def speed_row(
    n: int,
    repeat: int,
    per_query: int,
    rng: np.random.Generator,
    before: Callable[..., Any] | None = None,
) -> str:
    tau = rng.lognormal(np.log(400), 0.6, n)
    curves = ShiftedSurge(tau, ALPHA, BETA)
    caps = rng.integers(500, 4000, n)  # per-query max_tokens: the active-set path
    budget = n * per_query
    solvers: list[Callable[[], object]] = [
        lambda: allocate(curves, budget, "clear"),
        lambda: allocate(curves, budget, "clear", max_tokens=caps),
        lambda: allocate(curves, budget, "market"),
    ]
    if before is not None:
        solvers += [
            lambda: before(curves, budget, "clear"),
            lambda: before(curves, budget, "market"),
        ]
    # Side by side: every solver is timed right after a sort of the same thresholds, so that
    # the machine's load and the memory the previous solver left behind hit both alike; the
    # ratios are per pair, then the median over the rounds.
    sorts, times = [], []
    for _ in range(repeat):
        for fn in solvers:
            sorts.append(one_time(lambda: np.sort(tau)))
            times.append(one_time(fn))
    k = len(solvers)
    t_sort = np.asarray(sorts).reshape(repeat, k)
    t_solve = np.asarray(times).reshape(repeat, k)
    med = np.concatenate([[np.median(t_sort)], np.median(t_solve, axis=0)])
    ratio = np.median(t_solve / t_sort, axis=0)
    then = f" {ratio[3]:.1f}x | {ratio[4]:.1f}x |" if before is not None else ""
    if n <= 2000:
        oracle = f"{one_time(lambda: allocate(curves, budget, 'oracle', granularity=64)) * 1e3:.0f}"
    else:
        oracle = "too large (N x G cells)"
    m_clear = peak_mib(lambda: allocate(curves, budget, "clear"))
    m_market = peak_mib(lambda: allocate(curves, budget, "market"))
    return (
        f"| {n:.0e} | {med[0] * 1e3:.1f} | {med[1] * 1e3:.1f} | {ratio[0]:.1f}x | "
        f"{med[2] * 1e3:.0f} ({ratio[1]:.0f}x) | {med[3] * 1e3:.0f} | {ratio[2]:.1f}x | "
        f"{med[3] / med[1]:.1f}x | {oracle} | {m_clear:.0f} | {m_market:.0f} |{then}"
    )


def speed_table(
    sizes: list[int], repeat: int, per_query: int = 300, before: Callable[..., Any] | None = None
) -> None:
    print(
        f"## Speed and memory (shifted surge, alpha={ALPHA}, beta={BETA}, "
        f"tau ~ lognormal(median 400, sigma 0.6), {per_query} tokens/query; medians of "
        f"{repeat} rounds, ratios to np.sort of the same thresholds in the same round)\n"
    )
    print(
        "| N | sort (ms) | clear (ms) | clear / sort | clear with per-query caps, active set "
        "(ms, / sort) | market 64-level (ms) | market / sort | market / clear | oracle DP, "
        "g=64 (ms) | peak MiB clear | peak MiB market |"
        + (" clear before / sort | market before / sort |" if before else "")
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if before else ""))
    rng = np.random.default_rng(0)
    for n in sizes:
        print(speed_row(n, repeat, per_query, rng, before), flush=True)


def gap_table(seeds: int = 5, n: int = 200) -> None:
    """Utility of clear and market as a share of the exact DP optimum on the same grid."""
    print(
        f"\n## Optimality gap vs the DP oracle (N={n}, {seeds} random instances each, "
        "granularity 16, oracle on every multiple of 16, leftover='keep')\n"
    )
    print(
        "| curves | tokens/query | clear / oracle (min, mean) | market / oracle (min, mean) | "
        "uniform / oracle (mean) |"
    )
    print("|---|---|---|---|---|")
    for kind in ("surge", "gamma"):
        for per_query in (100, 200, 400, 800):
            rc, rm, ru = [], [], []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                tau = rng.lognormal(np.log(350), 0.6, n)
                curves = (
                    ShiftedSurge(tau, ALPHA, BETA)
                    if kind == "surge"
                    else GammaSCurve(tau, rng.uniform(0.004, 0.02, n), rng.uniform(0.2, 1, n))
                )
                budget = n * per_query
                top = int(np.ceil(min(budget, np.max(tau) + 1200) / 16) * 16)
                grid = np.arange(0, top + 1, 16)
                oracle = allocate(curves, budget, "oracle", granularity=16, grid=grid).utility
                # The model's own optimum: headroom spread past the surge's peak would lower
                # the modelled utility that the oracle maximises.
                c = allocate(curves, budget, "clear", granularity=16, leftover="keep").utility
                m = allocate(curves, budget, "market", granularity=16, leftover="keep").utility
                u = allocate(curves, budget, "uniform", granularity=16).utility
                rc.append(c / oracle)
                rm.append(m / oracle)
                ru.append(u / oracle)
            print(
                f"| {kind} | {per_query} | {min(rc):.4f}, {np.mean(rc):.4f} | "
                f"{min(rm):.4f}, {np.mean(rm):.4f} | {np.mean(ru):.3f} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="N up to 1e5, fewer repeats")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument(
        "--before",
        action="store_true",
        help="also time 'clear' and 'market' as they were before the speed work (tests/)",
    )
    ap.add_argument(
        "--sizes", type=int, nargs="+", help="numbers of queries to time (default 1e3 to 1e6)"
    )
    ap.add_argument("--no-gap", action="store_true", help="skip the optimality-gap table")
    args = ap.parse_args()
    print(
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, numpy {np.__version__}\n"
    )
    sizes = [10**3, 10**4, 10**5] if args.quick else [10**3, 10**4, 10**5, 10**6]
    before = before_solvers() if args.before else None
    speed_table(args.sizes or sizes, 3 if args.quick else args.repeat, before=before)
    if not args.no_gap:
        gap_table(seeds=2 if args.quick else 5)


if __name__ == "__main__":
    main()
