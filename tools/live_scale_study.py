"""clear-live with a predictor made for another model: lengths several times the predicted.

    .venv/bin/python tools/live_scale_study.py                # x4 lengths, 2 folds (~3 min)
    .venv/bin/python tools/live_scale_study.py --factor 8

The bundled real traces (Qwen2.5-Math-Instruct on 100 MATH problems) stand in for "the
predictor's model"; the same traces with every length multiplied by ``--factor`` stand in for
a reasoning model that writes that much longer (its answers unchanged). The text predictor is
cross-fitted over ``--folds`` folds of queries and calibrated on the *original* fit traces, so
it ranks the queries well but puts their lengths ``--factor`` times too low. Each fold is run
under spent accounting at ``factor`` x the budgets per query (16 engine slots, worlds of one
scoring sample per query):

* ``uniform`` and ``clear`` (one-shot plans on the predictor's curves);
* ``clear-live`` without calibration, and with it (the default);
* ``clear-live`` on the predictor calibrated on the *scaled* fit traces (what knowing the
  model would give);
* the spent-accounting ceiling.

Prints a markdown table of accuracy [95 % CI over queries] and the scale the live policy
fitted.
"""

from __future__ import annotations

import argparse

import numpy as np

from shadowprice import allocate
from shadowprice.evaluate import bootstrap_ci, kfold_queries
from shadowprice.evaluate.prediction import text_curve_predictor
from shadowprice.evaluate.simulate import sample_worlds, simulate, spent_ceiling
from shadowprice.live import ClearLive, LiveConfig, OneShot
from shadowprice.traces import REAL_TRACE_SET, load_traces

ROWS = (
    "uniform",
    "clear (one-shot, predicted scale)",
    "clear-live, no calibration",
    "clear-live (calibrates)",
    "clear-live, predictor calibrated on the scaled traces",
    "spent ceiling",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=float, default=4.0, help="length multiplier")
    ap.add_argument("--folds", type=int, default=2, help="folds over queries")
    ap.add_argument("--budgets", default="100,200,300,500", help="tokens/query (before x)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    k = args.factor
    base = load_traces(REAL_TRACE_SET)
    scaled = base.map_samples(lambda ss: [{**s, "tokens": round(s["tokens"] * k)} for s in ss])
    folds = list(kfold_queries(base, args.folds, args.seed))
    predict = text_curve_predictor(uncertainty=True)
    curves = {
        i: (predict(base.subset(f), base.subset(s)), predict(scaled.subset(f), scaled.subset(s)))
        for i, (f, s) in enumerate(folds)
    }
    print(
        f"lengths x{k:g} the predictor's; {args.folds} folds of {base.n // args.folds} queries; "
        f"spent accounting, 16 slots\n"
    )
    budgets = [float(b) for b in args.budgets.split(",")]
    print("| tokens/query | " + " | ".join(f"{b * k:g}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    table: dict[str, list[str]] = {r: [] for r in ROWS}
    scales: list[str] = []
    for bq in budgets:
        acc = {r: np.zeros(base.n) for r in ROWS}
        fitted = []
        for i, (_, s) in enumerate(folds):
            wrong, right = curves[i]
            score = scaled.subset(s)
            budget = int(bq * k * score.n)
            worlds = sample_worlds(score, seed=args.seed)
            plans = {
                ROWS[0]: allocate(wrong, budget, "uniform").budgets,
                ROWS[1]: allocate(wrong, budget, "market").budgets,
            }
            for w in range(worlds.w):
                L, c = worlds.lengths[w], worlds.correct[w]
                for r, caps in plans.items():
                    acc[r][s] += simulate(OneShot(caps), L, c, budget).answered / worlds.w
                off = ClearLive(wrong, budget, LiveConfig(calibrate=False))
                acc[ROWS[2]][s] += simulate(off, L, c, budget).answered / worlds.w
                on = ClearLive(wrong, budget)
                acc[ROWS[3]][s] += simulate(on, L, c, budget).answered / worlds.w
                fitted.append(on.shift.scale)
                acc[ROWS[4]][s] += simulate(ClearLive(right, budget), L, c, budget).answered / (
                    worlds.w
                )
                acc[ROWS[5]][s] += spent_ceiling(L, c, budget) / worlds.w
        for r in ROWS:
            lo, hi = bootstrap_ci(acc[r], 1000, args.seed)
            table[r].append(f"{100 * acc[r].mean():.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
        scales.append(f"{np.median(fitted):.2f} ({min(fitted):.2f}–{max(fitted):.2f})")
    for r in ROWS:
        print(f"| {r} | " + " | ".join(table[r]) + " |")
    print("| length scale clear-live fitted, median (range) | " + " | ".join(scales) + " |")


if __name__ == "__main__":
    main()
