"""``shadowprice allocate``: split one token budget over the queries of a file.

Per-query budgets go to ``-o FILE`` (written atomically) or stdout as JSON lines; the summary
goes to stderr, or to stdout when ``-o`` is given, so that ``shadowprice allocate q.jsonl
--budget 9000 > budgets.jsonl`` keeps the data stream clean. With ``--emit openai-batch`` the
data are Batch API input lines instead, one per funded query, the allowance written in the
``--provider``'s fields (:mod:`shadowprice.engine.batchfiles`).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import typer

from shadowprice.providers import PROVIDERS, Preset, make_preset

from ._errors import fail, guarded, note
from .app import app
from .files import check_outputs, write_atomic
from .options import (
    budget_option,
    check_format,
    choices_help,
    output,
    output_format,
    per_query_option,
    system_option,
    template_option,
    total_budget,
)
from .queries import FAMILIES, QueryFile, query_curves, read_query_file

_POLICIES = ("clear", "market", "oracle", "uniform", "proportional", "greedy", "length")


@app.command("allocate")
@guarded
def allocate_command(
    queries: str = typer.Argument(
        ...,
        help="JSONL or CSV (by suffix; '-' = JSONL on stdin): id plus the family's parameters "
        "(surge: tau; gamma: tau, beta?, p?; logistic: mu, scale, p?) or a question to predict "
        "them from; optional floor, min_tokens, max_tokens, alpha, beta",
        show_default=False,
    ),
    budget: int | None = budget_option(),
    per_query: float | None = per_query_option(),
    policy: str = typer.Option("clear", "--policy", help=choices_help("policy", _POLICIES)),
    family: str = typer.Option("surge", "--family", help=choices_help("curve family", FAMILIES)),
    alpha: float = typer.Option(1.5, "--alpha", help="surge gain (unless the file has alpha)"),
    beta: float = typer.Option(
        0.005, "--beta", help="surge decay / gamma rate in 1/tokens (unless in the file)"
    ),
    granularity: int = typer.Option(1, "--granularity", help="budgets are multiples of this"),
    min_tokens: int | None = typer.Option(
        None, "--min-tokens", help="smallest budget of a funded query", show_default=False
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="cap per query", show_default=False
    ),
    out: Path | None = output("write budgets here (default stdout)"),
    fmt: str = output_format(),
    predictor: str | None = typer.Option(
        None,
        "--predictor",
        help="threshold predictor folder (from `predictor fit`) or 'default' (bundled); "
        "QUERIES then needs only id and question",
        show_default=False,
    ),
    point: bool = typer.Option(
        False, "--point", help="with a predictor: price the point estimate, not the expected curve"
    ),
    emit: str | None = typer.Option(
        None,
        "--emit",
        help="write batch input lines instead of budgets: openai-batch (OpenAI Batch API, "
        "vllm run-batch, LiteLLM batches); QUERIES then needs each question",
        show_default=False,
    ),
    model: str | None = typer.Option(
        None, "--model", help="with --emit: the model every request names", show_default=False
    ),
    provider: str | None = typer.Option(
        None,
        "--provider",
        help="with --emit: write each allowance in this API's fields (thinking cap + answer "
        f"reserve): one of {', '.join(PROVIDERS)} (default: max_tokens and "
        "max_completion_tokens only)",
        show_default=False,
    ),
    reserve: int | None = typer.Option(
        None,
        "--reserve",
        help="with --provider: tokens kept for the answer after the thinking cap (default: "
        "10%% of the allowance, 64 to 1024)",
        show_default=False,
    ),
    template: str | None = template_option(),
    system: str | None = system_option(),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="with --emit: sampling temperature in every request (default: the server's)",
        show_default=False,
    ),
    fallback_tokens: int = typer.Option(
        0,
        "--fallback-tokens",
        help="with --emit: a direct-answer request of this allowance for each abandoned query, "
        "held back from the budget (0 = abandoned queries get no line)",
    ),
    abandoned_out: Path | None = typer.Option(
        None,
        "--abandoned",
        help="with --emit: also write the abandoned queries' ids here (JSONL: id, reason)",
        show_default=False,
    ),
) -> None:
    """Allocate a token budget over QUERIES; one JSON line per query: id, budget, funded.

    With --emit openai-batch: one Batch API input line per funded query instead
    (custom_id = the query id, the question as run sends it, the budget as the allowance).
    Exit status: 0 success, 2 bad input (including limits no allocation can meet).
    """
    fmt = check_format(fmt)
    batch = _batch_options(
        emit,
        model,
        provider,
        reserve,
        template,
        system,
        temperature,
        fallback_tokens,
        abandoned_out,
    )
    check_outputs([("--output", out), ("--abandoned", abandoned_out)], [queries])
    qf = read_query_file(queries)
    ids = qf.ids()
    total = total_budget(budget, per_query, qf.n)
    limits = qf.limits()
    qc = query_curves(
        qf, family=family, policy=policy, predictor=predictor, point=point, alpha=alpha, beta=beta
    )
    if qc.source == "default predictor":
        note(
            f"{qf.name} has questions but no thresholds: pricing them with the bundled default "
            f"predictor (trained on Qwen2.5-Math solution lengths); train one for your model "
            f"with `shadowprice predictor fit`"
        )
    texts = qf.texts("--emit sends each query as its question") if batch else None
    grid = getattr(qc.curves, "grid", None)
    if grid is not None and granularity > 1:
        grid = grid[grid % granularity == 0]
    result, held_back = _allocate(
        qc.curves,
        total,
        policy,
        batch.fallback_tokens if batch else 0,
        granularity=granularity,
        grid=grid,
        min_tokens=_merged(limits.get("min_tokens"), min_tokens, 0),
        max_tokens=_merged(limits.get("max_tokens"), max_tokens, np.inf),
        floor=_merged(limits.get("floor"), None, 0),
    )
    if not result.success:
        fail(result.message)
    emitted: dict[str, Any] = {}
    if batch is not None and texts is not None:
        data, emitted = _emit(batch, qf, ids, texts, result, held_back)
    else:
        data = "".join(json.dumps(rec) + "\n" for rec in _records(ids, result))
    if out is None:
        sys.stdout.write(data)
        summary_stream: TextIO = sys.stderr
    else:
        write_atomic(out, data)
        summary_stream = sys.stdout
    summary = {
        **result.summary(),
        "per_query": total / qf.n,
        "family": qc.family,
        "curves": qc.source,
        **emitted,
    }
    if out is not None:
        summary["output"] = str(out)
    if fmt == "json":
        summary_stream.write(json.dumps(summary) + "\n")
    else:
        _print_summary(summary, summary_stream)
    summary_stream.flush()


@dataclass(frozen=True)
class _Batch:
    """What ``--emit`` writes, and how."""

    emit: str
    model: str
    preset: Preset
    template: str
    system: str | None
    params: dict[str, Any]
    fallback_tokens: int
    abandoned_out: Path | None


def _batch_options(
    emit: str | None,
    model: str | None,
    provider: str | None,
    reserve: int | None,
    template: str | None,
    system: str | None,
    temperature: float | None,
    fallback_tokens: int,
    abandoned_out: Path | None,
) -> _Batch | None:
    """The ``--emit`` settings, checked before anything is read (or exit 2)."""
    from shadowprice.engine.batchfiles import EMIT_FORMATS
    from shadowprice.engine.run import DEFAULT_TEMPLATE, check_template

    if emit is None:
        given = {
            "--model": model,
            "--provider": provider,
            "--reserve": reserve,
            "--template": template,
            "--system": system,
            "--temperature": temperature,
            "--abandoned": abandoned_out,
            "--fallback-tokens": fallback_tokens or None,
        }
        extra = [name for name, v in given.items() if v is not None]
        if extra:
            fail(f"{', '.join(extra)} apply only with --emit openai-batch")
        return None
    if emit not in EMIT_FORMATS:
        fail(f"unknown --emit {emit!r}; choose {', '.join(EMIT_FORMATS)}")
    if not model or not model.strip():
        fail("--emit needs --model NAME (the model every request names)")
    if provider is not None and provider not in PROVIDERS:
        fail(f"unknown --provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if reserve is not None and provider is None:
        fail("--reserve needs --provider (without one the allowance has no thinking cap)")
    if reserve is not None and reserve < 0:
        fail(f"--reserve must be >= 0 tokens, got {reserve}")
    if fallback_tokens < 0:
        fail(f"--fallback-tokens must be >= 0, got {fallback_tokens}")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        fail(f"--temperature must be a finite number >= 0, got {temperature}")
    params = {} if temperature is None else {"temperature": temperature}
    return _Batch(
        emit,
        model,
        make_preset(provider, reserve=reserve),
        check_template(template) if template is not None else DEFAULT_TEMPLATE,
        system,
        params,
        fallback_tokens,
        abandoned_out,
    )


def _allocate(
    curves: Any, total: int, policy: str, fallback_tokens: int, **kwargs: Any
) -> tuple[Any, int]:
    """The allocation, and the tokens held back so every abandoned query's fallback fits."""
    if fallback_tokens <= 0:
        from shadowprice import allocate

        return allocate(curves, total, policy=policy, **kwargs), 0
    from shadowprice.engine.planning import plan_budgets

    planned = plan_budgets(curves, total, policy, fallback_tokens=fallback_tokens, **kwargs)
    return planned.allocation, planned.reserve


