"""Honest evaluation: replay allocations on traces, held-out splits, named policies, runner.

The names below are loaded on first use, so reading the policy registry (``run`` does) does
not import the bench's plotting or the runner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported at once: its function ``replay`` has its module's name, and a submodule imported
# later would otherwise rebind the package attribute to the module.
from .replay import ReplayResult, bootstrap_ci, pass_at_k, replay

if TYPE_CHECKING:
    from .bench import run_bench
    from .policies import (
        CURVES,
        EVAL_POLICIES,
        ORACLE_LABEL,
        REFERENCES,
        EvalPolicy,
        FitContext,
        policy_info,
    )
    from .runner import evaluate
    from .splits import kfold_queries, split_half
    from .streams import POOLS, STREAMS, SyntheticStream, load_stream, make_stream

#: Where each public name lives.
_HOMES = {
    "run_bench": ".bench",
    **dict.fromkeys(
        (
            "CURVES",
            "EVAL_POLICIES",
            "ORACLE_LABEL",
            "REFERENCES",
            "EvalPolicy",
            "FitContext",
            "policy_info",
        ),
        ".policies",
    ),
    "evaluate": ".runner",
    **dict.fromkeys(("kfold_queries", "split_half"), ".splits"),
    **dict.fromkeys(
        ("POOLS", "STREAMS", "SyntheticStream", "load_stream", "make_stream"), ".streams"
    ),
}

__all__ = [
    "CURVES",
    "EVAL_POLICIES",
    "ORACLE_LABEL",
    "POOLS",
    "REFERENCES",
    "STREAMS",
    "EvalPolicy",
    "FitContext",
    "ReplayResult",
    "SyntheticStream",
    "bootstrap_ci",
    "evaluate",
    "kfold_queries",
    "load_stream",
    "make_stream",
    "pass_at_k",
    "policy_info",
    "replay",
    "run_bench",
    "split_half",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
