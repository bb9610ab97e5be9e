"""Honest evaluation: replay allocations on traces, held-out splits, named policies, runner."""

from .policies import EVAL_POLICIES, ORACLE_LABEL, EvalPolicy, FitContext
from .replay import ReplayResult, bootstrap_ci, pass_at_k, replay
from .runner import evaluate
from .splits import kfold_queries, split_half
from .streams import POOLS, STREAMS, SyntheticStream, load_stream, make_stream

__all__ = [
    "EVAL_POLICIES",
    "ORACLE_LABEL",
    "POOLS",
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
    "replay",
    "split_half",
]
