"""``live_demo``: a small GSM8K batch on a real engine, CLEAR vs uniform, under one budget.

Starts the bundled llama.cpp server in-process unless a URL is given, so a new user sees real
tokens flow under a budget in about a minute.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def sample_problems(n: int) -> list[tuple[str, str, str]]:
    """The first ``n`` problems of the bundled GSM8K test set.

    Parameters
    ----------
    n : int
        How many, from 1 to the size of the bundled set (1319).

    Returns
    -------
    list of (id, question, gold answer)

    Raises
    ------
    ValueError
        When ``n`` is not a whole number in that range.
    """
    from shadowprice.traces import load_problems

    df = load_problems("gsm8k")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(df):
        raise ValueError(
            f"n must be a whole number of problems from 1 to {len(df)} (the bundled GSM8K "
            f"test set), got {n!r}"
        )
    rows = df.head(n)
    return [(str(r.id), str(r.question), str(r.answer)) for r in rows.itertuples()]


def live_demo(
    url: str | None = None,
    *,
    model: str | None = None,
    n: int = 6,
    budget_per_query: int = 100,
    policies: tuple[str, ...] = ("uniform", "clear"),
    force_answer: bool = True,
    concurrency: int = 4,
    out_dir: str | Path | None = None,
    console: Any = None,
) -> dict[str, dict[str, Any]]:
    """Run ``n`` GSM8K problems under ``n * budget_per_query`` tokens for each policy.

    Parameters
    ----------
    url : str, optional
        OpenAI-compatible endpoint. Without it the bundled llama.cpp server is started in
        this process (needs the ``local`` extra, see ``tools/engine.sh``).
    model : str, optional
        Model name sent to the endpoint (default: the bundled server's, else ``"local"``).
    n : int
        Problems, the first ``n`` of the bundled GSM8K test set.
    budget_per_query : int
        Average tokens per problem; the batch shares ``n * budget_per_query``.
    policies : tuple of str
        :func:`shadowprice.allocate` policies to compare, each on the same batch.
    force_answer : bool
        Force a final answer after a length stop (its tokens come out of the budget).
    concurrency : int
        Requests in flight at once.
    out_dir : path, optional
        Folder for one results JSONL per policy (default: a new temporary folder).
    console : rich.console.Console, optional
        Where tables and progress go (default: stdout).

    Returns
    -------
    dict of str -> dict
        Each policy's run summary (correct, graded, tokens used, budget, abandoned, forced,
        wall seconds, ...).
    """
    from rich.console import Console

    from shadowprice import ShiftedSurge

    from .forcing import DEFAULT_FORCE_TOKENS
    from .planning import Batch, heuristic_tau, run_batch
    from .run import RunConfig

    console = console or Console()
    server = None
    if url is None:
        from .local import start_server

        console.print("starting the bundled llama.cpp server (Qwen2.5-Coder-0.5B) ...")
        server = start_server()
        url, model = server.url, model or server.model
    model = model or "local"
    ids, questions, golds = (list(col) for col in zip(*sample_problems(n), strict=True))
    total = n * budget_per_query
    curves = ShiftedSurge(heuristic_tau(questions), alpha=1.5, beta=0.005)
    force = DEFAULT_FORCE_TOKENS if force_answer else 0
    out_root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="shadowprice-demo-"))
    console.print(f"endpoint {url}  model {model}  {n} problems  total budget {total} tokens")
    summaries: dict[str, dict[str, Any]] = {}
    for policy in policies:
        report = run_batch(
            Batch(ids, questions, golds),
            curves,
            budget=total,
            endpoint=url,
            model=model,
            policy=policy,
            out=out_root / f"{policy}.jsonl",
            config=RunConfig(concurrency=concurrency, force_tokens=force),
        )
        _print_run(console, policy, report)
        summaries[policy] = report.summary.summary()
    console.print(f"results in {out_root}")
    del server  # the embedded server stops with the process; drop our reference
    return summaries


def _print_run(console: Any, policy: str, report: Any) -> None:
    """One policy's records as a table, then its summary line."""
    from rich.table import Table

    table = Table(title=f"policy {policy}")
    for col in ("id", "budget", "tokens", "finish", "answer", "gold", "correct"):
        table.add_column(col)
    for r in report.records:
        table.add_row(
            str(r["id"]),
            str(r["budget"]),
            str(r.get("tokens", 0)),
            str(r.get("finish_reason", r.get("status"))),
            str(r.get("answer")),
            str(r.get("gold")),
            str(r.get("correct")),
        )
    console.print(table)
    s = report.summary
    console.print(
        f"[bold]{policy}[/]: {s['correct']}/{s['graded']} correct, "
        f"{s['tokens_used']}/{s['budget']} tokens, {s['abandoned']} abandoned, "
        f"{s.get('forced', 0)} forced, {s['wall_s']:.1f}s"
    )
