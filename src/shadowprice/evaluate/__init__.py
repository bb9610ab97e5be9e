"""Honest evaluation: replay allocations on traces, held-out splits, named policies, runner."""

from .policies import EVAL_POLICIES, ORACLE_LABEL, EvalPolicy, FitContext
from .replay import ReplayResult, bootstrap_ci, pass_at_k, replay
from .runner import evaluate
from .splits import kfold_queries, split_half

__all__ = [
    "EVAL_POLICIES",
    "ORACLE_LABEL",
    "EvalPolicy",
    "FitContext",
    "ReplayResult",
    "bootstrap_ci",
    "evaluate",
    "kfold_queries",
    "pass_at_k",
    "replay",
    "split_half",
]
