"""Allocation speed, memory and optimality gap, measured in one process.

    .venv/bin/python benchmarks/bench_allocate.py            # full table (about 2 minutes)
    .venv/bin/python benchmarks/bench_allocate.py --quick    # N up to 1e5

Times are the best of ``--repeat`` runs; ratios are taken within this run so that machine
speed cancels. Peak memory is traced by ``tracemalloc`` (numpy reports its buffers to it).
"""

from __future__ import annotations

import argparse
import platform
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from shadowprice import GammaSCurve, ShiftedSurge, allocate

ALPHA, BETA = 1.5, 0.005


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def speed_row(n: int, repeat: int, per_query: int, rng: np.random.Generator) -> str:
    tau = rng.lognormal(np.log(400), 0.6, n)
    curves = ShiftedSurge(tau, ALPHA, BETA)
    caps = rng.integers(500, 4000, n)  # per-query max_tokens: the O(N)-per-step path
    budget = n * per_query
    few = max(1, repeat // 2)
    t_sort = best_time(lambda: np.sort(tau), repeat)
    t_clear = best_time(lambda: allocate(curves, budget, "clear"), repeat)
    t_vec = best_time(lambda: allocate(curves, budget, "clear", max_tokens=caps), few)
    t_market = best_time(lambda: allocate(curves, budget, "market"), few)
    if n <= 2000:
        t_oracle = best_time(lambda: allocate(curves, budget, "oracle", granularity=64), 1)
        oracle = f"{t_oracle * 1e3:.0f}"
    else:
        oracle = "too large (N x G cells)"
    m_clear = peak_mib(lambda: allocate(curves, budget, "clear"))
    m_market = peak_mib(lambda: allocate(curves, budget, "market"))
    return (
        f"| {n:.0e} | {t_sort * 1e3:.1f} | {t_clear * 1e3:.1f} | {t_clear / t_sort:.1f}x | "
        f"{t_vec * 1e3:.0f} ({t_vec / t_sort:.0f}x sort) | {t_market * 1e3:.0f} | "
        f"{t_market / t_clear:.1f}x | {oracle} | {m_clear:.0f} | {m_market:.0f} |"
    )


def speed_table(sizes: list[int], repeat: int, per_query: int = 300) -> None:
    print(
        f"## Speed and memory (shifted surge, alpha={ALPHA}, beta={BETA}, "
        f"tau ~ lognormal(median 400, sigma 0.6), {per_query} tokens/query)\n"
    )
    print(
        "| N | sort (ms) | clear (ms) | clear / sort | clear with per-query caps, active set "
        "(ms) | market 64-level (ms) | market / clear | oracle DP, g=64 (ms) | "
        "peak MiB clear | peak MiB market |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in sizes:
        print(speed_row(n, repeat, per_query, rng), flush=True)


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
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, numpy {np.__version__}\n"
    )
    sizes = [10**3, 10**4, 10**5] if args.quick else [10**3, 10**4, 10**5, 10**6]
    speed_table(sizes, 2 if args.quick else args.repeat)
    gap_table(seeds=2 if args.quick else 5)


if __name__ == "__main__":
    main()
