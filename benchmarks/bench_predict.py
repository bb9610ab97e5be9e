"""Threshold predictor: training and prediction time for 10^5 queries.

    .venv/bin/python benchmarks/bench_predict.py [--n 100000]

Texts are the bundled problems resampled to n (targets: their reference-solution tokens);
timings are wall-clock on this machine, single process.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from shadowprice.predict import ThresholdPredictor
from shadowprice.predict.data import proxy_problems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    a = ap.parse_args()
    d = proxy_problems()
    idx = np.random.default_rng(0).integers(0, len(d), a.n)
    texts = d["question"].to_numpy()[idx].tolist()
    y = d["solution_tokens"].to_numpy()[idx]
    rows = []
    t0 = time.perf_counter()
    m = ThresholdPredictor().fit(texts, y)
    rows.append(("fit (features + 5-fold residuals + final Ridge)", time.perf_counter() - t0))
    t0 = time.perf_counter()
    p = m.predict(texts)
    rows.append(("predict (median + 80% interval)", time.perf_counter() - t0))
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
    print(
        f"n = {a.n} queries; {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}"
    )
    print(f"{'step':<58} {'seconds':>8} {'us/query':>9}")
    for name, s in rows:
        print(f"{name:<58} {s:8.2f} {1e6 * s / a.n:9.1f}")


if __name__ == "__main__":
    main()
