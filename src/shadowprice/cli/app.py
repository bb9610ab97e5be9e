"""The ``shadowprice`` Typer application every command module registers itself on."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from ._errors import EXIT_FAILED, EXIT_USAGE, usage_error_line


class _Commands(TyperGroup):
    """The command group; a usage error (an unknown option, a value that is not a number, a
    missing argument) ends like every other error: one line naming the option and the fix,
    status 2, instead of click's usage block."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            print("shadowprice: aborted", file=sys.stderr)
            sys.exit(EXIT_FAILED)
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # no command given: the help
                exc.show()  # type: ignore[attr-defined]
                sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
            line = usage_error_line(exc, argv)
            if line is None:
                raise
            print(line, file=sys.stderr)
            sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="shadowprice",
    cls=_Commands,
    help="Price reasoning tokens: allocate one token budget across many LLM queries.\n\n"
    "Exit status: 0 success; 1 ran but some queries ended in error; 2 bad input or usage; "
    "130 interrupted (Ctrl-C); 143 terminated (SIGTERM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
