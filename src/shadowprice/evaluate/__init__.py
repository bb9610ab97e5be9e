"""Honest evaluation: replay allocations on traces, held-out splits, named policies, runner."""

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
from .replay import ReplayResult, bootstrap_ci, pass_at_k, replay
from .runner import evaluate
from .splits import kfold_queries, split_half
from .streams import POOLS, STREAMS, SyntheticStream, load_stream, make_stream

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
