"""The execution path: send funded queries to an OpenAI-compatible endpoint under a budget.

The engine knows HTTP and token usage, nothing of prices: it takes a plan (query id, messages,
budget in tokens, gold answer) and returns graded, accounted results.

- :mod:`.client`  async chat-completions client with retries that never double-charge
- :mod:`.run`     bounded-concurrency execution, resumable JSONL results, summary
- :mod:`.forcing` s1-style answer forcing after a length stop
- :mod:`.grading` answer extraction and math-verify grading
- :mod:`.collect` sampling K traces per query into the evaluation schema
- :mod:`.local`   the bundled llama.cpp server (xllamacpp + packaged GGUF model)
"""

from __future__ import annotations

from typing import Any

from .client import ChatClient, Completion, EngineError, Usage
from .grading import Grade, Grader, MathGrader, extract_answer, get_grader
from .run import (
    Executor,
    PlanItem,
    RunConfig,
    RunReport,
    RunStateError,
    execute,
    prompt_messages,
    run_plan,
)


def live_demo(*args: Any, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Small real-engine batch, CLEAR vs uniform (see :func:`.demo.live_demo`)."""
    from .demo import live_demo as _live_demo

    return _live_demo(*args, **kwargs)


__all__ = [
    "ChatClient",
    "Completion",
    "EngineError",
    "Executor",
    "Grade",
    "Grader",
    "MathGrader",
    "PlanItem",
    "RunConfig",
    "RunReport",
    "RunStateError",
    "Usage",
    "execute",
    "extract_answer",
    "get_grader",
    "live_demo",
    "prompt_messages",
    "run_plan",
]
