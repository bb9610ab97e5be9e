"""How commands end: one line on stderr and a documented exit status.

====  ==========================================================================
0     success
1     the command ran but did not fully succeed (some queries ended in error, a
      ``collect`` that collected nothing); the count is printed
2     bad input or usage (the message names the file, line, field or option)
130   interrupted (Ctrl-C); a resumable command continues where it stopped
====  ==========================================================================
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``shadowprice: error: message`` to stderr and exit (status 2: bad input)."""
    print(f"shadowprice: error: {message}", file=sys.stderr)
    raise typer.Exit(code=code)


def note(message: str) -> None:
    """One informational line on stderr (never mixed into data on stdout)."""
    print(f"shadowprice: {message}", file=sys.stderr)


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """Run a command so that it ends with a documented status, never a traceback.

    ``ValueError`` (the library's "this argument is invalid", its messages name the field)
    and ``OSError`` (a file that cannot be read or written) end with status 2;
    ``KeyboardInterrupt`` with 130; anything else is a bug: status 1 with a one-line
    message (set ``SHADOWPRICE_DEBUG=1`` for the traceback).
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            print("shadowprice: interrupted", file=sys.stderr)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except ValueError as exc:
            fail(str(exc))
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except MemoryError:
            fail("out of memory: the input is too large for this machine")
        except Exception as exc:
            if os.environ.get("SHADOWPRICE_DEBUG"):
                raise
            print(
                f"shadowprice: internal error: {type(exc).__name__}: {exc} (this is a bug; "
                f"rerun with SHADOWPRICE_DEBUG=1 for the traceback and report it)",
                file=sys.stderr,
            )
            raise typer.Exit(code=EXIT_FAILED) from None

    return run
