"""``shadowprice evaluate``: score allocation policies on held-out traces."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from . import app
from ._errors import fail

#: Samples per query drawn for ``stream:NAME:N`` trace specs.
STREAM_SAMPLES = 8


def load_trace_spec(spec: str, seed: int) -> Any:
    """TRACES: a file path, ``bundled:NAME`` or ``stream:NAME:N`` (synthetic, 8 samples)."""
    from shadowprice.traces import TraceValidationError, load_traces, read_traces

    if spec.startswith("bundled:"):
        try:
            return load_traces(spec.split(":", 1)[1])
        except KeyError as exc:
            fail(str(exc.args[0]) if exc.args else str(exc))
    if spec.startswith("stream:"):
        parts = spec.split(":")
        if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
            fail(f"stream spec must be stream:NAME:N (e.g. stream:balanced:2000), got {spec!r}")
        try:
            from shadowprice.evaluate.streams import make_stream
        except ImportError:
            fail("synthetic streams are not available in this build (evaluate.streams)")
        try:
            stream = make_stream(parts[1], int(parts[2]), seed)
        except (KeyError, ValueError) as exc:
            fail(str(exc))
        # Samples from a seed of their own: the stream's draws, the samples and the split must
        # not share random numbers.
        import numpy as np

        sample_seed = int(np.random.SeedSequence([seed, 0x5A]).generate_state(1)[0])
        return stream.sample_traces(STREAM_SAMPLES, sample_seed)
    path = Path(spec)
    if not path.exists():
        fail(f"{spec}: no such file (or use bundled:NAME / stream:NAME:N)")
    try:
        return read_traces(path)
    except (TraceValidationError, ValueError) as exc:
        fail(str(exc))


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        fail(f"--{what} is empty")
    return items


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@app.command("evaluate")
def evaluate_command(
    traces: str = typer.Argument(..., help="trace file, bundled:NAME or stream:NAME:N"),
    budgets: str = typer.Option(
        "100,150,200,300,500,1000,1500",
        "--budgets",
        help="average tokens per query, comma-separated",
    ),
    policies: str = typer.Option(
        "uniform,clear,oracle", "--policies", help="comma-separated evaluation policies"
    ),
    split: str = typer.Option("half", "--split", help="half | queries | none"),
    seed: int = typer.Option(0, "--seed"),
    cost: str = typer.Option("allotted", "--cost", help="allotted (caps) | spent (generated)"),
    repeats: int = typer.Option(1, "--repeats", min=1, help="random splits averaged"),
    vote: str = typer.Option("pass", "--vote", help="pass (verifier) | majority"),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="bootstrap resamples"),
    folds: int = typer.Option(5, "--folds", min=2, help="folds for --split queries"),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    predictor: str = typer.Option(
        "auto",
        "--predictor",
        help="with --split queries: text (cross-fitted text predictor, expected curves), "
        "text-point (its point estimate), none (the pool's curve for every unseen query), "
        "auto (text when the traces carry questions)",
    ),
) -> None:
    """Fit each policy on one part of TRACES, replay its caps on the other, print a table.

    Budgets are averages per query (total = budget x queries). 'oracle' is the hindsight
    ceiling (exact knapsack on the scoring data), not a runnable policy.
    """
    from shadowprice.evaluate import EVAL_POLICIES, evaluate

    try:
        bq = [float(b) for b in _parse_list(budgets, "budgets")]
    except ValueError:
        fail(f"--budgets must be comma-separated numbers, got {budgets!r}")
    if any(not (b > 0 and math.isfinite(b)) for b in bq):
        fail(f"--budgets must be positive, got {budgets!r}")
    pols = _parse_list(policies, "policies")
    bad = [p for p in pols if p not in EVAL_POLICIES]
    if bad:
        fail(f"unknown policies {', '.join(bad)}; choose from {', '.join(EVAL_POLICIES)}")
    for name, val, allowed in [
        ("split", split, ("half", "queries", "none")),
        ("cost", cost, ("allotted", "spent")),
        ("vote", vote, ("pass", "majority")),
        ("format", fmt, ("table", "json")),
    ]:
        if val not in allowed:
            fail(f"--{name} must be one of {', '.join(allowed)}, got {val!r}")
    if predictor not in ("auto", "text", "text-point", "none"):
        fail(f"--predictor must be one of auto, text, text-point, none, got {predictor!r}")
    ts = load_trace_spec(traces, seed)
    has_text = all(q for q in ts.questions())
    if predictor == "auto":
        predictor = "text" if has_text else "none"
    if predictor != "none" and split == "queries" and not has_text:
        fail(
            f"--predictor {predictor} needs question texts, and {traces} has queries without "
            f"one; use --predictor none"
        )
    curve_predictor = None
    if split == "queries" and predictor != "none":
        from shadowprice.evaluate.prediction import text_curve_predictor

        curve_predictor = text_curve_predictor(uncertainty=predictor == "text")
    try:
        df = evaluate(
            ts,
            bq,
            pols,
            split=split,  # type: ignore[arg-type]
            seed=seed,
            cost=cost,  # type: ignore[arg-type]
            repeats=repeats,
            vote=vote,  # type: ignore[arg-type]
            n_boot=n_boot,
            folds=folds,
            predictor=curve_predictor,
        )
    except ValueError as exc:
        fail(str(exc))
    if fmt == "json":
        results = [
            {
                "policy": r.policy,
                "label": r.label,
                "budget": float(r.budget),
                "accuracy": float(r.accuracy),
                "accuracy_ci": [float(r.accuracy_ci_low), float(r.accuracy_ci_high)],
                "tokens_allotted": float(r.tokens_allotted),
                "tokens_spent": float(r.tokens_spent),
                "abandoned": float(r.abandoned),
                "vs_uniform": _clean(r.vs_uniform),
                "vs_uniform_ci": [_clean(r.vs_uniform_ci_low), _clean(r.vs_uniform_ci_high)],
            }
            for r in df.itertuples()
        ]
        print(
            json.dumps(
                {
                    "traces": traces,
                    "queries": ts.n,
                    "split": split,
                    "seed": seed,
                    "predictor": predictor if split == "queries" else None,
                    "cost": cost,
                    "vote": vote,
                    "repeats": repeats,
                    "results": results,
                },
                indent=2,
            )
        )
        return
    print(
        f"{traces}: {ts.n} queries, split={split}, cost={cost}, vote={vote}, "
        f"repeats={repeats}, seed={seed}"
    )
    head = (
        f"{'budget':>7} {'policy':<14} {'accuracy':>8} {'95% CI':>15} {'vs unif':>8} "
        f"{'allotted':>9} {'spent':>8} {'abandon':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in df.itertuples():
        ci = f"[{r.accuracy_ci_low:.3f}, {r.accuracy_ci_high:.3f}]"
        vs = "" if math.isnan(r.vs_uniform) else f"{r.vs_uniform:+.3f}"
        print(
            f"{r.budget:>7g} {r.policy:<14} {r.accuracy:>8.3f} {ci:>15} {vs:>8} "
            f"{r.tokens_allotted:>9.1f} {r.tokens_spent:>8.1f} {r.abandoned:>7.1%}"
        )
    if "oracle" in pols:
        print("oracle = hindsight oracle (ceiling): exact DP on the scoring data itself.")
