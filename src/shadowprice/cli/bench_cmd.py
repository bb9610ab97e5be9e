"""``shadowprice bench``: every policy on every stream; a report folder (markdown, CSV, PNGs).

A thin wrapper over :func:`shadowprice.evaluate.bench.run_bench`: parse options, run with a
progress bar on stderr, print the targets summary and the files written.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ._errors import fail, guarded
from .app import app
from .files import check_outputs
from .options import check_format, output, output_format

#: ``--quick``: small streams, one split, coarse budgets (a smoke run of ~20 s).
QUICK = {
    "n": 200,
    "n_real_mix": 100,
    "n_long": 150,
    "repeats": 1,
    "real_repeats": 2,
    "n_boot": 200,
    "budgets": (100, 300, 1000),
    "long_budgets": (1000, 4000, 16000),
}


@app.command("bench")
@guarded
def bench_command(
    out: Path = output(
        "report folder (report.md, results.csv, PNGs)", "--out", default=Path("shadowprice-bench")
    ),
    n: int | None = typer.Option(
        None, "--n", min=10, help="queries per synthetic stream (default 1000)"
    ),
    quick: bool = typer.Option(False, "--quick", help="small, fast smoke run"),
    seed: int = typer.Option(0, "--seed", help="seeds streams, samples, splits, bootstrap"),
    no_real: bool = typer.Option(
        False, "--no-real", help="skip the bundled real traces and their mixtures"
    ),
    no_long: bool = typer.Option(
        False, "--no-long", help="skip the long-reasoning pools (1k-16k tokens/query)"
    ),
    no_predict: bool = typer.Option(
        False, "--no-predict", help="skip the cross-fitted text-prediction study"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
    fmt: str = output_format("summary format: text or json"),
) -> None:
    """Accuracy vs budget for every policy on every stream, ratios, oracle gap, targets."""
    fmt = check_format(fmt)
    check_outputs([("--output", out)], [], directory=True)
    from shadowprice.evaluate.bench import run_bench

    opts: dict = dict(QUICK) if quick else {}
    if n is not None:
        opts["n"] = n
    command = (
        "shadowprice " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if sys.argv and sys.argv[0].endswith("shadowprice")
        else None
    )
    try:
        opts.setdefault("predict", not (no_predict or quick))
        result = run_bench(
            out,
            seed=seed,
            real=not no_real,
            long=not no_long,
            progress=not no_progress,
            command=command,
            **opts,
        )
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror or exc}")
    except ValueError as exc:
        fail(str(exc))
    met = sum(t.met for t in result.targets)
    print(
        f"targets: {met} of {len(result.targets)} checks met "
        f"({len(result.streams)} streams, {result.seconds:.0f} s)"
    )
    for t in result.targets:
        if not t.met:
            print(f"  MISSED {t.stream}: {t.claim}")
    for path in result.files.values():
        print(f"wrote {path}")
