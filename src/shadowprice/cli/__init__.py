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
from . import (
    allocate_cmd,  # noqa: F401
    bench_cmd,  # noqa: F401
    demo_cmd,  # noqa: F401
    evaluate_cmd,  # noqa: F401
    predictor_cmd,  # noqa: F401
    run_cmd,  # noqa: F401
    serve_cmd,  # noqa: F401
)


def main() -> None:
    app()
