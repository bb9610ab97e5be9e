"""The ``shadowprice`` command line: thin wrappers that parse, call the library, print.

Each command group lives in its own module and registers itself on :data:`app`.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="shadowprice",
    help="Price reasoning tokens: allocate one token budget across many LLM queries.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration imports: each module adds its commands to ``app``.
from . import allocate_cmd  # noqa: E402,F401
from . import demo_cmd  # noqa: E402,F401
from . import run_cmd  # noqa: E402,F401
from . import evaluate_cmd  # noqa: E402,F401
from . import predictor_cmd  # noqa: E402,F401


def main() -> None:
    app()
