"""Forwarding one granted request upstream and measuring what it generated.

- :func:`upstream_body`: the client's body with the allowance written into every field the
  upstream may read (``max_tokens``, ``max_completion_tokens``, a thinking budget,
  ``reasoning_effort``), and usage requested in streams.
- :func:`completion_tokens`: tokens of a whole response (the server's ``usage``; the full
  allowance where it is missing or implausible: never under-count).
- :class:`StreamMeter`: parses a server-sent-event stream as it passes through, counts content
  chunks where usage is missing, drops the usage chunk the client did not ask for.
- :class:`MeteredStream`: the ASGI response that relays an upstream stream through a meter and,
  however the stream ends, closes the upstream response and reports what was generated once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

__all__ = ["MeteredStream", "StreamMeter", "completion_tokens", "prompt_text", "upstream_body"]


def prompt_text(body: dict[str, Any]) -> str:
    """The text the predictor reads: the last user message (chat) or the prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return _content_text(m.get("content"))
        return _content_text(messages[-1].get("content")) if messages else ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def upstream_body(
    body: dict[str, Any],
    allowance: int,
    *,
    token_param: str = "both",
    thinking_field: str | None = None,
    effort_levels: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A copy of ``body`` that asks the upstream for at most ``allowance`` tokens."""
    out = dict(body)
    if token_param in ("both", "max_tokens"):
        out["max_tokens"] = allowance
    else:
        out.pop("max_tokens", None)
    if token_param in ("both", "max_completion_tokens"):
        out["max_completion_tokens"] = allowance
    else:
        out.pop("max_completion_tokens", None)
    if thinking_field:
        out[thinking_field] = allowance
    if effort_levels is not None:
        low, medium = effort_levels
        out["reasoning_effort"] = (
            "low" if allowance <= low else "medium" if allowance <= medium else "high"
        )
    if out.get("stream"):
        opts = dict(out.get("stream_options") or {})
        opts["include_usage"] = True
        out["stream_options"] = opts
    return out


def completion_tokens(body: Any, allowance: int) -> tuple[int, str, bool]:
    """(tokens to charge, finish reason, trusted) of a whole response.

    The server's ``usage.completion_tokens`` where it is a plausible integer; otherwise the
    full allowance (flagged untrusted): a response we cannot read may still have cost that.
    """
    if not isinstance(body, dict):
        return allowance, "error", False
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    finish = str(first.get("finish_reason") or "unknown") if isinstance(first, dict) else "unknown"
    usage = body.get("usage")
    n = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return n, finish, True
    timings = body.get("timings")  # llama.cpp reports its own count here
    if isinstance(timings, dict) and isinstance(timings.get("predicted_n"), int):
        return int(timings["predicted_n"]), finish, False
    return allowance, finish, False


@dataclass
class StreamMeter:
    """Counts a chat/completions event stream as it is relayed.

    Attributes
    ----------
    forward_usage : bool
        The client asked for usage (``stream_options.include_usage``); otherwise the usage
        chunk the gateway asked for is not passed on.
    chunks : int
        Chunks with generated text (about one token each on vLLM, SGLang and llama.cpp).
    usage : int or None
        ``completion_tokens`` from the stream's usage chunk, when it came.
    finish_reason : str
    done : bool
        ``[DONE]`` seen.
    """

    forward_usage: bool = False
    chunks: int = 0
    usage: int | None = None
    finish_reason: str = "unknown"
    done: bool = False
    _buffer: bytes = b""

    @property
    def tokens(self) -> int:
        """Tokens to charge: the server's count, or the chunks counted (at least)."""
        if self.usage is None:
            return self.chunks
        return max(self.usage, 0)

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

    def flush(self) -> bytes:
        """Whatever is left when the upstream stream ends (an unterminated last event)."""
        rest, self._buffer = self._buffer, b""
        if rest.strip() and self._event(rest):
            return rest
        return b""

    def _event(self, event: bytes) -> bool:
        """Account for one event; False to drop it."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue  # not JSON: passed on untouched, counts nothing
            if isinstance(chunk, dict) and not self._chunk(chunk):
                return False
        return True

    def _chunk(self, chunk: dict[str, Any]) -> bool:
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage = int(usage["completion_tokens"])
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return self.forward_usage or not isinstance(usage, dict)
        c: dict[str, Any] = choices[0] if isinstance(choices[0], dict) else {}
        d = c.get("delta")
        delta: dict[str, Any] = d if isinstance(d, dict) else {}
        text = c.get("text") or delta.get("content") or delta.get("reasoning_content")
        if text or delta.get("reasoning"):
            self.chunks += 1
        if c.get("finish_reason"):
            self.finish_reason = str(c["finish_reason"])
        return True


#: Called once when a relayed stream ends: (tokens, finish reason, fault or None).
StreamEnd = Callable[[int, str, "str | None"], Awaitable[None]]


class MeteredStream:
    """ASGI response relaying an upstream event stream through a :class:`StreamMeter`.

    Whatever ends the stream (its end, an upstream fault, the client going away), ``on_end``
    is called exactly once with the tokens generated, the finish reason (``disconnect`` when
    the client left) and the fault, if any; it closes the upstream response (on a fault or a
    disconnect, its connection: the upstream stops generating). A fault is also sent to the
    client as a last error event.

    Parameters
    ----------
    chunks : async iterator of bytes
        The upstream's body as it arrives (status 200); any exception it raises is a fault.
    headers : dict of str to str
        Headers to add to the client's response.
    meter : StreamMeter
    on_end : callable
        ``await on_end(tokens, finish_reason, fault)``, shielded from cancellation.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str],
        meter: StreamMeter,
        on_end: StreamEnd,
    ) -> None:
        self.chunks, self.meter, self.on_end = chunks, meter, on_end
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()] + [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
        ]
        self.fault: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    gone = True
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                await self._pump(send)
                tg.cancel_scope.cancel()
        except OSError:  # the client went away while we were sending
            gone = True
        finally:
            with anyio.CancelScope(shield=True):
                finish = "disconnect" if gone else self.meter.finish_reason
                await self.on_end(self.meter.tokens, finish, self.fault)

    async def _pump(self, send: Send) -> None:
        tail = b""
        chunks = aiter(self.chunks)
        while True:
            try:
                raw = await anext(chunks)
            except StopAsyncIteration:
                tail = self.meter.flush()
                if not self.meter.done:
                    self.fault = "upstream stream ended before [DONE]"
                break
            except Exception as exc:  # the upstream's side failed (errors sending go up)
                self.fault = f"upstream stream failed: {type(exc).__name__}"
                break
            out = self.meter.feed(raw)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        if self.fault:
            err = {
                "error": {"message": self.fault, "type": "upstream_error", "code": "upstream_error"}
            }
            tail += b"data: " + json.dumps(err).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})
