"""Threshold predictor: one question at a time (a gateway) and 10^5 at once (a batch).

    .venv/bin/python benchmarks/bench_predict.py --n 0 --single 1000   # single text only
    .venv/bin/python benchmarks/bench_predict.py --n 100000 --single 0  # batch only

Single text: the bundled default model; ``--single`` distinct bundled questions, each timed
through every path in turn (rotating the order), so all paths see the same machine load:

- ``ThresholdPredictor.predict([text])``: scikit-learn's transform and Ridge;
- ``compile()`` cold: every cache emptied before each text (each word's n-grams looked up
  afresh): the worst case;
- ``compile()``, new text: the text cache off, the per-word table warmed on 2,000 other
  bundled questions (a gateway after its first minutes);
- ``compile()``, repeated text: an LRU cache hit.

The agreement with ``predict`` (max relative difference of the medians) is printed too.

Batch: texts resampled to ``--n`` from the bundled problems (targets: their reference-solution
tokens); fit, predict and curves, wall-clock, single process.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from shadowprice.predict import ThresholdPredictor, default_predictor
from shadowprice.predict.data import proxy_problems


def machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, load average {load}"
    )


def single(n: int, seed: int) -> None:
    model = default_predictor()
    d = proxy_problems()
    order = np.random.default_rng(seed).permutation(len(d))
    texts = d["question"].to_numpy()[order[:n]].tolist()
    warm_texts = d["question"].to_numpy()[order[n : n + 2000]].tolist()
    cold = model.compile(cache_size=0)
    warm = model.compile(cache_size=0)
    warm.predict(warm_texts)
    cached = model.compile(cache_size=len(texts))
    cached.predict(texts)

    def cold_one(t: str) -> object:
        return cold.predict_one(t)

    paths: dict[str, Callable[[str], object]] = {
        "ThresholdPredictor.predict([text])": lambda t: model.predict([t]),
        "compile(): cold (all caches emptied)": cold_one,
        "compile(): new text, warm word table": warm.predict_one,
        "compile(): repeated text (cache hit)": cached.predict_one,
    }
    names = list(paths)
    us: dict[str, list[float]] = {k: [] for k in names}
    for i, t in enumerate(texts):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            if k.startswith("compile(): cold"):
                cold.cache_clear()
            t0 = time.perf_counter_ns()
            paths[k](t)
            us[k].append((time.perf_counter_ns() - t0) / 1e3)
    ref = model.predict(texts)
    rel = float(np.max(np.abs(warm.predict(texts) / ref - 1)))
    base = statistics.median(us[names[0]])
    print(f"single text: {n} bundled questions, bundled default model; {machine()}")
    print(f"{'path':<40} {'median us':>10} {'mean us':>9} {'p99 us':>8} {'speed-up':>9}")
    for k in names:
        v = us[k]
        med = statistics.median(v)
        p99 = float(np.quantile(v, 0.99))
        print(f"{k:<40} {med:10.1f} {statistics.fmean(v):9.1f} {p99:8.1f} {base / med:8.1f}x")
    print(f"max relative difference of the compiled medians from predict: {rel:.1e}")


def batch(n: int) -> None:
    d = proxy_problems()
    idx = np.random.default_rng(0).integers(0, len(d), n)
    texts = d["question"].to_numpy()[idx].tolist()
    y = d["solution_tokens"].to_numpy()[idx]
    rows = []
    t0 = time.perf_counter()
    m = ThresholdPredictor().fit(texts, y)
    rows.append(("fit (features + 5-fold residuals + final Ridge)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    p = m.predict_distribution(texts)
    rows.append(("predict_distribution (median + 80% interval)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    c = m.predict_curves(p, "gamma", uncertainty=False, beta=0.06, p=0.9)
    rows.append(("predict_curves point (GammaSCurve)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    c = m.predict_curves(p, "gamma", uncertainty=True, beta=0.06, p=0.9, nodes=16)
    rows.append(
        (
            f"predict_curves expected ({c.values.shape[1]}-point grid, 16 nodes)",
            time.perf_counter() - t0,
        )
    )
    print(f"batch: n = {n} queries; {machine()}")
    print(f"{'step':<58} {'seconds':>8} {'us/query':>9}")
    for name, s in rows:
        print(f"{name:<58} {s:8.2f} {1e6 * s / n:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="batch size (0 skips the batch)")
    ap.add_argument("--single", type=int, default=1000, help="single-text questions (0 skips)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.single:
        single(a.single, a.seed)
    if a.n:
        batch(a.n)


if __name__ == "__main__":
    main()
