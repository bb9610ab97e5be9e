"""Allocation of a large batch through Ray Data against the same allocation in one process.

    .venv/bin/python benchmarks/bench_ray.py                 # 10^7 queries, 16 blocks
    .venv/bin/python benchmarks/bench_ray.py --n 1000000 --blocks 8

Ray runs locally (``--cpus`` workers). The dataset is built from arrays already in memory;
the Ray time covers everything :func:`~shadowprice.integrations.ray.price_dataset` does
(materialising the blocks, the shards, the price search, the hand-out, the output columns),
not reading files. The budgets are then checked against the in-process ones.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pyarrow as pa
import ray
import ray.data

from shadowprice import ShiftedSurge, allocate
from shadowprice.integrations.ray import price_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10**7, help="queries")
    ap.add_argument("--blocks", type=int, default=16, help="blocks of the dataset")
    ap.add_argument("--cpus", type=int, default=2, help="Ray workers")
    ap.add_argument("--per-query", type=int, default=300, help="average budget, tokens")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"Machine: {platform.machine()}, CPython {platform.python_version()}, numpy "
        f"{np.__version__}, ray {ray.__version__}, {args.cpus} Ray CPUs\n"
    )
    rng = np.random.default_rng(0)
    tau = rng.lognormal(np.log(400), 0.6, args.n)
    budget = args.n * args.per_query
    curves = ShiftedSurge(tau, 1.5, 0.005)

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_arrow(
        [pa.table({"tau": part}) for part in np.array_split(tau, args.blocks)]
    ).materialize()

    local, remote = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        one = allocate(curves, budget, "clear")
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        priced = price_dataset(ds, budget)
        remote.append(time.perf_counter() - t)
    budgets = np.concatenate(
        [
            b["max_tokens"]
            for b in priced.dataset.iter_batches(batch_size=None, batch_format="numpy")
        ]
    )
    same = bool(np.array_equal(budgets, one.budgets)) and priced.allocation.price == one.price
    print(
        f"| queries | blocks | in process (s) | Ray Data (s) | Ray / in process | identical |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {args.n:.0e} | {args.blocks} | {np.median(local):.2f} | {np.median(remote):.2f} | "
        f"{np.median(remote) / np.median(local):.0f}x | {'yes' if same else 'NO'} |"
    )
    print(f"\nmedians of {args.repeat}; {priced.allocation.message}")
    ray.shutdown()


if __name__ == "__main__":
    main()
