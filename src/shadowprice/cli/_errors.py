"""How commands end: one line on stderr and a documented exit status.

====  ==========================================================================
0     success
1     the command ran but did not fully succeed (some queries ended in error, a
      ``collect`` that collected nothing); the count is printed
2     bad input or usage (the message names the file, line, field or option)
130   interrupted (Ctrl-C, SIGINT); a resumable command continues where it stopped
143   terminated (SIGTERM: ``timeout``, systemd, Kubernetes), for the commands that take it
      like Ctrl-C (``run``, ``collect``); a resumable command continues where it stopped
====  ==========================================================================
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM killed


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread the way Ctrl-C raises ``KeyboardInterrupt``."""

    signal = "SIGTERM"


def stopped_status(exc: BaseException) -> tuple[str, int]:
    """(``interrupted`` or ``terminated``, exit status) of a ``KeyboardInterrupt``: 143 for
    one that says it came from SIGTERM (``signal = "SIGTERM"``), else 130."""
    if getattr(exc, "signal", None) == "SIGTERM":
        return "terminated", EXIT_TERMINATED
    return "interrupted", EXIT_INTERRUPTED


def terminable(command: Callable[P, R]) -> Callable[P, R]:
    """Let SIGTERM end ``command`` like Ctrl-C (:class:`Terminated`, status 143 through
    :func:`guarded`) instead of killing it silently. Put it under :func:`guarded`."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is not threading.main_thread():
            return command(*args, **kwargs)

        def terminate(signum: int, frame: object) -> None:
            raise Terminated()

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            return command(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return run


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
    missing = "Missing" in type(exc).__name__  # no value was given: nothing to quote
    if param is not None and getattr(param, "param_type_name", "") == "option" and not missing:
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
    ``KeyboardInterrupt`` with 130 (143 for SIGTERM, see :func:`terminable`); anything else
    is a bug: status 1 with a one-line message (set ``SHADOWPRICE_DEBUG=1`` for the
    traceback).
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as exc:
            word, status = stopped_status(exc)
            signame = getattr(exc, "signal", None)
            print(f"shadowprice: {word}{f' ({signame})' if signame else ''}", file=sys.stderr)
            raise typer.Exit(code=status) from None
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
