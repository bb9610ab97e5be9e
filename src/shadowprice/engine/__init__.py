"""The execution path: send funded queries to an OpenAI-compatible endpoint under a budget.

The engine knows HTTP and token usage, nothing of prices: it takes a plan (query id, messages,
budget in tokens, gold answer) and returns graded, accounted results.

- :mod:`.driver`  the one driver: any policy against any :class:`Engine`, every token booked
- :mod:`.client`  async chat-completions client with retries that never double-charge
- :mod:`.simulated` the simulated engine (trace samples replayed on slots)
- :mod:`.run`     a run: resumable JSONL results, journal, summary (fixed caps, forcing,
  fallbacks); :mod:`.live` the live planner as a run
- :mod:`.forcing` s1-style answer forcing after a length stop
- :mod:`.grading` answer extraction and math-verify grading
- :mod:`.collect` sampling K traces per query into the evaluation schema
- :mod:`.local`   the bundled llama.cpp server (xllamacpp + packaged GGUF model)
- :mod:`.live_demo` a small GSM8K batch on a real engine, CLEAR vs uniform
"""

from __future__ import annotations

from .client import ChatClient, Completion, EngineError, Usage
from .driver import Driver, Engine, HttpEngine, PlanItem
from .grading import Grade, Grader, MathGrader, extract_answer, get_grader
from .live_demo import live_demo  # the function: it shadows its module's name here
from .run import (
    FixedPlan,
    RunConfig,
    RunReport,
    RunStateError,
    execute,
    execute_policy,
    prompt_messages,
    run_plan,
)
from .simulated import SimulatedEngine

__all__ = [
    "ChatClient",
    "Completion",
    "Driver",
    "Engine",
    "EngineError",
    "FixedPlan",
    "Grade",
    "Grader",
    "HttpEngine",
    "MathGrader",
    "PlanItem",
    "RunConfig",
    "RunReport",
    "RunStateError",
    "SimulatedEngine",
    "Usage",
    "execute",
    "execute_policy",
    "extract_answer",
    "get_grader",
    "live_demo",
    "prompt_messages",
    "run_plan",
]
