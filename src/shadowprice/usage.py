"""What a completion cost: the one counting rule for every response the package reads.

A budget holds only if nothing generated escapes the count, so every reader of a model
server's answer (the batch client of ``run`` and ``collect``, the gateway's relay, batch
output files) charges by the same rule:

    **what cannot be counted is charged in full; never under-count.**

For one request sent with an allowance of ``A`` tokens (its ``max_tokens``):

=====================================================  =====================================
the answer                                             tokens charged
=====================================================  =====================================
a completion with ``usage.completion_tokens = n``      ``n`` (more than ``A``: an overrun,
(a plausible integer)                                  charged as reported)
... that stopped on its cap (``finish_reason:         at least ``A`` (the cap was reached,
length``)                                              whatever the count says)
... a stream                                           at least the chunks with text seen
usage missing, not an integer, negative, absurd (see   ``A`` (llama.cpp's own
:func:`absurd`), below the chunks streamed; a count   ``timings.predicted_n`` counts as a
of 0 for an answer with text                           report where usage is missing)
a body that is not a completion, a stream cut before   ``A``
its end (no ``[DONE]``, a read error, the client
gone), a timeout after the request was sent
an HTTP error after the request reached the server     ``A``, except the statuses in
                                                       :data:`NOT_GENERATED` (refused before
                                                       generating: 0)
a request that reached no server (connection refused)  0
=====================================================  =====================================

Chunks are a floor, not a count: servers may put several tokens in one chunk. What the rule
cannot catch is a server that reports fewer tokens than it generated for a whole (unstreamed)
answer that stopped on its own; the README states that boundary.

:func:`count_completion` applies the rule to a whole response body, :class:`StreamMeter` to a
server-sent-event stream as it passes, :func:`error_charge` to an HTTP error status. No I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ABSURD_FACTOR",
    "ABSURD_FLOOR",
    "NOT_GENERATED",
    "Count",
    "StreamMeter",
    "absurd",
    "completion_problem",
    "count_completion",
    "error_charge",
    "read_usage",
]

#: A reported count above this many times the allowance, and above :data:`ABSURD_FLOOR`, is
#: not believed (a broken counter): charging it would block the budget for nothing.
ABSURD_FACTOR = 1000
#: Counts up to this many tokens are always believed, whatever the allowance (a server that
#: ignored a tiny cap may really have written this much).
ABSURD_FLOOR = 1 << 20

#: HTTP statuses that mean the server refused the request before generating: rate limited
#: (429), overloaded (503; 529 is Anthropic's). Any other error after the request reached a
#: server may come after tokens were generated.
NOT_GENERATED = frozenset({429, 503, 529})


@dataclass(frozen=True)
class Count:
    """Tokens one response is charged, and why.

    Attributes
    ----------
    tokens : int
        Completion tokens to charge (>= 0; above the allowance only when the server reported
        generating more).
    reported : int or None
        The server's own count, when it gave a believable one.
    finish_reason : str
        The server's finish reason (``unknown`` when absent; ``length``: stopped on its cap).
    prompt_tokens : int
        Prompt tokens the server reported (0 when it did not).
    reasoning_tokens : int
        Reasoning tokens the server reported inside the completion tokens (0 when it did not).
    problem : str
        Why the server's count could not be used as is ('' when it could): the reason the
        response is charged more than its report.
    """

    tokens: int
    reported: int | None
    finish_reason: str = "unknown"
    prompt_tokens: int = 0
    reasoning_tokens: int = 0
    problem: str = ""

    @property
    def trusted(self) -> bool:
        """Charged exactly what the server reported."""
        return not self.problem and self.reported == self.tokens


def absurd(reported: int, allowance: int) -> bool:
    """Whether a reported count is past belief: more than :data:`ABSURD_FACTOR` times the
    allowance and more than :data:`ABSURD_FLOOR` tokens."""
    return reported > max(ABSURD_FACTOR * max(allowance, 1), ABSURD_FLOOR)


def _count(value: Any) -> int | None:
    """A non-negative whole number (an integral float too), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value < 0 or value != int(value):  # NaN, negative, fractional
        return None
    return int(value)


