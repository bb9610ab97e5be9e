"""A GPU-free OpenAI-compatible server answering with real traces (``shadowprice replay-server``).

Every answer is one sample of a trace set, replayed: as many tokens as the sample is long
(cut at ``max_tokens``, with ``finish_reason: "length"``), right or wrong as the sample was.
It is what a load test, a budget or a pipeline needs from a model — lengths and correctness
with the spread of a real model's — without the model: vLLM's production stack ships a fake
server for the same purpose, this one answers with measured behaviour.

**Which query.** A request is matched to a query by its last user message: a query's id, its
question, or its question in the prompt template (``run``'s default unless ``template`` says
otherwise). An unknown prompt is a 400 naming the fix.

**Which sample.** The request's ``seed`` picks sample ``seed mod n`` of the query's n samples
(in file order); without one, a sample is drawn at random (seeded by the server's ``seed``).

**The answer.** A sample of L tokens answers with L words (one word per token: ``t0 t1
...``); the last one is ``\\boxed{ANSWER}``: the query's gold answer if the sample is correct,
else a wrong one.
Usage counts exactly the tokens generated. A conversation that ends with an assistant message
is a continuation (vLLM's ``continue_final_message``, llama.cpp's prefill): the words already
there count as generated, and the answer continues from there. ``GET /version`` answers like
vLLM, so ``run``'s continuation probe finds it.

``tokens_per_second`` paces the answers (a stream sends its words as they are "generated");
by default they are immediate. ``stream: true`` is answered as server-sent events, with usage
in the last chunk when ``stream_options.include_usage`` asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..traces import TraceSet
from .grading import gold_answer
from .run import DEFAULT_TEMPLATE, check_template

__all__ = ["WRONG_ANSWER", "ReplayServer", "replay_gold", "serving"]

#: What a wrong sample answers (no gold answer reads as this).
WRONG_ANSWER = "\\text{wrong}"
#: Words per streamed chunk.
_CHUNK = 16


def replay_gold(record: dict[str, Any]) -> str:
    """The answer a correct sample of ``record`` gives: its gold answer (what follows ``####``
    in a GSM8K solution), or its id when it has none."""
    answer = record.get("answer")
    if answer is None or not str(answer).strip():
        return str(record["id"])
    return gold_answer(str(answer))


@dataclass(frozen=True)
class _Answer:
    words: list[str]
    finished: bool
    prompt_tokens: int


class _BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ReplayServer:
    """An OpenAI-compatible chat-completions server answering from ``traces`` (see the module
    docstring); :attr:`app` is the ASGI application.

    Parameters
    ----------
    traces : TraceSet
        The queries and their samples.
    model : str
        The name ``/v1/models`` lists (requests may name any model).
    template : str
        The prompt template whose formatting of a question also identifies the query.
    tokens_per_second : float, optional
        Pace of generation per request; None: answer at once.
    seed : int
        Seeds the sample drawn for requests without a ``seed``.

    Attributes
    ----------
    requests : int
        Completions answered.
    generated : int
        Tokens generated in all (what a budget in front of this server must hold against).
    """

    def __init__(
        self,
        traces: TraceSet,
        *,
        model: str = "replay",
        template: str | None = None,
        tokens_per_second: float | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(traces, TraceSet):
            raise TypeError(f"traces must be a TraceSet, got {type(traces).__name__}")
        if tokens_per_second is not None and not tokens_per_second > 0:
            raise ValueError(f"tokens_per_second must be positive, got {tokens_per_second!r}")
        empty = [r["id"] for r in traces.records if not r["samples"]]
        if empty:
            raise ValueError(f"query {empty[0]!r} has no samples: every query needs one")
        self.traces = traces
        self.model = model
        self.template = check_template(template or DEFAULT_TEMPLATE)
        self.tokens_per_second = tokens_per_second
        self.rng = random.Random(seed)
        self.requests = 0
        self.generated = 0
        self.index: dict[str, int] = {}
        for i, r in enumerate(traces.records):
            self.index.setdefault(str(r["id"]), i)
        for i, r in enumerate(traces.records):
            q = r.get("question")
            if q:
                self.index.setdefault(str(q), i)
                self.index.setdefault(self.template.format(question=q), i)
        self.golds = [replay_gold(r) for r in traces.records]
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/version", self._version, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )

    # -- answering ------------------------------------------------------------------------
    def answer(self, body: Any) -> _Answer:
        """The words a request generates (see the module docstring).

        Raises
        ------
        ValueError
            Naming the field, for a request that is not a chat completion of a known query.
        """
        if not isinstance(body, dict):
            raise _BadRequest("the body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("messages must be a non-empty list", "messages")
        if body.get("n", 1) != 1:
            raise _BadRequest("only n=1 is served: send one request per sample", "n")
        cap = _allowance(body)
        prefix = ""
        if isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            prefix = _text(messages[-1].get("content"))
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise _BadRequest("messages has no user message", "messages")
        prompt = _text(users[-1].get("content"))
        row = self.index.get(prompt.strip(), self.index.get(prompt))
        if row is None:
            raise _BadRequest(
                f"no query matches the prompt {prompt[:80]!r}: send a query's id, its "
                f"question, or the question in the server's template",
                "messages",
            )
        samples = self.traces.records[row]["samples"]
        seed = body.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            sample = samples[seed % len(samples)]
        else:
            sample = samples[self.rng.randrange(len(samples))]
        length = round(float(sample["tokens"]))  # as the simulated engine rounds (to even)
        done = len(prefix.split())
        left = max(0, length - done)
        n = left if cap is None else min(left, cap)
        finished = n == left
        words = [f"t{k}" for k in range(done, done + n)]  # distinct: a continuation never
        # reads as a repeat of its prefix
        if finished and n:
            words[-1] = f"\\boxed{{{self.golds[row] if sample['correct'] else WRONG_ANSWER}}}"
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages if m)
        return _Answer(words, finished, prompt_tokens)

    async def _chat(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error("the body is not JSON", None)
        try:
            ans = self.answer(body)
        except _BadRequest as exc:
            return _error(str(exc), exc.param)
        self.requests += 1
        self.generated += len(ans.words)
        usage = {
            "prompt_tokens": ans.prompt_tokens,
            "completion_tokens": len(ans.words),
            "total_tokens": ans.prompt_tokens + len(ans.words),
        }
        finish = "stop" if ans.finished else "length"
        model = str(body.get("model") or self.model)
        if body.get("stream"):
            options = body.get("stream_options") or {}
            with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return StreamingResponse(
                self._events(ans, finish, model, usage if with_usage else None),
                media_type="text/event-stream",
            )
        if self.tokens_per_second:
            await asyncio.sleep(len(ans.words) / self.tokens_per_second)
        return JSONResponse(
            {
                "id": f"replay-{self.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _join(ans.words)},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        )

    async def _events(
        self, ans: _Answer, finish: str, model: str, usage: dict[str, int] | None
    ) -> AsyncIterator[bytes]:
        head = {"id": f"replay-{self.requests}", "object": "chat.completion.chunk", "model": model}

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n".encode()

        yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
        for k in range(0, len(ans.words), _CHUNK):
            chunk = ans.words[k : k + _CHUNK]
            if self.tokens_per_second:
                await asyncio.sleep(len(chunk) / self.tokens_per_second)
            delta = {"content": _join(chunk)}
            yield event([{"index": 0, "delta": delta, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": finish}])
        if usage is not None:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "owned_by": "replay"}],
            }
        )

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": "shadowprice-replay"})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "queries": self.traces.n})


def _allowance(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _BadRequest(f"{key} must be a positive integer, got {v!r}", key)
        return v
    return None


def _text(content: Any) -> str:
    """The text of a message's content (a string, or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _join(words: list[str]) -> str:
    """Words as generated text: each token a word with its leading space, so continued
    answers concatenate into whole words."""
    return "".join(" " + w for w in words)


def _error(message: str, param: str | None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": param}},
        status_code=400,
    )


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` on a free port of ``host`` in this event loop (uvicorn) while inside;
    yields its OpenAI root URL (``http://HOST:PORT/v1``)."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a small answer written in two parts (headers, body)
    # would otherwise wait for the client's delayed ACK (40 ms on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, 0))

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # Ctrl-C interrupts the caller, not just this server

    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off")
    server = Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
                raise RuntimeError("the replay server stopped before it started")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
