"""Per-row budgets for Ray Data LLM processors (``ray.data.llm.build_processor``).

After :func:`~shadowprice.integrations.ray.allocate_dataset`, every row carries its
``max_tokens``. The processors take per-row generation settings:

* ``vLLMEngineProcessorConfig`` (and SGLang): a ``sampling_params`` dict on each row, next to
  ``messages`` — :func:`vllm_preprocess`;
* ``HttpRequestProcessorConfig``: the request body in a ``payload`` column (an OpenAI chat
  completions body) — :func:`http_preprocess`.

Abandoned rows (``funded`` False, ``max_tokens`` 0) must not be sent: filter them first
(``ds.filter(expr=ray.data.expressions.col("funded"))``); the helpers refuse them rather
than send a request with no budget.

Nothing here imports Ray: the functions work on plain row dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Row = Mapping[str, Any]


def _budget(row: Row) -> int:
    if "max_tokens" not in row:
        raise ValueError(
            "the row has no max_tokens column: allocate the dataset first (allocate_dataset)"
        )
    tokens = int(row["max_tokens"])
    if tokens <= 0 or not row.get("funded", True):
        raise ValueError(
            f"row abandoned by the allocation (max_tokens {tokens}): filter the dataset on "
            f"its 'funded' column before the processor"
        )
    return tokens


def sampling_params(row: Row, **params: Any) -> dict[str, Any]:
    """The row's sampling parameters: ``max_tokens`` from the allocation, plus ``params``.

    Parameters
    ----------
    row : mapping
        An allocated row (``max_tokens``, ``funded``).
    **params
        Other sampling parameters shared by every row (``temperature=0.6``, ...); a
        ``max_tokens`` here is refused (the allocation sets it).

    Returns
    -------
    dict
        E.g. ``{"max_tokens": 412, "temperature": 0.6}``.
    """
    if "max_tokens" in params:
        raise ValueError("max_tokens comes from the allocation: do not pass it in params")
    return {**params, "max_tokens": _budget(row)}


def _messages(row: Row, prompt_column: str, system: str | None) -> list[dict[str, str]]:
    if prompt_column not in row:
        raise ValueError(
            f"the row has no {prompt_column!r} column for the prompt; name the column with "
            f"prompt_column="
        )
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": str(row[prompt_column])}]


def chat_payload(
    row: Row,
    *,
    model: str,
    prompt_column: str = "question",
    system: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """An OpenAI chat completions request body for the row, capped at its budget.

    Parameters
    ----------
    row : mapping
        An allocated row with the prompt in ``prompt_column``.
    model : str
        The served model's name.
    prompt_column : str
        Column with the user's message.
    system : str, optional
        A system message put first.
    **params
        Other request fields (``temperature``, ``seed``, ...).

    Returns
    -------
    dict
        ``{"model": ..., "messages": [...], "max_tokens": n, **params}``.
    """
    return {
        "model": model,
        "messages": _messages(row, prompt_column, system),
        **sampling_params(row, **params),
    }


def http_preprocess(
    model: str, *, prompt_column: str = "question", system: str | None = None, **params: Any
) -> Callable[[Row], dict[str, Any]]:
    """A ``preprocess`` for ``build_processor(HttpRequestProcessorConfig(...), ...)``.

    Each row keeps its columns and gains ``payload``, the request body of
    :func:`chat_payload` (the processor posts it to its ``url``).
    """

    def preprocess(row: Row) -> dict[str, Any]:
        body = chat_payload(row, model=model, prompt_column=prompt_column, system=system, **params)
        return {**row, "payload": body}

    return preprocess


def vllm_preprocess(
    *, prompt_column: str = "question", system: str | None = None, **params: Any
) -> Callable[[Row], dict[str, Any]]:
    """A ``preprocess`` for ``build_processor(vLLMEngineProcessorConfig(...), ...)``.

    Each row keeps its columns and gains ``messages`` and ``sampling_params`` (its
    ``max_tokens`` and ``params``), which the engine applies to that row alone.
    """

    def preprocess(row: Row) -> dict[str, Any]:
        return {
            **row,
            "messages": _messages(row, prompt_column, system),
            "sampling_params": sampling_params(row, **params),
        }

    return preprocess