def read_usage(body: dict[str, Any], allowance: int) -> tuple[int | None, int, int, str]:
    """The server's own counts in a response (or a stream's usage chunk).

    Returns
    -------
    completion : int or None
        ``usage.completion_tokens`` (else llama.cpp's ``timings.predicted_n``); None when
        neither is a believable count.
    prompt, reasoning : int
        ``usage.prompt_tokens`` and ``usage.completion_tokens_details.reasoning_tokens`` (0
        where missing or unreadable).
    problem : str
        What was wrong with a usage that was present ('' when nothing, or when it was absent).
    """
    usage = body.get("usage")
    problem = ""
    completion: int | None = None
    prompt = reasoning = 0
    if isinstance(usage, dict):
        raw = usage.get("completion_tokens")
        completion = _count(raw)
        if raw is not None and completion is None:
            problem = f"usage.completion_tokens = {raw!r:.40} is not a non-negative integer"
        elif completion is not None and absurd(completion, allowance):
            problem = f"usage.completion_tokens = {completion} for an allowance of {allowance}"
            completion = None
        prompt = _count(usage.get("prompt_tokens")) or 0
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict):
            raw_reasoning = details.get("reasoning_tokens")
            reasoning = _count(raw_reasoning) or 0
            if raw_reasoning is not None and _count(raw_reasoning) is None:
                problem = problem or (
                    "usage.completion_tokens_details.reasoning_tokens = "
                    f"{raw_reasoning!r:.40} is not a non-negative integer"
                )
        elif details is not None:
            problem = problem or "usage.completion_tokens_details is not an object"
    elif usage is not None:
        problem = f"usage is a JSON {type(usage).__name__}, not an object"
    if not completion:  # missing, or 0: llama.cpp's own count where it has one
        timings = body.get("timings")
        if isinstance(timings, dict):
            predicted = _count(timings.get("predicted_n"))
            if predicted and not absurd(predicted, allowance):
                completion = predicted
    return completion, prompt, reasoning, problem


def completion_problem(body: Any) -> str:
    """Why ``body`` is not a chat or text completion ('' when it is one).

    A completion is a JSON object whose ``choices`` is a non-empty list of objects, each with
    a ``message`` object (chat) or a ``text`` string (text completions).
    """
    if not isinstance(body, dict):
        return f"the body is a JSON {type(body).__name__}, not an object"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return f"choices is {choices!r:.60}, not a non-empty list"
    for k, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return f"choices[{k}] is a JSON {type(choice).__name__}, not an object"
        message = choice.get("message")
        if not isinstance(message, dict) and not isinstance(choice.get("text"), str):
            return f"choices[{k}] has neither a message object nor a text string"
    return ""


