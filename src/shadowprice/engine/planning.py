"""Glue from an allocation to an executable plan: the one place the engine meets pricing.

The engine itself only sees per-query budgets. This module calls
:func:`shadowprice.allocate` (lazily, so the engine imports without it) and holds back the
small reserves that answer-forcing and fallbacks draw on, so the whole run fits the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..providers import Preset
from .grading import Grader, get_grader
from .live import LIVE_POLICY, LiveRunOptions, run_live
from .run import (
    DEFAULT_TEMPLATE,
    Executor,
    PlanItem,
    RunConfig,
    RunReport,
    check_template,
    prompt_messages,
    run_plan,
)


@dataclass
class PlannedBudgets:
    """Per-query budgets, the tokens held back for forcing/fallback, and the allocation."""

    budgets: np.ndarray
    reserve: int
    allocation: Any


def plan_budgets(
    curves: Any,
    budget: int,
    method: str = "clear",
    *,
    force_tokens: int = 0,
    fallback_tokens: int = 0,
    **allocate_kwargs: Any,
) -> PlannedBudgets:
    """Allocate ``budget`` over ``curves`` with ``method`` (a :func:`shadowprice.allocate`
    method), leaving room for forcing and fallbacks.

    With forcing on, each funded query may need ``force_tokens`` more; with fallbacks on, each
    abandoned query may need ``fallback_tokens``. The reserve depends on how many are funded,
    which depends on the reserve, so iterate to a fixed point (two or three rounds).
    """
    from shadowprice import allocate

    reserve = 0
    alloc = allocate(curves, budget, method, **allocate_kwargs)
    for _ in range(5):
        funded = int(np.count_nonzero(alloc.budgets))
        need = funded * force_tokens + (alloc.budgets.size - funded) * fallback_tokens
        if need <= reserve:
            break
        reserve = min(need, budget)
        alloc = allocate(curves, budget - reserve, method, **allocate_kwargs)
    return PlannedBudgets(np.asarray(alloc.budgets, dtype=np.int64), reserve, alloc)


def build_items(
    ids: Sequence[str],
    questions: Sequence[str],
    budgets: Sequence[int],
    golds: Sequence[str | None] | None = None,
    *,
    template: str = DEFAULT_TEMPLATE,
    system: str | None = None,
    reason: str = "abandoned by the allocation (threshold above what the price supports)",
) -> list[PlanItem]:
    """Plan items from parallel columns; budget 0 marks an abandoned query."""
    golds = golds if golds is not None else [None] * len(ids)
    return [
        PlanItem(
            id=str(i),
            messages=prompt_messages(q, template, system),
            budget=int(b),
            gold=None if g is None else str(g),
            reason="" if b > 0 else reason,
        )
        for i, q, b, g in zip(ids, questions, budgets, golds, strict=True)
    ]


def heuristic_tau(
    questions: Sequence[str], base: float = 60.0, per_word: float = 2.0
) -> np.ndarray:
    """A crude emergence-threshold guess from question length (demo use only).

    Real runs should pass measured or predicted thresholds (``tau`` column or a predictor).
    """
    return np.array([base + per_word * len(q.split()) for q in questions], dtype=float)


@dataclass(frozen=True)
class Batch:
    """The queries of a run, as parallel columns.

    Attributes
    ----------
    ids : list of str
        Unique query ids.
    questions : list of str
        Prompt texts (formatted with the run's template).
    answers : list of str or None
        Gold answers for grading (None where unknown).
    """

    ids: list[str]
    questions: list[str]
    answers: list[str | None]


def run_batch(
    batch: Batch,
    curves: Any,
    *,
    budget: int,
    endpoint: str,
    model: str,
    policy: str = "clear",
    out: str | Path | None = None,
    config: RunConfig | None = None,
    grader: Grader | str | None = "math",
    template: str = DEFAULT_TEMPLATE,
    system: str | None = None,
    api_key: str | None = None,
    timeout: float = 600.0,
    deadline: float | None = None,
    max_retries: int = 4,
    release_unsettled: bool = False,
    grid: Any = None,
    state: str | None = None,
    state_name: str = "run",
    live: LiveRunOptions | None = None,
    method: str | None = None,
    preset: Preset | None = None,
    executor: Executor | None = None,
) -> RunReport:
    """Price ``budget`` over a batch with ``policy`` and execute it on ``endpoint``.

    ``policy`` names the run (its records, summary and journal say it); ``method`` is the
    :func:`shadowprice.allocate` method that prices the curves (default: the policy's name,
    e.g. ``uniform``); the command line takes it from the policy registry
    (:attr:`shadowprice.evaluate.EvalPolicy.run_method`).

    ``policy="clear-live"`` (:data:`LIVE_POLICY`) runs the live planner: queries start as the
    price allows, tokens a finished query leaves go to the next ones, and a request that
    stops on its cap may be continued (``live``: how, and the most one query may generate);
    any other policy is a plan of fixed caps (:func:`shadowprice.allocate`) executed with
    optional answer forcing and fallbacks.

    Everything is validated before the first request: the template, the grader, the
    endpoint URL, timeouts and the allocation itself. The run is resumable through ``out``
    (see :func:`shadowprice.engine.run.execute`); ``state`` (``redis://HOST:PORT/DB``) keeps
    the budget in Redis under ``state_name``, shared by every worker that names it;
    ``preset`` and ``executor`` are :func:`~shadowprice.engine.run.run_plan`'s.

    Returns
    -------
    RunReport
        Final records (one per query) and the summary (accuracy, tokens used vs budget,
        settled and counted-unsettled tokens, errors).
    """
    config = config or RunConfig()
    config.validate()
    check_template(template)
    get_grader(grader)  # fail before spending anything on a grader that cannot load
    connection: dict[str, Any] = {
        "endpoint": endpoint,
        "model": model,
        "out": out,
        "config": config,
        "grader": grader,
        "api_key": api_key,
        "timeout": timeout,
        "deadline": deadline,
        "max_retries": max_retries,
        "release_unsettled": release_unsettled,
        "state": state,
        "state_name": state_name,
        "preset": preset,
        "executor": executor,
    }
    if policy == LIVE_POLICY or method == "live":
        if config.force_tokens or config.fallback_tokens:
            raise ValueError(
                "clear-live continues requests that stop on their cap instead of forcing an "
                "answer, and funds queries as it goes: drop answer forcing and fallbacks, or "
                "choose another policy"
            )
        items = build_items(
            batch.ids,
            batch.questions,
            [0] * len(batch.ids),
            batch.answers,
            template=template,
            system=system,
            reason="",
        )
        return run_live(items, curves, total_budget=budget, options=live, **connection)
    extra = {"grid": grid} if grid is not None else {}
    planned = plan_budgets(
        curves,
        budget,
        policy if method is None else method,
        force_tokens=config.force_tokens,
        fallback_tokens=config.fallback_tokens,
        **extra,
    )
    if not planned.allocation.success:
        raise ValueError(planned.allocation.message)
    items = build_items(
        batch.ids,
        batch.questions,
        planned.budgets.tolist(),
        batch.answers,
        template=template,
        system=system,
    )
    return run_plan(items, total_budget=budget, identity={"policy": policy}, **connection)
