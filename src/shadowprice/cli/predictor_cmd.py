"""``shadowprice predictor fit|predict``: train and apply the text -> threshold model."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import typer

from ._errors import fail, guarded
from .app import app
from .files import check_outputs, write_atomic
from .options import check_format, output, output_format
from .queries import read_query_file

predictor_app = typer.Typer(
    help="Predict each query's emergence threshold from its text.", no_args_is_help=True
)
app.add_typer(predictor_app, name="predictor")

#: What a saved predictor folder holds (see ThresholdPredictor.save).
_SAVED = {"model.joblib", "metadata.json"}


def _save(model: object, out: Path) -> None:
    """Save into ``out`` atomically: a new folder, or one that holds only a saved predictor."""
    if out.exists():
        extra = sorted(p.name for p in out.iterdir() if p.name not in _SAVED)
        if extra:
            fail(
                f"--output {out} is a folder with other files ({', '.join(extra[:3])}); give a "
                f"new folder or one that holds only a saved predictor"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save(tmp)  # type: ignore[attr-defined]
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():  # each file replaced by a rename: never half-written
            f.replace(out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@predictor_app.command("fit")
@guarded
def fit_cmd(
    data: Path | None = typer.Argument(
        None,
        help="JSONL or CSV: question (or text) and target (threshold in tokens)",
        show_default=False,
    ),
    out: Path = output("folder to save the model in (model.joblib, metadata.json)", "--out"),
    bundled: bool = typer.Option(
        False,
        "--bundled",
        help="train the default on the bundled data: text -> reference-solution length on the "
        "problem sets, calibrated on the traced thresholds",
    ),
    target: str = typer.Option("target", "--target", help="field holding the threshold"),
    alpha: float = typer.Option(3.0, "--alpha", help="ridge penalty (> 0)"),
    coverage: float = typer.Option(
        0.8, "--coverage", help="nominal coverage of the reported interval, in (0, 1)"
    ),
    fmt: str = output_format(),
) -> None:
    """Train a threshold predictor and save it (model.joblib + metadata.json)."""
    from shadowprice.predict import ThresholdPredictor, fit_default

    fmt = check_format(fmt)
    if out is None:
        fail("give --output FOLDER to save the model in")
    if bundled == (data is not None):
        fail("give either a DATA file or --bundled (not both, not neither)")
    check_outputs([("--output", out)], [data], directory=True)
    if bundled:
        model = fit_default(alpha=alpha, coverage=coverage)
    else:
        assert data is not None
        qf = read_query_file(data)
        texts = qf.texts("the predictor learns from each row's question")
        ys = qf.positive(target, "the threshold to learn, in tokens")
        model = ThresholdPredictor(alpha=alpha, coverage=coverage, cv=max(2, min(5, qf.n))).fit(
            texts, ys, description={"file": str(data), "target": target}
        )
    _save(model, out)
    m = model.metadata_
    cal = m.get("calibrated_on") or {}
    rho = cal.get("cv_spearman", m["cv_spearman"])
    if fmt == "json":
        typer.echo(
            json.dumps(
                {
                    "output": str(out),
                    "n_train": m["n_train"],
                    "cv_spearman": rho,
                    "sigma": model.sigma_,
                }
            )
        )
    else:
        typer.echo(
            f"saved {out} (n_train={m['n_train']}, cross-validated Spearman {rho:.3f}, "
            f"log-sigma {model.sigma_:.3f})"
        )


@predictor_app.command("predict")
@guarded
def predict_cmd(
    model: str = typer.Argument(
        ..., help="folder written by 'predictor fit', or 'default' (bundled)", show_default=False
    ),
    queries: str = typer.Argument(
        ..., help="JSONL or CSV with id and question (or text); '-' = stdin", show_default=False
    ),
    out: Path | None = output("write JSONL here (default stdout)", "--out"),
    coverage: float | None = typer.Option(
        None, "--coverage", help="interval coverage (default: the model's)", show_default=False
    ),
    fmt: str = output_format("summary format (with --output): text or json"),
) -> None:
    """Write id, tau, tau_low, tau_high (tokens) and sigma (log scale) per query."""
    from shadowprice.predict import load_predictor

    fmt = check_format(fmt)
    check_outputs([("--output", out)], [queries, model if model != "default" else None])
    qf = read_query_file(queries)
    ids, texts = qf.ids(), qf.texts("the threshold is predicted from the question")
    try:
        pred = load_predictor(model)
    except (OSError, TypeError) as exc:
        fail(f"predictor {model}: cannot load ({exc})")
    p = pred.predict_distribution(texts, coverage=coverage)
    lines = "".join(
        json.dumps(
            {
                "id": i,
                "tau": round(float(a), 1),
                "tau_low": round(float(lo), 1),
                "tau_high": round(float(hi), 1),
                "sigma": round(float(s), 4),
            }
        )
        + "\n"
        for i, a, lo, hi, s in zip(ids, p.median, p.lower, p.upper, p.sigma, strict=True)
    )
    if out is None:
        sys.stdout.write(lines)
    elif fmt == "json":
        write_atomic(out, lines)
        typer.echo(json.dumps({"output": str(out), "queries": qf.n}))
    else:
        write_atomic(out, lines)
        typer.echo(f"wrote {qf.n} predictions to {out}")
