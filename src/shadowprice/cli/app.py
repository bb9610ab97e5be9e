"""The ``shadowprice`` Typer application every command module registers itself on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="shadowprice",
    help="Price reasoning tokens: allocate one token budget across many LLM queries.\n\n"
    "Exit status: 0 success; 1 ran but some queries ended in error; 2 bad input or usage; "
    "130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
