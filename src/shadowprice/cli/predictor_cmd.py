"""``shadowprice predictor fit|predict``: train and apply the text -> threshold model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from . import app
from ._errors import fail

predictor_app = typer.Typer(
    help="Predict each query's emergence threshold from its text.", no_args_is_help=True
)
app.add_typer(predictor_app, name="predictor")

_TEXT_KEYS = ("text", "question", "prompt")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL (one object a line) or CSV file; errors name the line."""
    if not path.is_file():
        fail(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(path, dtype={"id": str})
        except (ValueError, pd.errors.ParserError) as exc:
            fail(f"{path}: cannot read CSV: {exc}")
        return [dict(r) for r in df.to_dict(orient="records")]
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                fail(f"{path}:{i}: not valid JSON ({exc.msg})")
            if not isinstance(obj, dict):
                fail(f"{path}:{i}: expected a JSON object")
            rows.append(obj)
    if not rows:
        fail(f"{path}: no rows")
    return rows


def _text(row: dict[str, Any], where: str) -> str:
    for k in _TEXT_KEYS:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return v
    fail(f"{where}: needs a non-empty 'text' (or 'question') field")


@predictor_app.command("fit")
def fit_cmd(
    data: Path | None = typer.Argument(
        None, help="JSONL or CSV with text (or question) and target (threshold in tokens)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to save the model in."),
    bundled: bool = typer.Option(
        False,
        "--bundled",
        help="Train the default on the bundled "
        "data: text -> reference-solution length on the problem "
        "sets, calibrated on the traced thresholds.",
    ),
    target: str = typer.Option("target", help="Column holding the threshold (tokens)."),
    alpha: float = typer.Option(3.0, help="Ridge penalty."),
    coverage: float = typer.Option(0.8, help="Nominal coverage of the reported interval."),
) -> None:
    """Train a threshold predictor and save it (model.joblib + metadata.json)."""
    from shadowprice.predict import ThresholdPredictor, fit_default

    if not 0 < coverage < 1:
        fail(f"--coverage must be in (0, 1), got {coverage}")
    if alpha <= 0:
        fail(f"--alpha must be positive, got {alpha}")
    if bundled == (data is not None):
        fail("give either a DATA file or --bundled (not both, not neither)")
    if bundled:
        model = fit_default(alpha=alpha, coverage=coverage)
    else:
        assert data is not None
        rows = _read_rows(data)
        texts, ys = [], []
        for i, r in enumerate(rows, 1):
            where = f"{data}:{i}"
            texts.append(_text(r, where))
            v = r.get(target)
            try:
                y = float(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                fail(f"{where}: '{target}' must be a number of tokens, got {v!r}")
            if not y > 0 or y == float("inf"):
                fail(f"{where}: '{target}' must be a positive number of tokens, got {v!r}")
            ys.append(y)
        cv = min(5, len(texts))
        if cv < 2:
            fail(f"{data}: need at least 2 rows to train, got {len(texts)}")
        model = ThresholdPredictor(alpha=alpha, coverage=coverage, cv=cv).fit(
            texts, ys, description={"file": str(data), "target": target}
        )
    model.save(out)
    m = model.metadata_
    cal = m.get("calibrated_on") or {}
    rho = cal.get("cv_spearman", m["cv_spearman"])
    typer.echo(
        f"saved {out} (n_train={m['n_train']}, cross-validated Spearman {rho:.3f}, "
        f"log-sigma {model.sigma_:.3f})"
    )


@predictor_app.command("predict")
def predict_cmd(
    model: Path = typer.Argument(
        ..., help="Directory written by 'predictor fit', or 'default' for the bundled model."
    ),
    queries: Path = typer.Argument(..., help="JSONL or CSV with id and text (or question)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write JSONL here (default stdout)."),
    coverage: float | None = typer.Option(None, help="Interval coverage (default: the model's)."),
) -> None:
    """Write id, tau, tau_low, tau_high (tokens) and sigma (log scale) per query."""
    from shadowprice.predict import default_predictor, load_predictor

    try:
        pred = default_predictor() if str(model) == "default" else load_predictor(model)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        fail(str(exc))
    if coverage is not None and not 0 < coverage < 1:
        fail(f"--coverage must be in (0, 1), got {coverage}")
    rows = _read_rows(queries)
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    texts = [_text(r, f"{queries}:{i}") for i, r in enumerate(rows, 1)]
    p = pred.predict_distribution(texts, coverage=coverage)
    lines = [
        json.dumps(
            {
                "id": i,
                "tau": round(float(a), 1),
                "tau_low": round(float(lo), 1),
                "tau_high": round(float(hi), 1),
                "sigma": round(float(s), 4),
            }
        )
        for i, a, lo, hi, s in zip(ids, p.median, p.lower, p.upper, p.sigma, strict=True)
    ]
    text = "\n".join(lines) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {len(lines)} predictions to {out}")