def _emit(
    batch: _Batch,
    qf: QueryFile,
    ids: list[str],
    texts: list[str],
    result: Any,
    held_back: int,
) -> tuple[str, dict[str, Any]]:
    """Batch input lines for the funded queries; the abandoned are listed on stderr."""
    from shadowprice.engine.batchfiles import FALLBACK_REASON, batch_requests
    from shadowprice.engine.planning import build_items

    items = build_items(
        ids,
        texts,
        result.budgets.tolist(),
        qf.answers(),
        template=batch.template,
        system=batch.system,
    )
    lines = batch_requests(
        items,
        model=batch.model,
        preset=batch.preset,
        fallback_tokens=batch.fallback_tokens,
        params=batch.params,
    )
    if lines.abandoned:
        shown = ", ".join(lines.abandoned[:20]) + (" ..." if len(lines.abandoned) > 20 else "")
        where = f" (all in {batch.abandoned_out})" if batch.abandoned_out else ""
        note(f"{len(lines.abandoned)} abandoned queries have no request{where}: {shown}")
    if batch.abandoned_out is not None:
        write_atomic(
            batch.abandoned_out,
            "".join(
                json.dumps({"id": qid, "reason": FALLBACK_REASON}) + "\n" for qid in lines.abandoned
            ),
        )
    info = {
        "emit": batch.emit,
        "provider": batch.preset.provider,
        "requests": len(lines.lines),
        "fallback_requests": len(lines.fallback),
        "fallback_reserve": held_back,
        "batch_tokens": lines.tokens,
        "abandoned_ids": lines.abandoned,
    }
    return lines.jsonl(), info


