"""``shadowprice run``, ``collect`` and ``live-demo``: execute budgets on a real endpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from . import app
from ._errors import fail


def load_queries(path: Path, *, need_tau: bool) -> list[dict[str, Any]]:
    """Read QUERIES (JSONL or CSV: ``id``, ``question``, optional ``answer`` and ``tau``)."""
    from shadowprice.queries import QueryFileError, read_run_queries

    try:
        ids, texts, answers, tau = read_run_queries(path, need_tau=need_tau)
    except QueryFileError as exc:
        fail(str(exc))
    return [
        {"id": i, "question": q, "answer": a, **({"tau": float(tau[k])} if tau is not None else {})}
        for k, (i, q, a) in enumerate(zip(ids, texts, answers, strict=True))
    ]


def _check_template(template: str) -> str:
    """A prompt template must contain ``{question}`` and nothing else in braces."""
    try:
        template.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        fail(
            f"--template must contain {{question}} and no other {{...}} fields ({exc!r}); "
            f"write literal braces as {{{{ and }}}}"
        )
    if "{question}" not in template:
        fail("--template must contain {question}")
    return template


TEMPLATE_HELP = (
    "user message with {question} where the query goes (default: reason step by "
    "step, final answer in \\boxed{})"
)


@app.command("run")
def run_command(
    queries: Path = typer.Argument(..., help="JSONL/CSV with id, question, answer?, tau?"),
    endpoint: str = typer.Option(..., "--endpoint", help="OpenAI-compatible base URL"),
    model: str = typer.Option(..., "--model", help="model name sent to the endpoint"),
    budget: int = typer.Option(..., "--budget", help="total completion-token budget"),
    policy: str = typer.Option("clear", "--policy", help="allocation policy (clear, uniform...)"),
    predictor: str | None = typer.Option(
        None, "--predictor", help="threshold predictor directory or 'default' (bundled)"
    ),
    concurrency: int = typer.Option(8, "--concurrency", min=1),
    force_answer: bool = typer.Option(False, "--force-answer", help="force an answer on length"),
    force_tokens: int = typer.Option(24, "--force-tokens", min=1),
    fallback_tokens: int = typer.Option(
        0, "--fallback-tokens", min=0, help="direct-answer allowance for abandoned queries"
    ),
    alpha: float = typer.Option(1.5, "--alpha"),
    beta: float = typer.Option(0.005, "--beta"),
    temperature: float = typer.Option(0.0, "--temperature"),
    grader: str = typer.Option("math", "--grader", help="math, exact or module:attribute"),
    template: str | None = typer.Option(None, "--template", help=TEMPLATE_HELP),
    system: str | None = typer.Option(None, "--system", help="system message, if any"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY"),
    timeout: float = typer.Option(600.0, "--timeout", help="seconds per request"),
    output: Path = typer.Option(Path("results.jsonl"), "-o", "--output"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Allocate BUDGET over QUERIES and execute them; re-running resumes."""
    import numpy as np

    from shadowprice.engine.planning import build_items, plan_budgets
    from shadowprice.engine.run import RunConfig, run_plan

    if budget < 0:
        fail("--budget must be >= 0")
    rows = load_queries(queries, need_tau=predictor is None)
    questions = [str(r["question"]) for r in rows]
    if predictor is not None:
        from shadowprice.predict import load_predictor

        try:
            threshold_model = load_predictor(str(predictor))
        except (OSError, ValueError) as exc:
            fail(f"--predictor {predictor}: cannot load ({exc})")
        curves = threshold_model.predict_curves(questions, alpha=alpha, beta=beta)
    else:
        from shadowprice import ShiftedSurge

        curves = ShiftedSurge(np.array([r["tau"] for r in rows]), alpha=alpha, beta=beta)
    force = force_tokens if force_answer else 0
    try:
        planned = plan_budgets(
            curves, budget, policy, force_tokens=force, fallback_tokens=fallback_tokens
        )
    except ValueError as exc:
        fail(str(exc))
    from shadowprice.engine.run import DEFAULT_TEMPLATE

    items = build_items(
        [str(r["id"]) for r in rows],
        questions,
        planned.budgets.tolist(),
        [r["answer"] for r in rows],
        template=_check_template(template) if template is not None else DEFAULT_TEMPLATE,
        system=system,
    )
    report = run_plan(
        items,
        endpoint=endpoint,
        model=model,
        total_budget=budget,
        out=output,
        config=RunConfig(
            concurrency=concurrency,
            force_tokens=force,
            fallback_tokens=fallback_tokens,
            params={"temperature": temperature},
            progress=progress,
        ),
        grader=grader,
        api_key=api_key,
        timeout=timeout,
    )
    s = report.summary
    acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.1%}"
    typer.echo(
        f"{policy}: accuracy {acc} ({s['correct']}/{s['graded']}), tokens {s['tokens_used']}"
        f"/{s['budget']}, abandoned {s['abandoned']}, forced {s['forced']}, errors "
        f"{s['errors']}, resumed {s['resumed']} -> {output}"
    )


