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


# -- what `run` and `collect` share: the endpoint, the prompt, the retries -----------------

TEMPLATE_HELP = (
    "user message with {question} where the query goes (default: reason step by step, final "
    "answer in \\boxed{})"
)


def endpoint_option() -> Any:
    """``--endpoint URL`` (required)."""
    return typer.Option(
        ..., "--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )


def model_option() -> Any:
    """``--model NAME`` (required)."""
    return typer.Option(..., "--model", help="model name sent to the endpoint")


def api_key_option() -> Any:
    """``--api-key`` (default ``$OPENAI_API_KEY``)."""
    return typer.Option(
        None,
        "--api-key",
        envvar="OPENAI_API_KEY",
        help="bearer token (default $OPENAI_API_KEY)",
        show_default=False,
    )


def timeout_option() -> Any:
    """``--timeout SECONDS``: one attempt."""
    return typer.Option(
        600.0, "--timeout", help="seconds one attempt may take (a generation included)"
    )


def deadline_option() -> Any:
    """``--deadline SECONDS``: one query (or sample) over all its attempts."""
    return typer.Option(
        None,
        "--deadline",
        help="seconds one query may take over all its attempts and backoffs (default: every "
        "attempt's timeout plus backoffs; with the defaults up to ~50 min)",
        show_default=False,
    )


def retries_option() -> Any:
    """``--retries N``."""
    return typer.Option(4, "--retries", help="extra attempts on transient failures")


def template_option() -> Any:
    """``--template TEXT`` with ``{question}``."""
    return typer.Option(None, "--template", help=TEMPLATE_HELP, show_default=False)


def system_option() -> Any:
    """``--system TEXT``."""
    return typer.Option(None, "--system", help="system message, if any", show_default=False)


def grader_option() -> Any:
    """``--grader math|exact|module:attribute``."""
    return typer.Option("math", "--grader", help="math, exact or module:attribute")


def temperature_option(default: float) -> Any:
    """``--temperature T``."""
    return typer.Option(default, "--temperature", help="sampling temperature (>= 0)")


def concurrency_option() -> Any:
    """``--concurrency N``."""
    return typer.Option(8, "--concurrency", help="requests in flight at once")


def progress_option() -> Any:
    """``--progress/--no-progress``."""
    return typer.Option(True, "--progress/--no-progress", help="progress bar on stderr")
