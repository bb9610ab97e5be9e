"""The gateway's upstream client over real sockets: each HTTP-level fault raises the httpx
error httpx's own transport raises for it, which is what the gateway's accounting reads
(nothing reached a server: nothing generated; anything else: maybe generated)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shadowprice.serve.localredis import free_port
from shadowprice.serve.testing import RawServer, ServerThread
from shadowprice.serve.transport import UpstreamClient


def send(url: str, *, stream: bool, **kw: float) -> httpx.Response:
    """POST to ``url`` as the gateway relays a completion; streamed: read the body raw."""

    async def go() -> httpx.Response:
        async with UpstreamClient(headers={"authorization": "Bearer up"}, **kw) as c:
            r = await c.relay(httpx.URL(url), b"{}", stream=stream)
            if stream:
                async for _ in r.aiter_raw():
                    pass
            return r

    return asyncio.run(go())


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("server", "error"),
    [
        (lambda: RawServer(), httpx.RemoteProtocolError),  # took the request, hung up
        (lambda: RawServer(reset=True), httpx.ReadError),
        (lambda: RawServer(b"not http at all\r\n\r\n"), httpx.RemoteProtocolError),
        (lambda: RawServer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc"), httpx.ReadError),
    ],
)
def test_a_request_that_reached_the_server_never_reads_as_unreachable(
    server: Callable[[], RawServer], error: type[Exception], stream: bool
) -> None:
    with server() as s:
        with pytest.raises(error) as got:
            send(s.url, stream=stream, timeout=5)
        assert len(s.heads) == 1
    assert not isinstance(got.value, httpx.ConnectError | httpx.TimeoutException)


def test_refused_and_pool_waits_are_connect_errors_and_silence_a_read_timeout() -> None:
    with pytest.raises(httpx.ConnectError):
        send(f"http://127.0.0.1:{free_port()}", stream=False, timeout=5)
    with RawServer(silent=True) as s:
        with pytest.raises(httpx.ReadTimeout):
            send(s.url, stream=True, timeout=0.2)

        async def pool_wait() -> None:  # one connection, held by a request that hangs
            c = UpstreamClient(headers={}, timeout=5, connect_timeout=0.2, max_connections=1)
            async with c:
                hung = asyncio.create_task(c.post(s.url, content=b"{}"))
                await asyncio.sleep(0.05)
                try:
                    with pytest.raises(httpx.ConnectTimeout):
                        await c.relay(httpx.URL(s.url), b"{}", stream=False)
                finally:
                    hung.cancel()

        asyncio.run(pool_wait())
        assert len(s.heads) == 2


def test_the_client_sends_its_headers_asks_for_no_encoding_and_keeps_no_cookies() -> None:
    reply = b"HTTP/1.1 200 OK\r\nset-cookie: tenant=alice\r\nconnection: close\r\n"
    reply += b"content-length: 2\r\n\r\n{}"

    async def twice(url: str) -> list[httpx.Response]:
        async with UpstreamClient(headers={"authorization": "Bearer up"}, timeout=5) as c:
            # A general request (cookies would be kept from it), then a relayed one.
            return [
                await c.post(url, content=b"{}"),
                await c.relay(httpx.URL(url), b"{}", stream=False),
            ]

    with RawServer(reply) as s:
        got = asyncio.run(twice(s.url))
    assert [r.json() for r in got] == [{}, {}]
    first, second = (head.lower() for head in s.heads)
    for head in (first, second):
        assert b"\r\nauthorization: bearer up" in head
        assert b"\r\naccept-encoding: identity" in head
    assert b"cookie" not in second  # alice's cookie does not ride on the next request


def test_an_idle_connection_is_dropped_before_the_server_would_drop_it() -> None:
    async def port(scope: Any, receive: Any, send: Any) -> None:  # the connection's client port
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(scope["client"][1]).encode()})

    async def ports(url: str) -> list[str]:
        async with UpstreamClient(headers={}, timeout=5, keepalive_expiry=0.3) as c:
            got = []
            for pause in (0.0, 0.0, 0.6):
                await asyncio.sleep(pause)
                got.append((await c.relay(httpx.URL(url), b"{}", stream=False)).text)
            return got

    with ServerThread(port) as s:  # uvicorn keeps an idle connection 5 s
        first, again, after_idle = asyncio.run(ports(s.url))
    assert first == again != after_idle
