"""The package's one HTTP client stack: httpx's API over aiohttp's transport.

Everything that calls a model server goes through :class:`HttpClient`: ``run``'s chat client
(:class:`~shadowprice.engine.client.ChatClient`, its retries and accounting on top) and the
gateway's relay to its upstreams (``serve``). One client, its timeouts and limits,
``aiter_raw`` and ``aclose``. Underneath, ``httpx_aiohttp.AiohttpTransport`` carries the
requests: on loopback one request costs the client about 490 µs of CPU through httpx's own
transport (httpcore), 145 µs through this one and 70 µs through aiohttp's own API
(``docs/benchmarks.md``).

:class:`Transport` corrects the errors that transport raises (httpx-aiohttp 0.2): it
files every aiohttp connection error under :class:`httpx.ConnectTimeout`, so a refused
connection, a server that hung up after taking the request and a reset connection all read as
"could not connect in time", and a response that is not HTTP escapes as an aiohttp exception.
Both callers' accounting depends on the difference (a request that never reached a server
generated nothing; one that did may have generated up to its allowance), so the errors are
raised as httpx's own transport raises them.
"""

from __future__ import annotations

import http.cookiejar
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["HttpClient", "Transport"]

# aiohttp's error -> httpx's, most specific first (httpx's own transport raises the same
# classes for the same events).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # connecting, or waiting for the pool
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, unresolvable: nothing sent
    (aiohttp.ClientPayloadError, httpx.ReadError),  # the body broke off
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # hung up, no response
    (aiohttp.ClientOSError, httpx.ReadError),  # reset after connecting
    (aiohttp.ClientError, httpx.RemoteProtocolError),  # e.g. a response that is not HTTP
)


def _httpx_error(exc: Exception, request: httpx.Request) -> Exception:
    """The httpx error for ``exc``: an aiohttp error that escaped the transport, or one it
    filed under :class:`httpx.ConnectTimeout`; ``exc`` itself when it is already right."""
    if isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.ConnectTimeout):
        return exc
    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if not isinstance(cause, aiohttp.ClientError):
        return exc
    for source, target in _ERRORS:
        if isinstance(cause, source):
            if type(exc) is target:
                return exc
            return target(str(cause) or type(cause).__name__, request=request)
    return exc  # pragma: no cover - aiohttp.ClientError closes the table


class _Body(httpx.AsyncByteStream):
    """A response body whose read errors are httpx's (see :func:`_httpx_error`)."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream, self._request = stream, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            err = _httpx_error(exc, self._request)
            if err is exc:
                raise
            raise err from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class Transport(AiohttpTransport):
    """``httpx_aiohttp.AiohttpTransport`` raising httpx's own errors for connection failures
    (see the module docstring); takes the same arguments."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            err = _httpx_error(exc, request)
            if err is exc:
                raise
            raise err from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream, request)
        return response


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps nothing: one client serves every tenant, so a cookie an upstream sets
    for one request must not ride along on the next."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


class HttpClient(httpx.AsyncClient):
    """The one long-lived httpx client a process reaches model servers through.

    Parameters
    ----------
    headers : dict of str to str
        Sent with every request (e.g. the upstream key; a gateway never forwards a client's).
    timeout : float
        Seconds an upstream may stay silent while answering (httpx's read timeout).
    connect_timeout : float
        Seconds to wait for a pooled connection and to connect; past them the request reached
        no server (:class:`httpx.ConnectTimeout`).
    max_connections : int
        Open connections across all upstreams (aiohttp's connector limit).
    keepalive_expiry : float
        Seconds an idle connection is kept for reuse. Shorter than the servers' own keep-alive
        (5 s in uvicorn, so vLLM and SGLang, and in llama.cpp's server): with equal ones a
        request sent on a connection the server is closing at that moment fails, although it
        never reached the server.

    Notes
    -----
    Redirects are not followed, no cookies are kept (a gateway's one client serves every
    tenant) and ``accept-encoding: identity`` is asked (a gateway relays bodies as they come:
    decompressing them would cost its CPU for nothing). :meth:`relay` carries a gateway's
    completions; the rest (a chat call, health checks, the model list) goes through the
    usual methods.
    """

    def __init__(
        self,
        *,
        headers: dict[str, str],
        timeout: float,
        connect_timeout: float = 5.0,
        max_connections: int = 2048,
        keepalive_expiry: float = 2.0,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=None,
            keepalive_expiry=keepalive_expiry,
        )
        self.transport = Transport(limits=limits)
        super().__init__(
            transport=self.transport,
            headers={"accept-encoding": "identity", **headers},
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
            follow_redirects=False,
            cookies=_NoCookies(),
        )

    async def relay(self, url: httpx.URL, content: bytes, *, stream: bool) -> httpx.Response:
        """POST ``content`` to ``url`` with the client's headers and timeouts, straight to its
        transport.

        :meth:`send` wraps the transport in what a general client needs (auth flows,
        redirects, cookie extraction, event hooks, a timed body stream), none of which a
        relay uses; it cost about 65 µs of client CPU per request (the gateway's CPU per
        request: 420-460 µs through :meth:`send`, 350-360 µs through this; see
        ``docs/benchmarks.md``).

        Parameters
        ----------
        url : httpx.URL
        content : bytes
            The JSON body.
        stream : bool
            Return once the headers arrive (read the body with :meth:`httpx.Response.aiter_raw`
            and close it with :meth:`httpx.Response.aclose`); else read the body first.

        Returns
        -------
        httpx.Response

        Raises
        ------
        httpx.HTTPError
            As :class:`Transport` raises them (:class:`httpx.ConnectError` and
            :class:`httpx.ConnectTimeout` only when the request reached no server).
        """
        request = self.build_request("POST", url, content=content)
        response = await self.transport.handle_async_request(request)
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response
