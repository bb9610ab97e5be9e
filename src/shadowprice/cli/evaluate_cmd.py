"""``shadowprice evaluate``: score allocation policies on held-out traces."""

from __future__ import annotations

import json
import math
from typing import Any

import typer

from ._errors import fail, guarded
from .app import app
from .options import check_format, output_format

_SPLITS = ("half", "queries", "none")
_ACCOUNTING = ("allotted", "spent")
_VOTES = ("pass", "majority")
_PREDICTORS = ("auto", "text", "text-point", "none")
_ENGINES = ("sim", "http")


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        fail(f"{what} is empty")
    return items


def _parse_budgets(text: str) -> list[float]:
    try:
        values = [float(b) for b in _parse_list(text, "--per-query")]
    except ValueError:
        fail(f"--per-query must be comma-separated numbers of tokens, got {text!r}")
    return values


def _clean(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        fail(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@app.command("evaluate")
@guarded
def evaluate_command(
    traces: str = typer.Argument(
        ...,
        help="trace file (JSONL/CSV/Parquet), bundled:NAME or stream:NAME:N[:long]",
        show_default=False,
    ),
    per_query: str = typer.Option(
        "100,150,200,300,500,1000,1500",
        "--per-query",
        "--budgets",
        help="average tokens per query, comma-separated (total = AVG x queries)",
    ),
    policies: str = typer.Option(
        "uniform,clear,oracle",
        "--policies",
        help="comma-separated evaluation policies (see `shadowprice evaluate --list`)",
    ),
    split: str = typer.Option("half", "--split", help="held-out split: half, queries or none"),
    seed: int = typer.Option(0, "--seed", help="seeds splits, streams and bootstrap"),
    accounting: str = typer.Option(
        "allotted",
        "--accounting",
        "--cost",
        help="what the budget bounds: allotted (caps, the paper's) or spent (tokens generated)",
    ),
    repeats: int = typer.Option(1, "--repeats", min=1, help="random splits averaged"),
    concurrency: int = typer.Option(
        16,
        "--concurrency",
        min=1,
        help="requests in flight at once (spent accounting): the simulated engine's slots",
    ),
    engine: str = typer.Option(
        "sim",
        "--engine",
        help="what runs the policies under spent accounting: sim (the simulated engine) or "
        "http (a real OpenAI-compatible server replaying the held-out samples, the real "
        "client and journal; equal to sim at --concurrency 1)",
    ),
    vote: str = typer.Option("pass", "--vote", help="k samples: pass (verifier) or majority"),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="bootstrap resamples"),
    folds: int = typer.Option(5, "--folds", min=2, help="folds for --split queries"),
    fmt: str = output_format("output format: text (a table) or json"),
    predictor: str = typer.Option(
        "auto",
        "--predictor",
        help="with --split queries: text (cross-fitted text predictor, expected curves), "
        "text-point (its point estimate), none (the pool's curve for every unseen query), "
        "auto (text when the traces carry questions)",
    ),
    list_policies: bool = typer.Option(
        False, "--list", help="list the evaluation policies and exit"
    ),
) -> None:
    """Fit each policy on one part of TRACES, replay its caps on the other, print a table.

    Budgets are averages per query (total = budget x queries). 'oracle' is the hindsight
    ceiling (the best any allocation could do on the scoring data), not a runnable policy.
    Exit status: 0 success, 2 bad input.
    """
    from shadowprice.evaluate import EVAL_POLICIES, evaluate
    from shadowprice.evaluate.sources import load_trace_source

    if list_policies:
        for name, pol in EVAL_POLICIES.items():
            typer.echo(f"{name:<15} {pol.description}")
        return
    fmt = check_format(fmt)
    budgets = _parse_budgets(per_query)
    pols = _parse_list(policies, "--policies")
    _choice("split", split, _SPLITS)
    _choice("accounting", accounting, _ACCOUNTING)
    _choice("vote", vote, _VOTES)
    _choice("predictor", predictor, _PREDICTORS)
    _choice("engine", engine, _ENGINES)
    ts = load_trace_source(traces, seed)
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
    df = evaluate(
        ts,
        budgets,
        pols,
        split=split,  # type: ignore[arg-type]
        seed=seed,
        accounting=accounting,  # type: ignore[arg-type]
        repeats=repeats,
        vote=vote,  # type: ignore[arg-type]
        n_boot=n_boot,
        folds=folds,
        predictor=curve_predictor,
        concurrency=concurrency,
        engine=engine,
    )
    if fmt == "json":
        _print_json(df, traces, ts.n, split, seed, predictor, accounting, vote, repeats)
    else:
        _print_table(df, traces, ts.n, split, seed, accounting, vote, repeats, pols)


def _print_json(
    df: Any,
    traces: str,
    n: int,
    split: str,
    seed: int,
    predictor: str,
    accounting: str,
    vote: str,
    repeats: int,
) -> None:
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
    payload = {
        "traces": traces,
        "queries": n,
        "split": split,
        "seed": seed,
        "predictor": predictor if split == "queries" else None,
        "accounting": accounting,
        "cost": accounting,
        "vote": vote,
        "repeats": repeats,
        "results": results,
    }
    print(json.dumps(payload, indent=2))


def _print_table(
    df: Any,
    traces: str,
    n: int,
    split: str,
    seed: int,
    accounting: str,
    vote: str,
    repeats: int,
    pols: list[str],
) -> None:
    print(
        f"{traces}: {n} queries, split={split}, accounting={accounting}, vote={vote}, "
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
    from shadowprice.evaluate import EVAL_POLICIES

    for name in pols:
        if EVAL_POLICIES[name].hindsight:
            print(f"{name} = {EVAL_POLICIES[name].description}")