def _merged(column: Any, cli: float | None, fill: float) -> Any:
    """Per-query column where a row gives it, else the command-line limit (else ``fill``)."""
    if column is None:
        return cli
    return np.where(np.isnan(column), fill if cli is None else cli, column)


def _records(ids: list[str], result: Any) -> list[dict[str, Any]]:
    budgets = result.budgets.tolist()
    funded = result.funded.tolist()
    samples = None if result.samples is None else result.samples.tolist()
    out = []
    for i, qid in enumerate(ids):
        rec: dict[str, Any] = {"id": qid, "budget": budgets[i], "funded": funded[i]}
        if samples is not None:
            rec["samples"] = samples[i]
        out.append(rec)
    return out


def _print_summary(s: dict[str, Any], stream: TextIO) -> None:
    """A small two-column rich table (plain aligned text when the stream is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    price = (
        "none (this policy sets no price)"
        if s["price"] is None
        else f"{s['price']:.6g} utility/token"
    )
    n = s["queries"]
    rows = [
        ("policy", f"{s['policy']} ({s['family']} curves from {s['curves']})"),
        ("queries", str(n)),
        ("budget", f"{s['budget']} tokens ({s['per_query']:.6g} per query)"),
        ("price", price),
        ("funded", f"{s['funded']} ({100 * s['funded'] / n:.1f}%)"),
        ("abandoned", f"{s['abandoned']} ({100 * s['abandoned'] / n:.1f}%)"),
        ("expected utility", f"{s['expected_utility']:.6g}"),
        ("spent", f"{s['spent']} tokens"),
        ("leftover", f"{s['leftover']} tokens"),
        ("status", str(s["status"])),
        ("message", s["message"]),
    ]
    if "emit" in s:
        rows.append(
            (
                s["emit"],
                f"{s['requests']} requests ({s['fallback_requests']} fallbacks, "
                f"{s['fallback_reserve']} tokens held back for them), at most "
                f"{s['batch_tokens']} tokens, fields of {s['provider']}",
            )
        )
    if "output" in s:
        rows.append(("output", s["output"]))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in rows:
        table.add_row(k, v)
    Console(file=stream, highlight=False, soft_wrap=False, width=100).print(table)