@app.command("collect")
def collect_command(
    queries: Path = typer.Argument(..., help="JSONL/CSV with id, question, answer?"),
    endpoint: str = typer.Option(..., "--endpoint"),
    model: str = typer.Option(..., "--model"),
    samples: int = typer.Option(4, "--samples", min=1, help="samples per query (K)"),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="allowance per sample (M)"),
    temperature: float = typer.Option(0.7, "--temperature"),
    concurrency: int = typer.Option(8, "--concurrency", min=1),
    grader: str = typer.Option("math", "--grader"),
    template: str | None = typer.Option(None, "--template", help=TEMPLATE_HELP),
    system: str | None = typer.Option(None, "--system", help="system message, if any"),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY"),
    timeout: float = typer.Option(600.0, "--timeout"),
    output: Path = typer.Option(Path("traces.jsonl"), "-o", "--output"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Sample each query K times at M tokens into a trace set (fit/evaluate read it)."""
    from shadowprice.engine.collect import CollectConfig, CollectQuery, collect_traces
    from shadowprice.engine.run import DEFAULT_TEMPLATE, prompt_messages

    tmpl = _check_template(template) if template is not None else DEFAULT_TEMPLATE
    rows = load_queries(queries, need_tau=False)
    qs = [
        CollectQuery(
            str(r["id"]),
            prompt_messages(str(r["question"]), tmpl, system),
            str(r["question"]),
            r["answer"],
        )
        for r in rows
    ]
    stats = collect_traces(
        qs,
        endpoint=endpoint,
        model=model,
        out=output,
        config=CollectConfig(
            samples, max_tokens, concurrency, {"temperature": temperature}, progress
        ),
        grader=grader,
        api_key=api_key,
        timeout=timeout,
    )
    typer.echo(
        f"collected {stats['collected']} queries ({stats['skipped']} already there), "
        f"{stats['completion_tokens']} tokens, {stats['failed_samples']} failed samples "
        f"-> {output}"
    )


@app.command("live-demo")
def live_demo_command(
    url: str | None = typer.Option(
        None, "--url", help="endpoint (default: $SHADOWPRICE_LLAMA_URL, else start the bundled one)"
    ),
    model: str | None = typer.Option(None, "--model"),
    n: int = typer.Option(6, "-n", min=1, max=8, help="GSM8K problems"),
    budget_per_query: int = typer.Option(100, "--budget-per-query", min=1),
) -> None:
    """Run a few GSM8K problems on a real engine: uniform vs CLEAR under one small budget."""
    from shadowprice.engine import live_demo

    url = url or os.environ.get("SHADOWPRICE_LLAMA_URL") or None
    try:
        live_demo(url, model=model, n=n, budget_per_query=budget_per_query)
    except RuntimeError as exc:
        fail(str(exc))
