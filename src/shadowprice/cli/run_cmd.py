"""``shadowprice run``, ``collect`` and ``live-demo``: execute budgets on a real endpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from shadowprice.providers import PROVIDERS, Preset, make_preset

from ._errors import EXIT_FAILED, EXIT_USAGE, fail, guarded, note, stopped_status, terminable
from .app import app
from .files import check_outputs
from .options import (
    api_key_option,
    budget_option,
    check_format,
    choices_help,
    concurrency_option,
    deadline_option,
    endpoint_option,
    grader_option,
    model_option,
    output,
    output_format,
    per_query_option,
    progress_option,
    retries_option,
    system_option,
    temperature_option,
    template_option,
    timeout_option,
    total_budget,
)
from .queries import query_curves, read_query_file

#: The policies run takes: the registry's entries with a run method (a test keeps the two in
#: step; listed here so the help needs no import of the registry).
_POLICIES = ("clear-live", "clear", "market", "uniform", "proportional", "greedy", "length")
#: Where run's queries can run (``--executor``).
EXECUTORS = ("local", "ray")
#: The live policy: prices as requests end, reclaims, extends (see shadowprice.live).
CONTINUATION_HELP = (
    "how a request stopped on its cap is continued (clear-live): auto (ask the server), "
    "prefill (llama.cpp), vllm (vLLM/SGLang continue_final_message), off (no extension)"
)


def _resume_error(exc: Exception, out: Path) -> None:
    fail(
        f"{exc}; pass --restart to move the earlier files aside and start over, or choose "
        f"another --output than {out}"
    )


@app.command("run")
@guarded
@terminable
def run_command(
    queries: Path = typer.Argument(
        ...,
        help="JSONL/CSV with id, question, answer? and tau? (without tau the threshold is "
        "predicted from the question)",
        show_default=False,
    ),
    endpoint: str = endpoint_option(),
    model: str = model_option(),
    budget: int | None = budget_option(),
    per_query: float | None = per_query_option(),
    policy: str = typer.Option(_POLICIES[0], "--policy", help=choices_help("policy", _POLICIES)),
    predictor: str | None = typer.Option(
        None,
        "--predictor",
        help="threshold predictor folder or 'default' (bundled); used when the file has no tau",
        show_default=False,
    ),
    concurrency: int = concurrency_option(),
    force_answer: bool = typer.Option(
        False, "--force-answer", help="ask for the answer after a length stop"
    ),
    force_tokens: int = typer.Option(24, "--force-tokens", help="allowance of that follow-up"),
    fallback_tokens: int = typer.Option(
        0, "--fallback-tokens", help="direct-answer allowance for abandoned queries (0 = none)"
    ),
    alpha: float = typer.Option(1.5, "--alpha", help="surge gain of the thresholds' curves"),
    beta: float = typer.Option(0.005, "--beta", help="surge decay in 1/tokens"),
    temperature: float = temperature_option(0.0),
    grader: str = grader_option(),
    template: str | None = template_option(),
    system: str | None = system_option(),
    api_key: str | None = api_key_option(),
    timeout: float = timeout_option(),
    deadline: float | None = deadline_option(),
    retries: int = retries_option(),
    out: Path = output(
        "results JSONL (journal and summary beside it)", default=Path("results.jsonl")
    ),
    restart: bool = typer.Option(
        False, "--restart", help="move an earlier run's files aside and start over"
    ),
    release_unsettled: bool = typer.Option(
        False,
        "--release-unsettled",
        help="on resume, count requests a crash left in flight as never billed (default: "
        "counted as spent in full)",
    ),
    state: str | None = typer.Option(
        None,
        "--state",
        help="redis://HOST:PORT/DB: keep the budget in Redis, shared by every worker that "
        "names the same --state and --state-name (default: this process)",
        show_default=False,
    ),
    state_name: str = typer.Option(
        "run", "--state-name", help="name of the shared budget in --state"
    ),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="where the queries run: local (this process) or ray (spread over Ray workers, "
        "one budget in --state; Ray at RAY_ADDRESS, else a local Ray)",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="with --executor ray: blocks of queries, one Ray task each (default: the "
        "cluster's CPUs, or this machine's cores)",
        show_default=False,
    ),
    provider: str | None = typer.Option(
        None,
        "--provider",
        help=f"the endpoint's API: {', '.join(PROVIDERS)} (each allowance in its own fields, "
        "with a thinking cap and an answer reserve); default: max_tokens and "
        "max_completion_tokens",
        show_default=False,
    ),
    reserve: int | None = typer.Option(
        None,
        "--reserve",
        help="with --provider: tokens of each allowance kept to answer after a capped thought "
        "(default: 10%%, at least 64, at most 1024)",
        show_default=False,
    ),
    progress: bool = progress_option(),
    continuation: str = typer.Option("auto", "--continuation", help=CONTINUATION_HELP),
    max_tokens: int | None = typer.Option(
        None,
        "--max-tokens",
        help="most tokens one query may generate in all (clear-live; e.g. the context window)",
        show_default=False,
    ),
    fmt: str = output_format(),
) -> None:
    """Allocate the budget over QUERIES and execute them; re-running resumes.

    Every request's allowance is reserved in a journal before it is sent, so a killed run
    resumes without overspending; a finished run re-run changes nothing. An endpoint whose
    answers cannot be read is charged each one in full, so once 3 queries in a row got no
    readable answer the run stops sending (the rest are errors, retried on re-run). Each
    query's tokens are everything charged to it. Ctrl-C or SIGTERM: requests in flight
    are counted as spent in full, the summary is written, and the run ends with one line.
    Exit status: 0 success, 1 some queries ended in error (re-run to retry them), 2 bad
    input, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); re-run to resume.
    """
    from shadowprice.curves import TabulatedCurve
    from shadowprice.engine.live import LiveRunOptions
    from shadowprice.engine.planning import LIVE_POLICY, Batch, run_batch
    from shadowprice.engine.results import RunFiles
    from shadowprice.engine.run import DEFAULT_TEMPLATE, RunConfig, RunInterrupted, RunStateError
    from shadowprice.ledger import JournalMismatch, LedgerError

    fmt = check_format(fmt)
    method = _run_method(policy)
    preset = _preset(provider, reserve)
    elsewhere, block_errors = _executor(executor, workers, state)
    files = RunFiles.of(out)
    check_outputs(
        [("--output", files.results), ("--output", files.journal), ("--output", files.summary)],
        [queries],
    )
    qf = read_query_file(queries)
    batch = Batch(qf.ids(), qf.texts("each query is sent as its question"), qf.answers())
    total = total_budget(budget, per_query, qf.n)
    # clear-live plans on expected spend: the Gamma family carries a length law.
    family = "gamma" if policy == LIVE_POLICY else "surge"
    qc = query_curves(qf, family=family, policy=policy, predictor=predictor, alpha=alpha, beta=beta)
    if qc.source == "default predictor":
        note(
            f"{qf.name} has no thresholds: predicting them from the questions with the bundled "
            f"default predictor; train one for your model with `shadowprice predictor fit`"
        )
    if restart:
        for moved in [*files.archive(), *(_archive_parts(out) if elsewhere else [])]:
            note(f"moved {moved.name.rsplit('.', 2)[0]} aside to {moved}")
    config = RunConfig(
        concurrency=concurrency,
        force_tokens=force_tokens if force_answer else 0,
        fallback_tokens=fallback_tokens,
        params={"temperature": temperature},
        progress=progress,
    )
    try:
        report = run_batch(
            batch,
            qc.curves,
            budget=total,
            endpoint=endpoint,
            model=model,
            policy=policy,
            out=out,
            config=config,
            grader=grader,
            template=template if template is not None else DEFAULT_TEMPLATE,
            system=system,
            api_key=api_key,
            timeout=timeout,
            deadline=deadline,
            max_retries=retries,
            release_unsettled=release_unsettled,
            grid=qc.curves.grid if isinstance(qc.curves, TabulatedCurve) else None,
            state=state,
            state_name=state_name,
            live=LiveRunOptions(continuation=continuation, max_tokens=max_tokens),  # type: ignore[arg-type]
            method=method,
            preset=preset,
            executor=elsewhere,
        )
    except LedgerError as exc:
        if isinstance(exc, JournalMismatch):
            _resume_error(exc, out)
        fail(f"--state {state}: {exc}" if state else str(exc))
    except RunStateError as exc:
        _resume_error(exc, out)
    except RunInterrupted as exc:
        _stopped(exc, files.summary, qf.n)
    except block_errors as exc:  # a block Ray gave up on: resumable, like a query's error
        fail(str(exc), EXIT_FAILED if getattr(exc, "resumable", False) else EXIT_USAGE)
    _report(report.summary.summary(), policy, out, fmt)
    if report.summary["errors"]:
        raise typer.Exit(code=EXIT_FAILED)


def _run_method(policy: str) -> str:
    """The allocate method (or ``live``) the registry gives ``policy`` for a query file's
    curves."""
    from shadowprice.evaluate.policies import EVAL_POLICIES

    entry = EVAL_POLICIES.get(policy)
    if entry is None or entry.run_method is None:
        fail(f"--policy must be one of {', '.join(_POLICIES)}, got {policy!r}")
    return entry.run_method


def _executor(
    name: str, workers: int | None, state: str | None
) -> tuple[Any, tuple[type[Exception], ...]]:
    """The executor of ``--executor`` (None: this process) and the errors of its blocks."""
    if name not in EXECUTORS:
        fail(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "local":
        if workers is not None:
            fail("--workers applies only with --executor ray")
        return None, ()
    if state is None:
        fail(
            "--executor ray needs --state redis://HOST:PORT/DB: its workers share one budget "
            "in Redis (start a redis-server every worker can reach and pass its URL)"
        )
    if workers is not None and workers < 1:
        fail(f"--workers must be a whole number >= 1, got {workers}")
    try:
        from shadowprice.integrations.ray.blocks import BlockError
        from shadowprice.integrations.ray.executor import RayExecutor
    except ImportError as exc:
        fail(f"--executor ray: {exc}")
    return RayExecutor(workers=workers), (BlockError,)


def _archive_parts(out: Path) -> list[Path]:
    from shadowprice.integrations.ray.executor import archive_parts

    return archive_parts(out)


def _preset(provider: str | None, reserve: int | None) -> Preset | None:
    """The provider preset of ``--provider`` and ``--reserve`` (None: the default caps)."""
    if provider is None:
        if reserve is not None:
            fail("--reserve needs --provider (without one the allowance has no thinking cap)")
        return None
    if provider not in PROVIDERS:
        fail(f"unknown --provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    try:
        return make_preset(provider, reserve=reserve)
    except ValueError as exc:
        fail(f"--reserve {reserve}: {exc}")


def _stopped(exc: Any, summary: Path, n: int) -> NoReturn:
    """End a run a signal stopped: one line on stderr, status 130 (SIGINT) or 143 (SIGTERM)."""
    from shadowprice.engine.results import FINAL_STATUSES

    word, status = stopped_status(exc)
    report = exc.report
    if report is None:
        line = f"{word} ({exc.signal}) before the run began; re-run the same command to start it"
    else:
        s = report.summary
        finished = sum(1 for r in report.records if r.get("status") in FINAL_STATUSES)
        line = (
            f"{word} ({exc.signal}): {s['cancelled_requests']} requests in flight counted as "
            f"spent in full; {finished} of {n} queries finished, {s['tokens_used']}/"
            f"{s['budget']} tokens spent; summary in {summary}; re-run the same command to "
            f"resume"
        )
    print(f"shadowprice: {line}", file=sys.stderr)
    raise typer.Exit(code=status)


def _report(s: dict[str, Any], policy: str, out: Path, fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(s))
    else:
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.1%}"
        unsettled = (
            f" ({s['unsettled_counted']} counted for {s['unsettled_requests']} requests a "
            f"crash left in flight)"
            if s.get("unsettled_requests")
            else ""
        )
        live = s.get("live")
        detail = (
            f", price {live['price']:.3g}, extensions {live['extensions']}, length scale "
            f"{live['length_scale']:.2g}"
            if live
            else f", forced {s['forced']}"
        )
        typer.echo(
            f"{policy}: accuracy {acc} ({s['correct']}/{s['graded']}), spent "
            f"{s['tokens_used']}/{s['budget']} tokens{unsettled}, abandoned {s['abandoned']}"
            f"{detail}, errors {s['errors']}, resumed {s['resumed']} -> {out}"
        )
    if s["errors"]:
        note(f"{s['errors']} queries ended in error (see 'reason' in {out}); re-run to retry")
    if not s["within_budget"]:
        note(
            f"over budget: {s['tokens_used']} tokens used of {s['budget']} (overrun "
            f"{s['overrun']}: a server generated past max_tokens or a resumed run counted "
            f"more than was left)"
        )


@app.command("collect")
@guarded
@terminable
def collect_command(
    queries: Path = typer.Argument(
        ..., help="JSONL/CSV with id, question, answer?", show_default=False
    ),
    endpoint: str = endpoint_option(),
    model: str = model_option(),
    samples: int = typer.Option(4, "--samples", help="samples per query (K)"),
    max_tokens: int = typer.Option(512, "--max-tokens", help="allowance per sample (M)"),
    temperature: float = temperature_option(0.7),
    concurrency: int = concurrency_option(),
    grader: str = grader_option(),
    template: str | None = template_option(),
    system: str | None = system_option(),
    api_key: str | None = api_key_option(),
    timeout: float = timeout_option(),
    deadline: float | None = deadline_option(),
    retries: int = retries_option(),
    out: Path = output("trace set JSONL (resumed when it exists)", default=Path("traces.jsonl")),
    progress: bool = progress_option(),
    fmt: str = output_format(),
) -> None:
    """Sample each query K times at M tokens into a trace set (fit/evaluate read it).

    Re-running resumes and completes queries a failure left short of K samples. Exit
    status: 0 every query has its K samples, 1 some do not (re-run to complete them),
    2 bad input, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    from shadowprice.engine.collect import CollectConfig, CollectQuery, collect_traces
    from shadowprice.engine.run import DEFAULT_TEMPLATE, check_template, prompt_messages

    fmt = check_format(fmt)
    tmpl = check_template(template) if template is not None else DEFAULT_TEMPLATE
    check_outputs([("--output", out)], [queries])
    qf = read_query_file(queries)
    ids, texts, answers = qf.ids(), qf.texts("each query is sent as its question"), qf.answers()
    qs = [
        CollectQuery(i, prompt_messages(q, tmpl, system), q, a)
        for i, q, a in zip(ids, texts, answers, strict=True)
    ]
    stats = collect_traces(
        qs,
        endpoint=endpoint,
        model=model,
        out=out,
        config=CollectConfig(
            samples, max_tokens, concurrency, {"temperature": temperature}, progress
        ),
        grader=grader,
        api_key=api_key,
        timeout=timeout,
        deadline=deadline,
        max_retries=retries,
    )
    if fmt == "json":
        typer.echo(json.dumps(stats))
    else:
        typer.echo(
            f"collected {stats['completed']} queries ({stats['skipped']} already there, "
            f"{stats['incomplete']} incomplete), {stats['completion_tokens']} tokens, "
            f"{stats['failed_samples']} failed samples -> {out}"
        )
    if stats["incomplete"]:
        note(
            f"{stats['incomplete']} queries have fewer than {samples} samples: re-run the "
            f"same command to complete them"
        )
        raise typer.Exit(code=EXIT_FAILED)


@app.command("live-demo")
@guarded
def live_demo_command(
    endpoint: str | None = typer.Option(
        None,
        "--endpoint",
        "--url",
        help="OpenAI-compatible URL (default: $SHADOWPRICE_LLAMA_URL, else start the bundled "
        "llama.cpp server)",
        show_default=False,
    ),
    model: str | None = typer.Option(
        None, "--model", help="model name (default: the endpoint's first)", show_default=False
    ),
    n: int = typer.Option(6, "-n", help="GSM8K problems (of the bundled test set)"),
    per_query: int = typer.Option(
        100, "--per-query", "--budget-per-query", min=1, help="average tokens per query"
    ),
) -> None:
    """Run a few GSM8K problems on a real engine: uniform vs CLEAR under one small budget."""
    from shadowprice.engine import live_demo

    url = endpoint or os.environ.get("SHADOWPRICE_LLAMA_URL") or None
    try:
        live_demo(url, model=model, n=n, budget_per_query=per_query)
    except RuntimeError as exc:
        fail(str(exc))
