"""``shadowprice allocate``: split one token budget over the queries of a file.

Per-query budgets go to ``-o FILE`` (written atomically) or stdout as JSON lines; the summary
goes to stderr, or to stdout when ``-o`` is given, so that ``shadowprice allocate q.jsonl
--budget 9000 > budgets.jsonl`` keeps the data stream clean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import typer

from ._errors import fail, guarded, note
from .app import app
from .files import check_outputs, write_atomic
from .options import (
    budget_option,
    check_format,
    choices_help,
    output,
    output_format,
    per_query_option,
    total_budget,
)
from .queries import FAMILIES, query_curves, read_query_file

_POLICIES = ("clear", "market", "oracle", "uniform", "proportional", "greedy", "length")


@app.command("allocate")
@guarded
def allocate_command(
    queries: str = typer.Argument(
        ...,
        help="JSONL or CSV (by suffix; '-' = JSONL on stdin): id plus the family's parameters "
        "(surge: tau; gamma: tau, beta?, p?; logistic: mu, scale, p?) or a question to predict "
        "them from; optional floor, min_tokens, max_tokens, alpha, beta",
        show_default=False,
    ),
    budget: int | None = budget_option(),
    per_query: float | None = per_query_option(),
    policy: str = typer.Option("clear", "--policy", help=choices_help("policy", _POLICIES)),
    family: str = typer.Option("surge", "--family", help=choices_help("curve family", FAMILIES)),
    alpha: float = typer.Option(1.5, "--alpha", help="surge gain (unless the file has alpha)"),
    beta: float = typer.Option(
        0.005, "--beta", help="surge decay / gamma rate in 1/tokens (unless in the file)"
    ),
    granularity: int = typer.Option(1, "--granularity", help="budgets are multiples of this"),
    min_tokens: int | None = typer.Option(
        None, "--min-tokens", help="smallest budget of a funded query", show_default=False
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="cap per query", show_default=False
    ),
    out: Path | None = output("write budgets here (default stdout)"),
    fmt: str = output_format(),
    predictor: str | None = typer.Option(
        None,
        "--predictor",
        help="threshold predictor folder (from `predictor fit`) or 'default' (bundled); "
        "QUERIES then needs only id and question",
        show_default=False,
    ),
    point: bool = typer.Option(
        False, "--point", help="with a predictor: price the point estimate, not the expected curve"
    ),
) -> None:
    """Allocate a token budget over QUERIES; one JSON line per query: id, budget, funded.

    Exit status: 0 success, 2 bad input (including limits no allocation can meet).
    """
    from shadowprice import allocate

    fmt = check_format(fmt)
    check_outputs([("--output", out)], [queries])
    qf = read_query_file(queries)
    ids = qf.ids()
    total = total_budget(budget, per_query, qf.n)
    limits = qf.limits()
    qc = query_curves(
        qf, family=family, policy=policy, predictor=predictor, point=point, alpha=alpha, beta=beta
    )
    if qc.source == "default predictor":
        note(
            f"{qf.name} has questions but no thresholds: pricing them with the bundled default "
            f"predictor (trained on Qwen2.5-Math solution lengths); train one for your model "
            f"with `shadowprice predictor fit`"
        )
    grid = getattr(qc.curves, "grid", None)
    if grid is not None and granularity > 1:
        grid = grid[grid % granularity == 0]
    result = allocate(
        qc.curves,
        total,
        policy,
        granularity=granularity,
        grid=grid,
        min_tokens=_merged(limits.get("min_tokens"), min_tokens, 0),
        max_tokens=_merged(limits.get("max_tokens"), max_tokens, np.inf),
        floor=_merged(limits.get("floor"), None, 0),
    )
    if not result.success:
        fail(result.message)
    data = "".join(json.dumps(rec) + "\n" for rec in _records(ids, result))
    if out is None:
        sys.stdout.write(data)
        summary_stream: TextIO = sys.stderr
    else:
        write_atomic(out, data)
        summary_stream = sys.stdout
    summary = {
        **result.summary(),
        "per_query": total / qf.n,
        "family": qc.family,
        "curves": qc.source,
    }
    if out is not None:
        summary["output"] = str(out)
    if fmt == "json":
        summary_stream.write(json.dumps(summary) + "\n")
    else:
        _print_summary(summary, summary_stream)
    summary_stream.flush()


def _merged(column: Any, cli: float | None, fill: float) -> Any:
    """Per-query column where a row gives it, else the command-line limit (else ``fill``)."""
    if column is None:
        return cli
    return np.where(np.isnan(column), fill if cli is None else cli, column)


def _records(ids: list[str], result: Any) -> list[dict[str, Any]]:
    budgets = result.budgets.tolist()
    funded = result.funded.tolist()
    samples = None if result.samples is None else result.samples.tolist()
    out = []
    for i, qid in enumerate(ids):
        rec: dict[str, Any] = {"id": qid, "budget": budgets[i], "funded": funded[i]}
        if samples is not None:
            rec["samples"] = samples[i]
        out.append(rec)
    return out


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
        ("policy", f"{s['policy']} ({s['family']} curves from {s['curves']})"),
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
