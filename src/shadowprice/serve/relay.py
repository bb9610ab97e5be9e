"""Forwarding one granted request upstream and measuring what it generated.

- :func:`prompt_text`: the text the threshold predictor reads ('' for a request without text,
  e.g. images only: the gateway prices it on a default curve).
- :func:`upstream_body`: the client's body with the allowance in the upstream's own fields
  (a provider preset: the output cap, a thinking cap with an answer reserve, an effort level),
  the length fields some servers read instead removed, and usage requested in streams.
- :class:`MeteredStream`: the ASGI response that relays an upstream stream through a
  :class:`~shadowprice.usage.StreamMeter` and, however the stream ends, closes the upstream
  response and reports once what it is charged (the package's one counting rule,
  :mod:`shadowprice.usage`: a stream cut before its end is charged its whole allowance).
- :func:`event_stream`: a whole completion as the event stream a streaming client expects
  (for an upstream that ignored ``stream``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

from ..providers import Preset
from ..usage import Count, StreamMeter

__all__ = ["LENGTH_ALIASES", "MeteredStream", "event_stream", "prompt_text", "upstream_body"]

#: Fields some servers read as the length cap instead of ``max_tokens`` (llama.cpp's
#: ``n_predict`` wins over ``max_tokens``; TGI, Ollama, Gemini and the Responses API have their
#: own): a client's value would bypass the allowance, so they are removed before forwarding.
LENGTH_ALIASES = (
    "n_predict",
    "max_new_tokens",
    "max_length",
    "max_output_tokens",
    "num_predict",
    "maxOutputTokens",
)


def prompt_text(body: dict[str, Any]) -> str:
    """The text the predictor reads: the last user message with text (chat; else the last
    message) or the prompt; '' when there is none (token ids, images only, no content)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                text = _content_text(m.get("content"))
                if text.strip():
                    return text
        last = messages[-1] if messages else None
        return _content_text(last.get("content")) if isinstance(last, dict) else ""
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


def upstream_body(body: dict[str, Any], allowance: int, preset: Preset) -> dict[str, Any]:
    """A copy of ``body`` that asks the upstream for at most ``allowance`` tokens: the length
    fields other servers read removed (:data:`LENGTH_ALIASES`), the allowance in ``preset``'s
    fields (the output cap, a thinking cap with an answer reserve, an effort level: see
    :mod:`shadowprice.providers`), and usage asked for in a stream."""
    out = {k: v for k, v in body.items() if k not in LENGTH_ALIASES}
    options = out.get("options")
    if isinstance(options, dict) and "num_predict" in options:  # Ollama's
        out["options"] = {k: v for k, v in options.items() if k != "num_predict"}
    out = preset.apply(out, allowance)
    if out.get("stream"):
        opts = dict(out.get("stream_options") or {})
        opts["include_usage"] = True
        out["stream_options"] = opts
    return out


#: Called once when a relayed stream ends: (what it is charged, finish reason, fault or None).
StreamEnd = Callable[[Count, str, "str | None"], Awaitable[None]]


class MeteredStream:
    """ASGI response relaying an upstream event stream through a :class:`StreamMeter`.

    Whatever ends the stream (its end, an upstream fault, the client going away), ``on_end``
    is called exactly once with what the stream is charged (a stream that did not run to its
    end: its whole allowance), the finish reason (``disconnect`` when the client left) and the
    fault, if any; it closes the upstream response (on a fault or a disconnect, its
    connection: most servers then stop generating, but nobody counts what they still do). A
    fault is also sent to the client as a last error event.

    Parameters
    ----------
    chunks : async iterator of bytes
        The upstream's body as it arrives (status 200); any exception it raises is a fault.
    headers : dict of str to str
        Headers to add to the client's response.
    meter : StreamMeter
    allowance : int
        The request's ``max_tokens``: what a stream cut short is charged.
    on_end : callable
        ``await on_end(count, finish_reason, fault)``, shielded from cancellation.
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        headers: dict[str, str],
        meter: StreamMeter,
        allowance: int,
        on_end: StreamEnd,
    ) -> None:
        self.chunks, self.meter, self.on_end = chunks, meter, on_end
        self.meter.hold_done = True  # the relay ends the stream itself, once it is checked
        self.allowance = allowance
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()] + [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
        ]
        self.fault: str | None = None
        self.ended = False  # the upstream's body was read to its end

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
                # What counts is whether the upstream's stream was read to its end, not
                # whether the client stayed for the last bytes of it.
                whole = self.ended and self.fault is None
                finish = "disconnect" if gone and not whole else self.meter.finish_reason
                count = self.meter.count(self.allowance, complete=whole)
                await self.on_end(count, finish, self.fault)

    async def _pump(self, send: Send) -> None:
        tail = b""
        chunks = aiter(self.chunks)
        while True:
            try:
                raw = await anext(chunks)
            except StopAsyncIteration:
                self.ended = True
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
            if self.meter.oversized:
                self.fault = "upstream stream event larger than the gateway relays"
                break
        if self.fault is None and self.meter.unreadable:
            self.fault = f"upstream sent {self.meter.unreadable} events that could not be read"
        if self.fault:
            err = {
                "error": {"message": self.fault, "type": "upstream_error", "code": "upstream_error"}
            }
            tail += b"data: " + json.dumps(err).encode() + b"\n\n"
        else:  # held back by the meter until the stream was known to be whole
            tail += b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def event_stream(body: dict[str, Any], *, chat: bool, usage: bool) -> bytes:
    """A whole completion ``body`` as the server-sent events of a stream: one chunk per
    choice with its text, one with the finish reason, the usage chunk if ``usage``, and
    ``[DONE]`` (for a streaming client whose upstream answered with one JSON body)."""
    base: dict[str, Any] = {k: body[k] for k in ("id", "created", "model") if k in body}
    base["object"] = "chat.completion.chunk" if chat else "text_completion"
    events: list[dict[str, Any]] = []
    for k, choice in enumerate(body.get("choices") or []):
        index = choice.get("index", k)
        finish = choice.get("finish_reason")
        if chat:
            message = choice.get("message") or {}
            delta = {"role": message.get("role", "assistant")}
            delta.update({f: v for f, v in message.items() if f != "role" and v is not None})
            first: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": None}
            last: dict[str, Any] = {"index": index, "delta": {}, "finish_reason": finish}
        else:
            first = {"index": index, "text": choice.get("text", ""), "finish_reason": None}
            last = {"index": index, "text": "", "finish_reason": finish}
        events += [{**base, "choices": [first]}, {**base, "choices": [last]}]
    if usage and isinstance(body.get("usage"), dict):
        events.append({**base, "choices": [], "usage": body["usage"]})
    lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    return b"".join(lines) + b"data: [DONE]\n\n"
