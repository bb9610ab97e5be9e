"""The execution path: send funded queries to an OpenAI-compatible endpoint under a budget.

The engine knows HTTP and token usage, nothing of prices: it takes a plan (query id, messages,
budget in tokens, gold answer) and returns graded, accounted results.

- :mod:`.client`  async chat-completions client with retries that never double-charge
- :mod:`.run`     bounded-concurrency execution, resumable JSONL results, summary
- :mod:`.forcing` s1-style answer forcing after a length stop
- :mod:`.grading` answer extraction and math-verify grading
- :mod:`.collect` sampling K traces per query into the evaluation schema
- :mod:`.local`   the bundled llama.cpp server (xllamacpp + packaged GGUF model)
- :mod:`.live_demo` a small GSM8K batch on a real engine, CLEAR vs uniform
"""

from __future__ import annotations

from .client import ChatClient, Completion, EngineError, Usage
from .grading import Grade, Grader, MathGrader, extract_answer, get_grader
from .live_demo import live_demo  # the function: it shadows its module's name here
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
