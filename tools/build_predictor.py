"""Build the bundled default threshold predictor (src/shadowprice/data/predictor/).

    .venv/bin/python tools/build_predictor.py

Trains :func:`shadowprice.predict.training.fit_default` (text -> reference-solution length on
the bundled problem sets, calibrated on the traced thresholds of qwen25-math-math100) and
saves it with its metadata. ~15 s; the model is ~1.6 MB.
"""

from __future__ import annotations

from pathlib import Path

from shadowprice.predict import fit_default

OUT = Path(__file__).resolve().parents[1] / "src" / "shadowprice" / "data" / "predictor"

if __name__ == "__main__":
    model = fit_default()
    model.save(OUT)
    size = sum(f.stat().st_size for f in OUT.iterdir()) / 1e6
    print(f"saved {OUT} ({size:.2f} MB), sigma={model.sigma_:.3f}")
