"""The ``shadowprice`` command line: thin wrappers that parse, call the library, print.

Each command group lives in its own module and registers itself on :data:`app`.

Exit status of every command: 0 success; 1 the command ran but some queries ended in error
(the count is printed); 2 bad input or usage; 130 interrupted.
"""

from __future__ import annotations

import os
import sys

# Registration imports: each module adds its commands to ``app``.
from . import (
    allocate_cmd,  # noqa: F401
    bench_cmd,  # noqa: F401
    demo_cmd,  # noqa: F401
    evaluate_cmd,  # noqa: F401
    predictor_cmd,  # noqa: F401
    replay_cmd,  # noqa: F401
    run_cmd,  # noqa: F401
    serve_cmd,  # noqa: F401
    traces_cmd,  # noqa: F401
)
from .app import app


def main() -> None:
    """Entry point of the ``shadowprice`` script."""
    try:
        app()
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): nothing more to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
