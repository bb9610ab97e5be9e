"""``shadowprice demo``: the paper's setting on a bundled synthetic stream, in seconds.

A thin wrapper over :func:`shadowprice.demo.run_demo`: parse options, run, print the table
(or JSON) and the paths of the files written. ``--live`` additionally runs a small batch on a
real engine through :func:`shadowprice.engine.live_demo`.
"""
# ruff: noqa: B008  (typer declares options as call defaults)

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from . import app
from ._errors import fail


def _parse_budgets(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"--budgets must be comma-separated whole numbers of tokens, got {text!r}")
    if not vals or any(v <= 0 for v in vals):
        fail(f"--budgets must be positive whole numbers of tokens, got {text!r}")
    return vals


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("shadowprice-demo"), "--out",
                             help="folder for demo.json and demo.png"),
    budgets: str | None = typer.Option(
        None, "--budgets", help="average tokens per query, comma-separated "
        "(default 100,200,300,500,1000,1500)"),
    live: bool = typer.Option(False, "--live",
                              help="also run a small batch on a real engine (slow)"),
    fmt: str = typer.Option("text", "--format", help="text or json"),
    no_plot: bool = typer.Option(False, "--no-plot", help="skip the PNG"),
) -> None:
    """CLEAR vs uniform vs oracle on a bundled 500-query SYNTHETIC Balanced stream."""
    from shadowprice.demo import DEFAULT_BUDGETS, run_demo

    if fmt not in ("text", "json"):
        fail(f"unknown --format {fmt!r}; choose text or json")
    chosen = _parse_budgets(budgets) or DEFAULT_BUDGETS
    try:
        result = run_demo(out, budgets=chosen, plot=not no_plot)
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}")
    payload: dict[str, Any] = result.to_json()
    if fmt == "text":
        _print_table(result.table(), result.description, result.seconds)
        print(f"wrote {result.json_path}")
        if result.png_path is not None:
            print(f"wrote {result.png_path}")
    if live:
        try:
            from shadowprice.engine import live_demo
        except ImportError as exc:
            fail(f"--live needs the execution engine (shadowprice.engine), which failed to "
                 f"import: {exc}")
        url = os.environ.get("SHADOWPRICE_LLAMA_URL") or None
        try:
            # In JSON mode the engine's progress goes to stderr so stdout stays one object.
            console = None
            if fmt == "json":
                from rich.console import Console
                console = Console(file=sys.stderr)
            payload["live"] = live_demo(url, out_dir=out / "live", console=console)
        except ImportError as exc:
            fail(f"--live: a package the live engine needs is missing ({exc}); see "
                 f"tools/engine.sh")
        except (RuntimeError, OSError) as exc:
            fail(f"--live failed: {exc}")
    if fmt == "json":
        print(json.dumps(payload, default=str))


def _print_table(table: list[dict[str, Any]], description: str, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    t = Table(title="shadowprice demo: accuracy (%) by average budget", title_justify="left")
    for col in ("tokens/query", "CLEAR", "uniform", "CLEAR/uniform", "market (true)",
                "oracle (true)", "CLEAR abandoned %", "paper CLEAR", "paper uniform"):
        t.add_column(col, justify="right")
    for r in table:
        ratio = r.get("ratio")
        t.add_row(str(r["budget_per_query"]), pct(r.get("clear")), pct(r.get("uniform")),
                  "n/a (uniform ~0)" if ratio is None else f"{ratio:.2f}x",
                  pct(r.get("market")), pct(r.get("oracle")), pct(r.get("clear_abandoned")),
                  pct(r.get("paper_clear")), pct(r.get("paper_uniform")))
    console = Console(width=140)
    console.print(t)
    console.print(f"{description}. Paper columns: its Balanced stream on Qwen2.5-Math-7B "
                  f"(other model, other accuracy level). {seconds:.1f} s.", highlight=False)
