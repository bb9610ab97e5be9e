"""Print the "Prediction from text" tables of docs/results.md (sections 1-3).

    .venv/bin/python tools/prediction_study.py            # ~1 min on 2 cores
    .venv/bin/python tools/prediction_study.py --family surge --no-signals

Sections: which signal ranks the traced thresholds (:func:`compare_signals`), the default
recipe's cross-fitted quality (:func:`crossfit_predictions` + :func:`interval_quality`), and
CLEAR with predicted vs traced thresholds vs uniform (:func:`crossfit_allocation`). Every
number is cross-fitted over the bundled real traces; see :mod:`shadowprice.evaluate.prediction`.
"""

from __future__ import annotations

import argparse

import pandas as pd

from shadowprice.evaluate.prediction import (
    compare_signals,
    crossfit_allocation,
    crossfit_predictions,
    interval_quality,
)


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--folds", type=int, default=5, help="folds over the traced queries")
    ap.add_argument("--seed", type=int, default=0, help="seeds folds and bootstraps")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--family", choices=("gamma", "surge"), default="gamma")
    ap.add_argument("--no-signals", action="store_true", help="skip the signal comparison")
    a = ap.parse_args(argv)
    pd.set_option("display.width", 160)
    if not a.no_signals:
        print("## signals (Spearman with traced tau, solved queries, cross-fitted)")
        print(compare_signals(folds=a.folds, seed=a.seed).to_string(index=False, float_format=_fmt))
        print()
    pred = crossfit_predictions(folds=a.folds, seed=a.seed)
    print("## default predictor, cross-fitted on traced queries")
    for k, v in interval_quality(pred).items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    print("\n## allocation, cross-fitted")
    alloc = crossfit_allocation(
        folds=a.folds, seed=a.seed, n_boot=a.n_boot, family=a.family, predictions=pred
    )
    print(alloc.to_string(index=False, float_format=_fmt))


if __name__ == "__main__":
    main()
