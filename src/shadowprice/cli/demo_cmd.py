"""``shadowprice demo``: the paper's setting on the bundled real traces, in seconds.

A thin wrapper over :func:`shadowprice.evaluate.demo.run_demo`: parse options, run, print
the table (or JSON) and the paths of the files written. ``--setting synthetic`` runs the
bundled synthetic Balanced stream instead (scored on its known true curves). ``--live`` also
runs a small batch on a real engine (``--endpoint URL``, default ``$SHADOWPRICE_LLAMA_URL``
or the bundled llama.cpp server) through :func:`shadowprice.engine.live_demo`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from ._errors import fail, guarded
from .app import app
from .files import check_outputs
from .options import check_format, output, output_format


def _parse_budgets(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"--per-query must be comma-separated whole numbers of tokens, got {text!r}")
    if not vals or any(v <= 0 for v in vals):
        fail(f"--per-query must be positive whole numbers of tokens, got {text!r}")
    return vals


@app.command("demo")
@guarded
def demo_command(
    out: Path = output(
        "folder for demo.json and demo.png", "--out", default=Path("shadowprice-demo")
    ),
    budgets: str | None = typer.Option(
        None,
        "--per-query",
        "--budgets",
        help="average tokens per query, comma-separated (default 100,200,300,500,1000,1500)",
        show_default=False,
    ),
    live: bool = typer.Option(
        False, "--live", help="also run a small batch on a real engine (slow)"
    ),
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        help="with --live: OpenAI-compatible URL (default $SHADOWPRICE_LLAMA_URL, else the "
        "bundled llama.cpp server is started)",
        show_default=False,
    ),
    fmt: str = output_format("output format: text or json"),
    no_plot: bool = typer.Option(False, "--no-plot", help="skip the PNG"),
    setting: str = typer.Option(
        "real",
        "--setting",
        help="real (bundled real traces, held out) or synthetic "
        "(bundled 500-query synthetic Balanced stream, true curves)",
    ),
) -> None:
    """CLEAR vs uniform vs the hindsight oracle on the bundled REAL traces (held out)."""
    from shadowprice.evaluate.demo import DEFAULT_BUDGETS, default_setting, run_demo

    fmt = check_format(fmt)
    check_outputs([("--output", out)], [], directory=True)
    if setting not in ("real", "synthetic"):
        fail(f"unknown --setting {setting!r}; choose real or synthetic")
    chosen = _parse_budgets(budgets) or DEFAULT_BUDGETS
    try:
        result = run_demo(out, budgets=chosen, plot=not no_plot, setting=default_setting(setting))
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}")
    payload: dict[str, Any] = result.to_json()
    if fmt == "text":
        _print_table(result, result.seconds)
        print(f"wrote {result.json_path}")
        if result.png_path is not None:
            print(f"wrote {result.png_path}")
    if live:
        try:
            from shadowprice.engine import live_demo
        except ImportError as exc:
            fail(
                f"--live needs the execution engine (shadowprice.engine), which failed to "
                f"import: {exc}"
            )
        url = endpoint or os.environ.get("SHADOWPRICE_LLAMA_URL") or None
        try:
            # In JSON mode the engine's progress goes to stderr so stdout stays one object.
            console = None
            if fmt == "json":
                from rich.console import Console

                console = Console(file=sys.stderr)
            payload["live"] = live_demo(url, out_dir=out / "live", console=console)
        except ImportError as exc:
            fail(f"--live: a package the live engine needs is missing ({exc}); see tools/engine.sh")
        except (RuntimeError, OSError) as exc:
            fail(f"--live failed: {exc}")
    if fmt == "json":
        print(json.dumps(payload, default=str))


def _print_table(result: Any, seconds: float) -> None:
    """Rich table: accuracy per policy, CLEAR / uniform, CLEAR abandonment, paper columns."""
    from rich.console import Console
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    labels = dict.fromkeys((r["policy"], r["label"]) for r in result.rows)
    t = Table(
        title=f"shadowprice demo ({result.setting}): accuracy (%) by average budget",
        title_justify="left",
    )
    t.add_column("tokens/query", justify="right")
    for _, label in labels:
        t.add_column(label, justify="right")
    for col in ("CLEAR/uniform", "CLEAR abandoned %", "paper CLEAR", "paper uniform"):
        t.add_column(col, justify="right")
    for r in result.table():
        ratio = r.get("ratio")
        t.add_row(
            str(r["budget_per_query"]),
            *(pct(r.get(key)) for key, _ in labels),
            "n/a (uniform ~0)" if ratio is None else f"{ratio:.2f}x",
            pct(r.get("clear_abandoned")),
            pct(r.get("paper_clear")),
            pct(r.get("paper_uniform")),
        )
    console = Console(width=160)
    console.print(t)
    console.print(
        f"{result.description}. Paper columns: its Balanced stream on "
        f"Qwen2.5-Math-7B (other queries, other accuracy level). {seconds:.1f} s.",
        highlight=False,
    )
