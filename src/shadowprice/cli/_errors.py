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
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, ParamSpec, TypeVar

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


def usage_error_line(exc: BaseException, argv: Sequence[str]) -> str | None:
    """The one line a command-line usage error ends with, or None if ``exc`` is not one.

    A usage error is what the parser raises before a command runs (click's ``UsageError``
    family: an unknown option, a missing argument, a value of the wrong type or range). The
    line names the option and the value as typed (``argv``) and says what to give instead.
    """
    if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
        return None
    ctx = getattr(exc, "ctx", None)
    names = []
    while ctx is not None:
        names.append(ctx.info_name if ctx.parent is not None else "shadowprice")
        ctx = ctx.parent
    see = f"see '{' '.join(reversed(names or ['shadowprice']))} --help'"
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "param_type_name", "") == "option":
        option, value = _typed(param.opts + param.secondary_opts, argv)
        fix = _number_fix(str(exc.format_message()), option, param.default)
        if value is not None and fix is not None:
            return f"shadowprice: error: {option} {value!r} is not {fix}; {see}"
        if value is not None:
            why = _reason(str(exc.format_message()))
            return f"shadowprice: error: {option} {value!r}: {why}; {see}"
    message = str(exc.format_message()).rstrip(".")
    return f"shadowprice: error: {message[:1].lower()}{message[1:]}; {see}"


def _typed(opts: Sequence[str], argv: Sequence[str]) -> tuple[str, str | None]:
    """(the option's spelling, its value) as last given in ``argv``."""
    for i in range(len(argv) - 1, -1, -1):
        for opt in opts:
            if argv[i] == opt and i + 1 < len(argv):
                return opt, argv[i + 1]
            if argv[i].startswith(opt + "="):
                return opt, argv[i][len(opt) + 1 :]
    return (opts[0] if opts else "?"), None


def _number_fix(message: str, option: str, default: Any) -> str | None:
    """What a value that failed to parse as a number should have been, and how to write it
    (None when ``message`` is not about a number)."""
    low = message.lower()
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if "valid integer" in low or "not a valid int" in low:
        example = f"e.g. {option} {default}" if numeric else "e.g. 20000, not 2e4 or 20k"
        return f"a whole number: give digits only ({example})"
    if "valid number" in low or "valid float" in low:
        example = f"e.g. {option} {default:g}" if numeric else "e.g. 0.5 or 1e3"
        return f"a number: give one in digits ({example})"
    return None


def _reason(message: str) -> str:
    """The parser's reason without its preamble (``Invalid value for '--x': Input ...``)."""
    reason = message.split(": ", 1)[1] if message.startswith("Invalid value") else message
    return reason.replace("Input should be", "it should be").rstrip(".")


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
