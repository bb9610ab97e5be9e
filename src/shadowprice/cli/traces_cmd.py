"""``shadowprice traces from-batch``: a finished batch back as graded results and a trace set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from ._errors import EXIT_FAILED, fail, guarded, note
from .app import app
from .files import check_outputs, write_atomic
from .options import check_format, grader_option, output, output_format
from .queries import read_query_file

traces_app = typer.Typer(
    help="Trace sets (per query, sampled lengths and correctness) from other tools' files.",
    no_args_is_help=True,
)
app.add_typer(traces_app, name="traces")


@traces_app.command("from-batch")
@guarded
def from_batch_command(
    outputs: list[Path] = typer.Argument(
        ...,
        help="the batch's output file(s), JSONL: custom_id, response (status_code, body with "
        "usage) or error; an OpenAI batch's error file may be given too",
        show_default=False,
    ),
    requests: Path = typer.Option(
        ...,
        "--requests",
        help="the batch's input file (from `allocate --emit openai-batch`): each request's "
        "allowance",
        show_default=False,
    ),
    queries: Path = typer.Option(
        ...,
        "--queries",
        help="the queries the batch was made from (JSONL/CSV: id, question, answer)",
        show_default=False,
    ),
    out: Path | None = output(
        "trace set: .jsonl, .jsonl.gz, .csv or .parquet (one record per answered query)"
    ),
    results: Path | None = typer.Option(
        None,
        "--results",
        help="also write one result row per query here, like run's (status, tokens, answer, "
        "correct)",
        show_default=False,
    ),
    grader: str = grader_option(),
    fmt: str = output_format(),
) -> None:
    """Read a finished batch back: graded result rows and a trace set.

    Tokens are charged by the counting rule: what cannot be counted (an error line, a body
    that is not a completion, a request without an output line) is charged its whole
    allowance. Exit status: 0 every request answered, 1 some ended in error (the count is
    printed), 2 bad input (a file, line and field named).
    """
    from shadowprice.engine.batchfiles import read_batch
    from shadowprice.traces.io import write_traces

    fmt = check_format(fmt)
    if out is None:
        fail("give -o/--output PATH for the trace set")
    inputs = [*outputs, requests, queries]
    check_outputs([("--output", out), ("--results", results)], inputs)
    if results is not None and out.resolve() == results.resolve():
        fail(f"--results {results} is also --output: give two files")
    qf = read_query_file(queries)
    report = read_batch(outputs, requests, qf.ids(), _questions(qf), qf.answers(), grader=grader)
    if report.traces is not None:
        # Written beside the target and renamed over it: never half a trace set.
        tmp = out.with_name(f".tmp-{os.getpid()}.{out.name}")
        try:
            write_traces(report.traces, tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        note(f"no request was answered: {out} not written")
    if results is not None:
        write_atomic(
            results, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report.records)
        )
    _report(report.summary, out, results, fmt)
    if report.summary["errors"]:
        raise typer.Exit(code=EXIT_FAILED)


def _questions(qf: Any) -> list[str | None]:
    """Each query's prompt text where it has one (the trace set keeps it)."""
    return qf.texts() if qf.has_texts() else [None] * qf.n


def _report(s: dict[str, Any], out: Path, results: Path | None, fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(s))
    else:
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.1%}"
        where = f"{out}" + (f", {results}" if results is not None else "")
        typer.echo(
            f"batch: {s['requests']} requests, {s['answered']} answered, accuracy {acc} "
            f"({s['correct']}/{s['graded']}), {s['tokens_used']} tokens charged of "
            f"{s['budget']} allotted, {s['abandoned']} abandoned, {s['errors']} errors "
            f"({s['missing']} without an output line), {s['traces']} traces -> {where}"
        )
    if s["errors"]:
        note(
            f"{s['errors']} requests ended in error or have no output line: charged as the "
            f"counting rule says (see 'reason' in the results)"
        )
    if not s["within_budget"]:
        note(
            f"over the allotted tokens: {s['tokens_used']} charged of {s['budget']} (a server "
            f"generated past max_tokens)"
        )
