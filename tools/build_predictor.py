"""Build the bundled default threshold predictor (src/shadowprice/data/predictor/).

    .venv/bin/python tools/build_predictor.py

Trains :func:`shadowprice.predict.fit_default` (text -> reference-solution length on the
bundled problem sets, calibrated on the traced thresholds of the bundled real trace set) and
saves it with its metadata. Re-run it whenever ``FORMAT_VERSION`` changes, so the package
ships a model that loads without retraining. ~15 s; the model is ~1.6 MB.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from shadowprice.predict import ThresholdPredictor, fit_default

OUT = Path(__file__).resolve().parents[1] / "src" / "shadowprice" / "data" / "predictor"

if __name__ == "__main__":
    model = fit_default()
    model.save(OUT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped file must load cleanly
        ThresholdPredictor.load(OUT)
    size = sum(f.stat().st_size for f in OUT.iterdir()) / 1e6
    print(f"saved {OUT} ({size:.2f} MB), sigma={model.sigma_:.3f}")
