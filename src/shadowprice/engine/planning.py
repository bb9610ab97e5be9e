"""Glue from an allocation to an executable plan: the one place the engine meets pricing.

The engine itself only sees per-query budgets. This module calls
:func:`shadowprice.allocate` (lazily, so the engine imports without it) and holds back the
small reserves that answer-forcing and fallbacks draw on, so the whole run fits the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .run import DEFAULT_TEMPLATE, PlanItem, prompt_messages


@dataclass
class PlannedBudgets:
    """Per-query budgets, the tokens held back for forcing/fallback, and the allocation."""

    budgets: np.ndarray
    reserve: int
    allocation: Any


def plan_budgets(
    curves: Any,
    budget: int,
    policy: str = "clear",
    *,
    force_tokens: int = 0,
    fallback_tokens: int = 0,
    **allocate_kwargs: Any,
) -> PlannedBudgets:
    """Allocate ``budget`` over ``curves``, leaving room for forcing and fallbacks.

    With forcing on, each funded query may need ``force_tokens`` more; with fallbacks on, each
    abandoned query may need ``fallback_tokens``. The reserve depends on how many are funded,
    which depends on the reserve, so iterate to a fixed point (two or three rounds).
    """
    from shadowprice import allocate

    reserve = 0
    alloc = allocate(curves, budget, policy, **allocate_kwargs)
    for _ in range(5):
        funded = int(np.count_nonzero(alloc.budgets))
        need = funded * force_tokens + (alloc.budgets.size - funded) * fallback_tokens
        if need <= reserve:
            break
        reserve = min(need, budget)
        alloc = allocate(curves, budget - reserve, policy, **allocate_kwargs)
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
