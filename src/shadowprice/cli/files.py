"""Output files that never touch a user's input and are never left half-written.

- :func:`check_outputs` refuses any output path that is an input file (same inode, whatever
  the spelling: relative, absolute, a hard or symbolic link) or a directory where a file is
  expected, before anything is read or written.
- :func:`write_atomic` (:func:`shadowprice.engine.results.write_atomic`, the one writer of
  whole output files) writes to a temporary file in the same folder and renames it over the
  target, so a crash leaves either the old file or the new one, never a mix; the file gets
  the permissions of the one it replaces, else those the umask gives any new file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..engine.results import write_atomic
from ._errors import fail

__all__ = ["check_outputs", "write_atomic"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Iterable[tuple[str, Path | None]],
    inputs: Iterable[Path | str | None],
    *,
    directory: bool = False,
) -> None:
    """Exit with status 2 if an output would overwrite an input or is the wrong kind.

    Parameters
    ----------
    outputs : iterable of (option name, path or None)
        The command's output paths (None: not given).
    inputs : iterable of paths
        Every file the command reads (``-`` and None are skipped).
    directory : bool
        The outputs are folders (``bench``, ``demo``, ``predictor fit``): an existing plain
        file there is refused. Otherwise an existing folder is refused.
    """
    ins = [Path(p) for p in inputs if p is not None and str(p) != "-"]
    for option, out in outputs:
        if out is None:
            continue
        for src in ins:
            if _same_file(out, src):
                fail(
                    f"{option} {out} is the input file {src}: refusing to overwrite an input; "
                    f"choose another {option}"
                )
        if directory and out.exists() and not out.is_dir():
            fail(f"{option} {out} is a file; give a folder")
        if not directory and out.is_dir():
            fail(f"{option} {out} is a directory; give a file name")
