"""Budget forcing (s1-style): turn a length-truncated response into an answer.

When a response stops on the length limit, one short follow-up turn asks for the final answer
only, with a small fixed allowance. The allowance comes out of the same ledger as everything
else, so forcing can never push a run past its budget; planners reserve
``force_tokens`` per funded query up front (see :func:`forcing_reserve`).
"""

from __future__ import annotations

#: The follow-up turn. Portable across servers (no assistant-prefill support needed).
FORCE_PROMPT = (
    "Time is up: stop reasoning now. Reply with only your final answer (a number or "
    "expression) inside \\boxed{}."
)

#: Default allowance of the follow-up: enough for a boxed number or short expression.
DEFAULT_FORCE_TOKENS = 24

#: Instruction for the cheap direct-answer fallback given to abandoned queries.
FALLBACK_PROMPT = (
    "Answer immediately without showing any work: reply with only the final answer "
    "(a number or expression) inside \\boxed{}."
)


def forcing_messages(
    messages: list[dict[str, str]], partial: str, prompt: str = FORCE_PROMPT
) -> list[dict[str, str]]:
    """The conversation so far, the truncated reply, and the request for the answer."""
    return [
        *messages,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": prompt},
    ]


def fallback_messages(
    messages: list[dict[str, str]], prompt: str = FALLBACK_PROMPT
) -> list[dict[str, str]]:
    """The query with an instruction to answer directly (for abandoned queries)."""
    if not messages:
        return [{"role": "user", "content": prompt}]
    *head, last = messages
    return [*head, {**last, "content": f"{last['content']}\n\n{prompt}"}]


def forcing_reserve(n_funded: int, force_tokens: int) -> int:
    """Tokens to hold back from allocation so every funded query can be forced once."""
    return max(0, n_funded) * max(0, force_tokens)
