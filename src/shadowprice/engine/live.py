"""``run --policy clear-live``: the live planner as a run plan of the one driver.

The planner (:class:`~shadowprice.live.ClearLive`) decides; the driver
(:mod:`~shadowprice.engine.driver`) does the I/O, as for every policy:

- whenever fewer than ``concurrency`` requests are in flight, ask the planner what to start
  given the tokens the ledger has available, **reserve** the request's ``max_tokens`` in the
  ledger (with an output file: the write-ahead journal, fsynced before the request leaves)
  and send it;
- when a request ends, **settle** its reservation with the completion tokens the server
  reports (what it did not use returns to the ledger), and tell the planner, which re-clears
  the price; a request that stopped on its cap may be **continued**: the same conversation
  with the partial output as a final assistant message, for more tokens (never a restart);
- failed requests are settled with what they may have been billed and retried by the
  planner; whatever a request generated is charged, so the budget holds even if a server
  keeps generating for a client that gave up (llama.cpp stops a slot within a fraction of a
  second of the disconnect; budget correctness never relies on that).

Continuation needs an engine that continues a final assistant message: llama.cpp's server
does it by default (its response repeats the prefix, which is stripped), vLLM and SGLang with
``continue_final_message``. ``continuation="auto"`` asks the endpoint what it is (llama.cpp's
``/props``, vLLM's ``/version``) and turns extension off for anything else (hosted APIs answer
a trailing assistant message with a new message instead).

Resuming: the journal gives back everything spent (requests a crash left in flight count as
spent), finished queries are not sent again, and the planner runs on what is left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..live.base import LivePolicy
from .client import CONTINUATIONS, Continuation
from .driver import VLLM_CONTINUE, Driver, PlanItem
from .results import RunFiles
from .run import RunConfig, RunReport, plan_identity, run_plan

__all__ = [
    "CONTINUATIONS",
    "VLLM_CONTINUE",
    "Continuation",
    "LivePlan",
    "LiveRunOptions",
    "live_plan",
    "run_live",
]

#: The live policy's name (``run --policy``).
LIVE_POLICY = "clear-live"


@dataclass
class LiveRunOptions:
    """Settings of a live run beyond :class:`~shadowprice.engine.run.RunConfig`.

    Attributes
    ----------
    continuation : {'auto', 'prefill', 'vllm', 'off'}
        How a request that stopped on its cap is continued (see the module docstring);
        ``off`` disables extension.
    max_tokens : int, optional
        Most tokens one query may generate over all its requests (the model's context
        window less the prompt, a server limit).
    calibrate : bool
        Let the planner re-fit the length scale and spread from what it sees.
    levels : int
        Budgets on the planner's grid.
    step : float, optional
        Go toward each cap in steps (see :class:`~shadowprice.live.LiveConfig`): smaller
        reservations, more requests at once, at the risk of queries left half done when
        tokens run short. Default: the full cap at once.
    """

    continuation: Continuation = "auto"
    max_tokens: int | None = None
    calibrate: bool = True
    levels: int = 96
    step: float | None = None

    def __post_init__(self) -> None:
        if self.continuation not in ("auto", "prefill", "vllm", "off"):
            raise ValueError(
                f"continuation must be one of auto, prefill, vllm, off, got {self.continuation!r}"
            )
        if self.max_tokens is not None and not (
            isinstance(self.max_tokens, int) and self.max_tokens >= 1
        ):
            raise ValueError(f"max_tokens must be a whole number >= 1, got {self.max_tokens!r}")


@dataclass
class LivePlan:
    """The live planner as a run plan (:class:`~shadowprice.engine.run.RunPlan`).

    Parameters
    ----------
    curves : UtilityCurve
        One curve per query, in the order of ``ids``, ideally with a length model (spend).
    ids : sequence of str
        The query ids, in the order of ``curves``.
    options : LiveRunOptions
    previous : mapping, optional
        The planner's part of an earlier summary, reported again when nothing is left to run.
    """

    curves: Any
    ids: Sequence[str]
    options: LiveRunOptions
    previous: Mapping[str, Any] | None = None
    name: str | None = LIVE_POLICY
    unsent: str = "not funded at the live price"

    @property
    def continuation(self) -> Continuation:
        return self.options.continuation

    def identity(self, items: Sequence[PlanItem]) -> dict[str, Any]:
        return {"queries": plan_identity(items)["queries"]}

    def policy(
        self, items: Sequence[PlanItem], available: int, continuation: Continuation
    ) -> LivePolicy:
        """The live planner over ``items`` (the queries still to run), with ``available``
        tokens."""
        from ..live import ClearLive, LiveConfig

        row = {qid: i for i, qid in enumerate(self.ids)}
        rows = np.asarray([row[item.id] for item in items], dtype=np.int64)
        o = self.options
        return ClearLive(
            self.curves[rows],
            available,
            LiveConfig(
                levels=o.levels,
                max_tokens=o.max_tokens,
                extend=continuation != "off",
                calibrate=o.calibrate,
                step=o.step,
            ),
        )

    def report(
        self, policy: LivePolicy | None, continuation: Continuation, driver: Driver | None
    ) -> dict[str, Any]:
        if policy is None:  # a finished run re-run has no planner
            return dict(self.previous or {})
        from ..live import ClearLive

        assert isinstance(policy, ClearLive)
        return {"continuation": continuation, "live": policy.summary()}


def _check_live(
    items: Sequence[PlanItem], curves: Any, config: RunConfig, options: LiveRunOptions
) -> None:
    config.validate()
    if options.continuation not in CONTINUATIONS:
        raise ValueError(
            f"continuation must be one of {', '.join(CONTINUATIONS)}, got {options.continuation!r}"
        )
    if config.force_tokens or config.fallback_tokens:
        raise ValueError(
            "clear-live continues capped requests instead of forcing an answer, and funds "
            "queries as it goes: leave answer forcing and fallbacks off"
        )
    if curves.n != len(items):
        raise ValueError(f"{curves.n} curves for {len(items)} queries: give one per query")


def _previous_session(files: RunFiles | None) -> dict[str, Any]:
    """The planner's part of the last summary (a finished run re-run has no planner)."""
    if files is None or not files.summary.exists():
        return {}
    try:
        previous = json.loads(files.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(previous, dict):
        return {}
    return {k: previous[k] for k in ("continuation", "live") if k in previous}


def run_live(
    items: Sequence[PlanItem],
    curves: Any,
    *,
    options: LiveRunOptions | None = None,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    **run: Any,
) -> RunReport:
    """Run ``items`` with the live planner on ``curves`` (one per item):
    :func:`~shadowprice.engine.run.run_plan` with a :class:`LivePlan`; ``run`` are its other
    keyword arguments (``endpoint``, ``model``, ``total_budget``, ...).

    The items' ``budget`` is ignored: the planner sets caps as it goes. ``config`` sets the
    concurrency, sampling parameters and progress bar; answer forcing and fallbacks are not
    used (capped requests are continued instead).
    """
    return run_plan(
        items, plan=live_plan(items, curves, out, config, options), out=out, config=config, **run
    )


def live_plan(
    items: Sequence[PlanItem],
    curves: Any,
    out: str | Path | None = None,
    config: RunConfig | None = None,
    options: LiveRunOptions | None = None,
) -> LivePlan:
    """The :class:`LivePlan` of ``items`` and their ``curves``, checked (and, for a run
    re-run with ``out``, what its planner reported last time)."""
    options = options or LiveRunOptions()
    _check_live(items, curves, config or RunConfig(), options)
    files = RunFiles.of(out) if out is not None else None
    return LivePlan(curves, [item.id for item in items], options, _previous_session(files))
