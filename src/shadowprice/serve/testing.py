"""A fake model server, a fault catalogue, and a load generator, for tests and benchmarks.

:func:`fake_upstream` is an OpenAI-compatible server in the spirit of vLLM production-stack's
fake server: it streams tokens at a set speed, honours ``max_tokens``, puts usage in the last
chunk, and misbehaves on request (a marker in the prompt) so the gateway's fault handling can
be shown on real HTTP. ``LEN:n``: the answer runs n tokens when not cut off (default 64);
``FAULT:name`` picks one of :data:`FAULTS`:

=================  =====================================================================
``500``, ``502``   that HTTP status after generating the answer; ``503``: refused before
``json``           ignores ``stream``: one JSON body
``garbage``        a 200 whose body is not JSON (``sse_garbage``: a stream of non-JSON events)
``notcompletion``  a 200 JSON object that is not a completion
``truncated``      declares a longer body than it sends, then hangs up
``oversized``      a 200 body of 8 MiB (more than a gateway configured to relay 1 MiB)
``nousage``        no usage anywhere; ``lowusage``: usage of 0 (unstreamed) or below the
                   chunks sent (streamed); ``negusage``, ``absurdusage``, ``strusage``:
                   usage of -5, a billion, or a string
``slow``, ``hang``  answers after 30 s, or never (both stop when the client leaves)
``stall``          a stream that stops sending halfway for 30 s
``drop``, ``reset``  drops the stream halfway (closed, or reset)
``trickle``        a stream whose tokens come in slow bursts
``overrun``        ignores ``max_tokens`` and generates n tokens (outside the fault model:
                   no gateway can stop a server that ignores its cap)
=================  =====================================================================

:class:`FakeLog` counts what the server generated. A real server may go on generating for a
client that left (llama.cpp and vLLM stop; others do not), and may generate before it fails,
so with ``worst_case=True`` every answer counts what it would have generated had nobody left:
``min(n, max_tokens)`` for every request the server took, 0 for a ``503``. That is the count a
budget must hold against.

:class:`ServerThread` runs any ASGI app on a loopback port in a background thread;
:class:`RawServer` answers with bytes no HTTP server would send (or hangs up, or resets).
:func:`run_load` is an asyncio load generator (streaming or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = [
    "FAULTS",
    "FakeLog",
    "LoadResult",
    "RawServer",
    "ServerThread",
    "fake_upstream",
    "run_load",
]

#: Faults :func:`fake_upstream` knows (see the module docstring).
FAULTS = (
    "500",
    "502",
    "503",
    "json",
    "garbage",
    "sse_garbage",
    "notcompletion",
    "truncated",
    "oversized",
    "nousage",
    "lowusage",
    "negusage",
    "absurdusage",
    "strusage",
    "slow",
    "hang",
    "stall",
    "drop",
    "reset",
    "trickle",
    "overrun",
)

_LEN = re.compile(r"LEN:(\d+)")
_FAULT = re.compile(r"FAULT:(\w+)")


@dataclass
class FakeLog:
    """What the fake server saw and generated (tests assert on it).

    Attributes
    ----------
    generated : int
        Tokens generated (with ``worst_case``: what each request taken would have generated,
        see the module docstring).
    requests : int
        Completion requests received.
    """

    max_tokens: list[int] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    generated: int = 0
    cancelled: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, tokens: int) -> None:
        with self._lock:
            self.generated += tokens

    def reset(self) -> None:
        """Forget everything seen so far."""
        with self._lock:
            self.max_tokens.clear()
            self.auth.clear()
            self.bodies.clear()
            self.generated = self.cancelled = self.requests = 0


def _prompt(body: dict[str, Any]) -> str:
    msgs = body.get("messages")
    if isinstance(msgs, list):
        return " ".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
    return str(body.get("prompt", ""))


def fake_upstream(
    speed: float = 1000.0,
    default_len: int = 64,
    log: FakeLog | None = None,
    keep_bodies: bool = True,
    worst_case: bool = False,
    pause: float = 30.0,
) -> tuple[Starlette, FakeLog]:
    """An OpenAI-compatible fake model server (see the module docstring).

    Parameters
    ----------
    speed : float
        Tokens per second of a stream (0: as fast as possible).
    default_len : int
        Answer length when the prompt has no ``LEN:n``.
    log : FakeLog, optional
        Where to record requests.
    keep_bodies : bool
        Record every body (off for load runs).
    worst_case : bool
        Count what each request taken would have generated, whoever left (see the module
        docstring); else only the tokens sent.
    pause : float
        Seconds ``slow`` and ``stall`` wait (``hang``: for ever).
    """
    rec = log or FakeLog()

    async def completions(request: Request) -> Response:
        body = await request.json()
        rec.auth.append(request.headers.get("authorization"))
        rec.requests += 1
        if keep_bodies:
            rec.bodies.append(body)
        text = _prompt(body)
        m, f = _LEN.search(text), _FAULT.search(text)
        natural = int(m.group(1)) if m else default_len
        fault = f.group(1) if f else ""
        cap = body.get("max_tokens") or body.get("max_completion_tokens") or 1 << 30
        rec.max_tokens.append(int(cap))
        n = natural if fault == "overrun" else min(natural, int(cap))
        finish = "length" if natural > n or (fault != "overrun" and natural > cap) else "stop"
        chat = request.url.path.endswith("/chat/completions")
        if fault == "503":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if worst_case:
            rec.add(n)  # taken: counted whatever happens next
        early = await _early_fault(request, fault, n, chat, pause)
        if early is not None:
            return early
        if body.get("stream") and fault != "json":
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            opts = _Stream(n, finish, chat, usage and fault != "nousage", fault, speed, pause)
            gen = _stream(rec, opts, counted=worst_case)
            return StreamingResponse(gen, media_type="text/event-stream")
        if not worst_case:
            rec.add(n)
        return JSONResponse(_whole(n, finish, chat, fault))

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
        ]
    )
    return app, rec


async def _early_fault(
    request: Request, fault: str, n: int, chat: bool, pause: float
) -> Response | None:
    """The answer of a fault that replaces the whole response, or None."""
    if fault in ("500", "502"):
        return JSONResponse({"error": {"message": "boom"}}, status_code=int(fault))
    if fault in ("slow", "hang"):  # answers late (or never), unless the client gives up first
        waited = 0.0
        while fault == "hang" or waited < pause:
            if await request.is_disconnected():
                return Response(status_code=499)
            await asyncio.sleep(0.1)
            waited += 0.1
    if fault == "garbage":
        return Response(b"<html>not json", media_type="application/json")
    if fault == "notcompletion":
        return JSONResponse({"object": "list", "data": []})
    if fault == "oversized":
        return Response(b"[" + b"0," * (4 << 20) + b"0]", media_type="application/json")
    if fault == "truncated":
        whole = json.dumps(_whole(n, "stop", chat, "")).encode()
        return Response(
            whole[: len(whole) // 2],
            media_type="application/json",
            headers={"content-length": str(len(whole))},
        )
    return None


def _whole(n: int, finish: str, chat: bool, fault: str) -> dict[str, Any]:
    text = "tok " * n
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    out: dict[str, Any] = {
        "id": "fake-1",
        "object": "chat.completion" if chat else "text_completion",
        "model": "fake",
        "choices": [choice],
    }
    if fault != "nousage":
        out["usage"] = {
            "prompt_tokens": 5,
            "completion_tokens": _reported(n, fault, streamed=False),
            "total_tokens": n + 5,
        }
    return out


def _reported(n: int, fault: str, *, streamed: bool) -> Any:
    """The completion tokens the server says it generated (a lie for the usage faults)."""
    lies: dict[str, Any] = {
        "lowusage": n // 2 if streamed else 0,
        "negusage": -5,
        "absurdusage": 10**9,
        "strusage": str(n),
    }
    return lies.get(fault, n)


@dataclass(frozen=True)
class _Stream:
    n: int
    finish: str
    chat: bool
    usage: bool
    fault: str
    speed: float
    pause: float


async def _stream(rec: FakeLog, s: _Stream, *, counted: bool) -> AsyncIterator[bytes]:
    """The event stream of one answer; ``counted``: its tokens were counted up front."""
    sent = 0
    try:
        for i in range(s.n):
            if s.fault in ("drop", "reset") and i >= s.n // 2:
                raise ConnectionResetError("fake upstream dropped the connection")
            if s.fault == "stall" and i == s.n // 2:
                await asyncio.sleep(s.pause)
            if s.fault == "trickle" and i % 8 == 7:
                await asyncio.sleep(0.05)
            if s.speed > 0:
                await asyncio.sleep(1.0 / s.speed)
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": s.finish if i == s.n - 1 else None,
            }
            if s.chat:
                choice["delta"] = {"content": "tok "}
            else:
                choice["text"] = "tok "
            if s.fault == "sse_garbage":
                yield b"data: <html>not json</html>\n\n"
            else:
                yield b"data: " + json.dumps({"id": "fake-1", "choices": [choice]}).encode()
                yield b"\n\n"
            sent += 1
            if not counted:
                rec.add(1)
        if s.usage:
            u = {
                "prompt_tokens": 5,
                "completion_tokens": _reported(s.n, s.fault, streamed=True),
                "total_tokens": s.n + 5,
            }
            event = {"id": "fake-1", "choices": [], "usage": u}
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    except asyncio.CancelledError:
        rec.cancelled += 1
        raise


class ServerThread:
    """Serve an ASGI app on 127.0.0.1 in a background thread (uvicorn, its own event loop).

    Examples
    --------
    >>> with ServerThread(app) as s:  # doctest: +SKIP
    ...     httpx.get(s.url + "/health")
    """

    def __init__(self, app: Any, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app, log_level="error", access_log=False, lifespan="auto", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RawServer:
    """A loopback TCP server that reads each request whole and answers it with ``reply``
    verbatim: faults at the HTTP level that an ASGI server cannot be made to produce.

    Parameters
    ----------
    reply : bytes
        Sent as the answer, then the connection is closed; empty: hang up without a word.
    reset : bool
        Reset the connection (RST) instead of answering.
    silent : bool
        Never answer (until stopped).

    Attributes
    ----------
    url : str
    heads : list of bytes
        The head (request line and headers) of every request read, in order.

    Examples
    --------
    >>> with RawServer() as s:  # doctest: +SKIP
    ...     httpx.post(s.url, content=b"{}")  # hangs up: httpx.RemoteProtocolError
    """

    def __init__(self, reply: bytes = b"", *, reset: bool = False, silent: bool = False) -> None:
        self.reply, self.reset, self.silent = reply, reset, silent
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.heads: list[bytes] = []  # each request's head, as received
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # shut down on leaving the block
                return
            self._conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                conn.close()
                return
            data += more
        head, body = data.split(b"\r\n\r\n", 1)
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        while m and len(body) < int(m.group(1)):  # unread bytes would make close() a reset
            more = conn.recv(65536)
            if not more:
                break
            body += more
        self.heads.append(head)
        if self.silent:
            self._stop.wait()
        elif self.reset:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif self.reply:
            conn.sendall(self.reply)
        conn.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()


@dataclass
class LoadResult:
    """Outcome of :func:`run_load`: one entry per request."""

    status: list[int] = field(default_factory=list)
    allowance: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    complete: list[bool] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0


async def run_load(
    url: str | list[str],
    requests: int,
    concurrency: int,
    *,
    stream: bool = True,
    prompt: str = "What is 2 + 2? LEN:64",
    max_tokens: int | None = None,
    timeout: float = 60.0,
    prompts: list[str] | None = None,
) -> LoadResult:
    """Send ``requests`` chat completions with ``concurrency`` clients (round robin over
    ``url`` when several are given); record status, allowance, tokens seen and completeness
    (a 200 stream that ended with ``[DONE]``, or a whole JSON answer). With ``prompts``,
    request i asks ``prompts[i % len(prompts)]``.

    The clients share one aiohttp session: an httpx client costs about five times the CPU per
    request and, past a few dozen connections, becomes the bottleneck of what it measures.
    """
    urls = [url] if isinstance(url, str) else list(url)
    out = LoadResult()
    base: dict[str, Any] = {"model": "fake"}
    if stream:
        base["stream"] = True
        base["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        base["max_tokens"] = max_tokens
    datas = [
        json.dumps({**base, "messages": [{"role": "user", "content": text}]}).encode()
        for text in prompts or [prompt]
    ]
    todo = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    limit = aiohttp.ClientTimeout(total=timeout)

    async def client(http: aiohttp.ClientSession) -> None:
        for i in todo:
            t0 = time.perf_counter()
            target = f"{urls[i % len(urls)]}/v1/chat/completions"
            try:
                row = await _one(http, target, datas[i % len(datas)], stream)
            except (aiohttp.ClientError, TimeoutError) as exc:
                row = (-1, 0, 0, False, f"{type(exc).__name__}: {exc}")
            # Appended together: concurrent clients must not interleave their entries.
            status, allowance, tokens, complete, error = row
            out.status.append(status)
            out.allowance.append(allowance)
            out.tokens.append(tokens)
            out.complete.append(complete)
            if error:
                out.errors.append(error)
            out.latency.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=limit) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    out.elapsed = time.perf_counter() - t0
    return out


async def _one(
    http: aiohttp.ClientSession, target: str, data: bytes, stream: bool
) -> tuple[int, int, int, bool, str]:
    """(status, allowance, tokens seen, complete, error) of one request."""
    headers = {"content-type": "application/json"}
    async with http.post(target, data=data, headers=headers) as r:
        allowance = int(r.headers.get("x-shadowprice-allowance", 0))
        if r.status != 200:
            await r.read()
            return r.status, allowance, 0, False, ""
        if not stream:
            body = json.loads(await r.read())
            tokens = int(body.get("usage", {}).get("completion_tokens", 0))
            return 200, allowance, tokens, "choices" in body, ""
        chunks, done = 0, False
        async for raw in r.content:
            line = raw.rstrip(b"\r\n")
            if line == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: ") and b'"delta"' in line:
                chunks += 1
        error = "" if done else f"stream without [DONE] after {chunks} chunks"
        return 200, allowance, chunks, done, error