def _answer_text(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    if isinstance(message, dict):
        parts = (message.get(k) for k in ("content", "reasoning_content", "reasoning"))
        return "".join(p for p in parts if isinstance(p, str))
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _charge(
    allowance: int, reported: int | None, finish: str, floor: int, problem: str
) -> tuple[int, str]:
    """The rule itself: (tokens to charge, why more than reported)."""
    if reported is not None and absurd(reported, allowance):
        reported, problem = None, f"{reported} tokens reported for an allowance of {allowance}"
    elif reported is not None and reported < floor:
        reported, problem = None, f"{reported} tokens reported for {floor} chunks streamed"
    if reported is None:
        return max(allowance, floor), problem or "no usage reported"
    if finish == "length" and reported < allowance:
        return allowance, problem or "stopped on its cap with fewer tokens reported"
    return reported, problem


def count_completion(body: Any, allowance: int) -> Count:
    """Tokens a whole (unstreamed) response is charged (see the module docstring).

    Parameters
    ----------
    body : object
        The parsed JSON body of a 200 response.
    allowance : int
        The ``max_tokens`` the request was sent with.

    Returns
    -------
    Count
        ``problem`` is set when the body is not a completion (charged ``allowance``) or its
        usage could not be used as reported.
    """
    shape = completion_problem(body)
    if shape:
        return Count(allowance, None, "error", problem=shape)
    choices = body["choices"]
    finish = str(choices[0].get("finish_reason") or "unknown")
    reported, prompt, reasoning, problem = read_usage(body, allowance)
    if reported == 0 and any(_answer_text(c) for c in choices):
        reported, problem = None, problem or "usage says 0 tokens for an answer with text"
    tokens, why = _charge(allowance, reported, finish, 0, problem)
    return Count(tokens, reported, finish, prompt, reasoning, why)


def error_charge(status: int, allowance: int) -> int:
    """Tokens an HTTP error response is charged: 0 for a refusal before generating (4xx but
    408, and :data:`NOT_GENERATED`), else the whole allowance."""
    if status in NOT_GENERATED or (400 <= status < 500 and status != 408):
        return 0
    return allowance


@dataclass
class StreamMeter:
    """Counts a chat/completions server-sent-event stream as it is relayed.

    Feed it the raw bytes as they arrive; it returns the complete events to pass on, and
    :meth:`count` applies the counting rule once the stream is over.

    Parameters
    ----------
    drop_usage : bool
        Do not pass on a usage-only chunk (one the relay asked for but its client did not).
    max_event : int
        Bytes one event may take before the stream is called unreadable (:attr:`oversized`):
        a server that never ends an event must not fill the reader's memory.
    hold_done : bool
        Do not pass on ``[DONE]`` (a relay that ends the stream itself, after checking it).

    Events that cannot be read (not JSON objects, or ``error`` events) are counted in
    :attr:`unreadable` and not passed on.

    Attributes
    ----------
    chunks : int
        Chunks with generated text (at least one token each).
    reported : int or None
        ``completion_tokens`` of the stream's usage chunk, when it came with a believable one.
    finish_reason : str
    done : bool
        ``[DONE]`` seen.
    unreadable : int
        Data lines that were not JSON objects, or carried an ``error``: the stream cannot be
        counted.
    """

    drop_usage: bool = False
    max_event: int = 1 << 22
    hold_done: bool = False
    chunks: int = 0
    reported: int | None = None
    finish_reason: str = "unknown"
    done: bool = False
    unreadable: int = 0
    prompt_tokens: int = 0
    reasoning_tokens: int = 0
    problem: str = ""
    _buffer: bytes = b""
    _allowance: int = 0

    def feed(self, data: bytes) -> bytes:
        """Take raw bytes from upstream; return the complete events to pass on."""
        self._buffer += data
        out: list[bytes] = []
        while True:
            cut = self._buffer.find(b"\n\n")
            if cut < 0:
                break
            event, self._buffer = self._buffer[: cut + 2], self._buffer[cut + 2 :]
            if self._event(event):
                out.append(event)
        return b"".join(out)

    @property
    def oversized(self) -> bool:
        """An event longer than ``max_event`` is pending (stop reading: charge in full)."""
        return len(self._buffer) > self.max_event

    def flush(self) -> bytes:
        """Whatever is left when the upstream stream ends (an unterminated last event)."""
        rest, self._buffer = self._buffer, b""
        if rest.strip() and self._event(rest):
            return rest
        return b""

    def count(self, allowance: int, *, complete: bool = True) -> Count:
        """Tokens the stream is charged; ``complete=False`` when it did not run to its end
        (a fault, the client gone): then the whole allowance, as nobody saw what the server
        went on to generate."""
        if not complete or not self.done or self.unreadable:
            why = (
                "the stream was cut before its end"
                if not complete or not self.done
                else f"{self.unreadable} stream events could not be read"
            )
            return Count(
                max(allowance, self.chunks, self.reported or 0),
                self.reported,
                self.finish_reason,
                self.prompt_tokens,
                self.reasoning_tokens,
                why,
            )
        tokens, why = _charge(
            allowance, self.reported, self.finish_reason, self.chunks, self.problem
        )
        return Count(
            tokens,
            self.reported,
            self.finish_reason,
            self.prompt_tokens,
            self.reasoning_tokens,
            why,
        )

    def _event(self, event: bytes) -> bool:
        """Account for one event; False to drop it."""
        keep = True
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                keep = keep and not self.hold_done
                continue
            try:
                chunk = json.loads(payload)
            except (ValueError, RecursionError):
                chunk = None
            keep = self.feed_chunk(chunk) and keep
        return keep

    def feed_chunk(self, chunk: object) -> bool:
        """Account for one chunk a client library has parsed already (an OpenAI chunk as a
        dict); False when it is not to be passed on (an ``error`` chunk, anything but a dict:
        both counted in :attr:`unreadable`, or a usage-only chunk with ``drop_usage``)."""
        if not isinstance(chunk, dict) or "error" in chunk:
            self.unreadable += 1
            return False
        return self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> bool:
        usage = chunk.get("usage")
        if isinstance(usage, dict) or "timings" in chunk:
            # The allowance is unknown while streaming: the absurd-count check is in count().
            reported, prompt, reasoning, problem = read_usage(chunk, 1 << 62)
            if reported is not None:
                self.reported = reported
            self.prompt_tokens = prompt or self.prompt_tokens
            self.reasoning_tokens = reasoning or self.reasoning_tokens
            self.problem = problem or self.problem
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return not (self.drop_usage and isinstance(usage, dict))
        for c in choices:
            if not isinstance(c, dict):
                self.unreadable += 1
                continue
            d = c.get("delta")
            delta: dict[str, Any] = d if isinstance(d, dict) else {}
            text = c.get("text") or delta.get("content") or delta.get("reasoning_content")
            if text or delta.get("reasoning") or delta.get("tool_calls"):
                self.chunks += 1
            if c.get("finish_reason"):
                self.finish_reason = str(c["finish_reason"])
        return True
