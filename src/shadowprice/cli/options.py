"""One vocabulary for every command: the options they share, spelled and explained once.

- ``-o/--output``: where results go (``--out`` kept as an alias where it was the name);
- ``--format text|json``: how the summary is printed (``table`` kept as an alias of text);
- ``--budget TOTAL`` and ``--per-query AVG``: total tokens, or the average per query.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from ..limits import MAX_BUDGET, check_budget
from ._errors import fail

FORMATS = ("text", "json")


def output(help: str, *aliases: str, default: Path | None = None) -> Any:
    """``-o/--output PATH`` (plus ``aliases``, e.g. ``--out``)."""
    return typer.Option(default, "-o", "--output", *aliases, help=help)


def output_format(help: str = "summary format: text or json") -> Any:
    """``--format text|json``."""
    return typer.Option("text", "--format", help=help)


def check_format(fmt: str) -> str:
    """The chosen format (``table`` is an alias of ``text``), or exit 2."""
    fmt = {"table": "text"}.get(fmt, fmt)
    if fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; choose text or json")
    return fmt


def budget_option() -> Any:
    """``--budget TOTAL``."""
    return typer.Option(None, "--budget", help="total tokens for all queries", show_default=False)


def per_query_option() -> Any:
    """``--per-query AVG``."""
    return typer.Option(
        None,
        "--per-query",
        help="average tokens per query (total = AVG x queries, rounded down)",
        show_default=False,
    )


def total_budget(budget: int | None, per_query: float | None, n: int) -> int:
    """The total budget from exactly one of ``--budget`` and ``--per-query``, or exit 2."""
    if (budget is None) == (per_query is None):
        fail("give exactly one of --budget TOTAL and --per-query AVG")
    if budget is not None:
        try:
            return check_budget(budget, "--budget")
        except ValueError as exc:
            fail(str(exc))
    assert per_query is not None
    if not (math.isfinite(per_query) and per_query > 0):
        fail(f"--per-query must be a positive number of tokens, got {per_query}")
    product = per_query * n
    if not math.isfinite(product) or product > 10 * MAX_BUDGET:
        fail(
            f"--per-query {per_query:g} x {n} queries is out of range: give 1 to "
            f"{MAX_BUDGET:.0e} tokens in total"
        )
    total = math.floor(product)
    if total < 1:
        fail(f"--per-query {per_query:g} x {n} queries is less than one token")
    try:
        return check_budget(total, f"--per-query {per_query:g} x {n} queries")
    except ValueError as exc:
        fail(str(exc))


def choices_help(what: str, names: Any) -> str:
    """Help text that lists an option's choices."""
    return f"{what}: one of {', '.join(names)}"
