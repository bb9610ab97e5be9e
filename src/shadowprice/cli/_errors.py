"""How the CLI reports bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with status 2 (bad input)."""
    print(f"shadowprice: error: {message}", file=sys.stderr)
    raise typer.Exit(code=2)
