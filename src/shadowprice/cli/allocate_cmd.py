"""``shadowprice allocate``: split one token budget over the queries of a file.

Parsing lives in :mod:`shadowprice.queries` and solving in :func:`shadowprice.allocate`; this
module only maps options to those calls and prints. Per-query budgets go to ``-o FILE`` or
stdout as JSON lines; the summary goes to stderr, or to stdout when ``-o`` is given, so that
``shadowprice allocate q.jsonl --budget 9000 > budgets.jsonl`` keeps the data stream clean.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import typer

from . import app
from ._errors import fail


@app.command("allocate")
def allocate_command(
    queries: str = typer.Argument(
        ...,
        help="JSONL or CSV (by suffix; '-' = JSONL on stdin) with id and the family's "
        "parameters (surge: tau; gamma: tau, beta?, p?; logistic: mu, scale, p?), optional "
        "floor, min_tokens, max_tokens, alpha, beta",
    ),
    budget: int | None = typer.Option(None, "--budget", help="total tokens for all queries"),
    per_query: float | None = typer.Option(
        None, "--per-query", help="average tokens per query (total = AVG x N, rounded down)"
    ),
    policy: str = typer.Option("clear", "--policy", help="allocation policy"),
    family: str = typer.Option("surge", "--family", help="curve family: surge, gamma, logistic"),
    alpha: float = typer.Option(1.5, "--alpha", help="surge gain (unless the file has alpha)"),
    beta: float = typer.Option(
        0.005, "--beta", help="surge decay / gamma rate in 1/tokens (unless in the file)"
    ),
    granularity: int = typer.Option(1, "--granularity", help="budgets are multiples of this"),
    min_tokens: int | None = typer.Option(
        None, "--min-tokens", help="smallest budget of a funded query"
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens", help="cap per query"),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="write budgets here (default stdout)"
    ),
    fmt: str = typer.Option("text", "--format", help="summary format: text or json"),
    predictor: str | None = typer.Option(
        None,
        "--predictor",
        help="threshold predictor directory (from `shadowprice predictor fit`) or 'default' "
        "(the bundled one); QUERIES then needs only id and question/text",
    ),
    point: bool = typer.Option(
        False,
        "--point",
        help="with --predictor: allocate on the point estimate of tau "
        "instead of the expected curve under the predictor's uncertainty",
    ),
) -> None:
    """Allocate a token budget over QUERIES; one JSON line per query: id, budget, funded."""
    from shadowprice import POLICIES, allocate
    from shadowprice.queries import FAMILIES, QueryFileError, read_queries, read_query_texts

    if (budget is None) == (per_query is None):
        fail("give exactly one of --budget TOTAL and --per-query AVG")
    if policy not in POLICIES:
        fail(f"unknown --policy {policy!r}; choose one of {', '.join(POLICIES)}")
    if family not in FAMILIES:
        fail(f"unknown --family {family!r}; choose one of {', '.join(FAMILIES)}")
    if fmt not in ("text", "json"):
        fail(f"unknown --format {fmt!r}; choose text or json")
    for name, val in (("--alpha", alpha), ("--beta", beta)):
        if not (math.isfinite(val) and val > 0):
            fail(f"{name} must be a finite positive number, got {val}")
    if granularity < 1:
        fail(f"--granularity must be a positive integer, got {granularity}")
    for name, lim in (("--min-tokens", min_tokens), ("--max-tokens", max_tokens)):
        if lim is not None and lim < 0:
            fail(f"{name} must be >= 0, got {lim}")
    if budget is not None and budget <= 0:
        fail(f"--budget must be a positive number of tokens, got {budget}")
    if per_query is not None and not (math.isfinite(per_query) and per_query > 0):
        fail(f"--per-query must be a positive number of tokens, got {per_query}")

    grid = None
    try:
        if predictor is None:
            ids, curves, limits = read_queries(queries, family, alpha=alpha, beta=beta)
        else:
            if family == "logistic":
                fail("--predictor predicts thresholds for the surge or gamma family only")
            ids, texts, limits = read_query_texts(queries)
            model = _load_predictor(predictor)
            curves = model.predict_curves(
                texts, family=family, uncertainty=not point, alpha=alpha, beta=beta
            )
            grid = getattr(curves, "grid", None)
    except QueryFileError as exc:
        fail(str(exc))
    total = budget if budget is not None else math.floor(per_query * len(ids))  # type: ignore[operator]
    if total <= 0:
        fail(f"--per-query {per_query} x {len(ids)} queries is less than one token")

    # Per-query columns win; rows without one fall back to the command-line limit.
    def merged(key: str, cli: int | None) -> Any:
        col = limits.get(key)
        if col is None:
            return cli
        fill = math.inf if key == "max_tokens" and cli is None else (cli or 0)
        return np.where(np.isnan(col), fill, col)

    try:
        if grid is not None and granularity > 1:
            grid = grid[grid % granularity == 0]
        result = allocate(
            curves,
            total,
            policy,
            granularity=granularity,
            grid=grid,
            min_tokens=merged("min_tokens", min_tokens),
            max_tokens=merged("max_tokens", max_tokens),
            floor=merged("floor", None),
        )
    except ValueError as exc:
        fail(str(exc))

    budgets = result.budgets.tolist()
    funded = result.funded.tolist()
    samples = None if result.samples is None else result.samples.tolist()
    lines = []
    for i, qid in enumerate(ids):
        rec: dict[str, Any] = {"id": qid, "budget": budgets[i], "funded": funded[i]}
        if samples is not None:
            rec["samples"] = samples[i]
        lines.append(json.dumps(rec))
    data = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(data)
        summary_stream: TextIO = sys.stderr
    else:
        try:
            output.write_text(data, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        summary_stream = sys.stdout

    summary = result.summary()
    summary["per_query"] = total / len(ids)
    summary["family"] = family
    if output is not None:
        summary["output"] = str(output)
    if fmt == "json":
        summary_stream.write(json.dumps(summary) + "\n")
    else:
        _print_summary(summary, summary_stream)
    summary_stream.flush()


def _load_predictor(path: str) -> Any:
    """The bundled default predictor or one saved by ``shadowprice predictor fit``."""
    from shadowprice.predict import load_predictor

    try:
        return load_predictor(path)
    except (OSError, ValueError) as exc:
        fail(f"--predictor {path}: cannot load ({exc})")


def _print_summary(s: dict[str, Any], stream: TextIO) -> None:
    """A small two-column rich table (plain aligned text when the stream is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    price = (
        "none (this policy sets no price)"
        if s["price"] is None
        else f"{s['price']:.6g} utility/token"
    )
    n = s["queries"]
    rows = [
        ("policy", f"{s['policy']} ({s['family']} curves)"),
        ("queries", str(n)),
        ("budget", f"{s['budget']} tokens ({s['per_query']:.6g} per query)"),
        ("price", price),
        ("funded", f"{s['funded']} ({100 * s['funded'] / n:.1f}%)"),
        ("abandoned", f"{s['abandoned']} ({100 * s['abandoned'] / n:.1f}%)"),
        ("expected utility", f"{s['expected_utility']:.6g}"),
        ("spent", f"{s['spent']} tokens"),
        ("leftover", f"{s['leftover']} tokens"),
        ("status", str(s["status"])),
        ("message", s["message"]),
    ]
    if "output" in s:
        rows.append(("output", s["output"]))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    Console(file=stream, highlight=False, soft_wrap=False, width=100).print(table)
