"""The ASGI gateway: an OpenAI-compatible front that prices, reserves, forwards and settles.

Request path of ``POST /v1/chat/completions`` and ``/v1/completions``:

1. read the body (413 past ``max_body``), parse and check it (400 with an OpenAI error body);
2. authenticate the client key when a key table is configured (401); the key is never logged
   nor forwarded;
3. predict the request's threshold from its text, quote an allowance at the current price and
   reserve it in the ledger *before* forwarding (429 ``priced_out`` / ``budget_exhausted``
   with ``Retry-After``; 503 when the shared ledger is unreachable and the gateway fails
   closed);
4. forward to a configured upstream with the allowance as ``max_tokens`` (and
   ``max_completion_tokens``, a thinking budget or ``reasoning_effort`` where configured);
5. settle with the usage the upstream reports, counted from the stream where it is missing;
   a client that disconnects mid-stream closes the upstream stream and is charged what was
   generated until then.

Responses carry ``x-shadowprice-allowance`` and ``x-shadowprice-price``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..ledger import Ledger, MemoryLedger
from ..online import OnlinePricer, PopulationPrior, SurgeShape
from .config import GatewayConfig, Tenant
from .decision import Decider, Grant, Refusal
from .metrics import Metrics
from .predictor import ThresholdSource, load_threshold_source
from .relay import StreamMeter, completion_tokens, prompt_text, upstream_body
from .upstreams import Upstream, UpstreamPool

__all__ = ["Gateway", "error_response"]

log = logging.getLogger("shadowprice.serve")


class BadRequest(Exception):
    """A client error: status, OpenAI error type, code, message."""

    def __init__(self, status: int, kind: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code


def error_response(
    status: int, kind: str, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An OpenAI-style error: ``{"error": {"message", "type", "code", "param"}}``."""
    body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class Gateway:
    """One gateway replica: configuration, ledger, pricer, upstreams and the ASGI app.

    Parameters
    ----------
    config : GatewayConfig
    ledger : Ledger, optional
        Use this ledger instead of building one from ``config.state`` (tests, embedding).
    thresholds : ThresholdSource, optional
        Use this threshold source instead of loading ``config.predictor``.

    Attributes
    ----------
    app : starlette.applications.Starlette
        The ASGI application (serve it with uvicorn; see :mod:`shadowprice.serve.server`).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        ledger: Ledger | None = None,
        thresholds: ThresholdSource | None = None,
    ) -> None:
        self.config = c = config
        self.metrics = Metrics()
        self.pool = UpstreamPool(c.upstreams, c.balance, c.eject_after)
        self.thresholds = thresholds or load_threshold_source(c.predictor, c.route_tau)
        shape = SurgeShape(c.alpha, c.beta)
        # Without a text predictor the prior learns the population's threshold scale.
        prior = PopulationPrior(short_excess=shape.short_excess, learn_scale=c.predictor is None)
        self.pricer = OnlinePricer(
            c.budget, c.period, shape, window=c.window, min_tokens=c.min_tokens, prior=prior
        )
        self.ledger = ledger if ledger is not None else self._ledger(c.budget, c.namespace)
        tenants = c.keys.tenants if c.keys is not None else []
        self.decider = Decider(
            self.pricer,
            self.ledger,
            tenant_ledgers={
                t.name: self._ledger(t.budget, f"{c.namespace}.tenant.{t.name}")
                for t in tenants
                if t.budget is not None
            },
            fallback_tokens=c.fallback_tokens,
            ttl=c.ttl if c.state else None,
            fail_open=MemoryLedger(c.fail_open_budget or c.budget, period=c.period)
            if c.fail_open and c.state
            else None,
            tick=c.tick,
        )
        self.metrics.budget.set(c.budget)
        self._headers = {"content-type": "application/json"}
        if c.upstream_key:
            self._headers["authorization"] = f"Bearer {c.upstream_key}"
        self.http: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.text, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    def _ledger(self, total: int | None, namespace: str) -> Ledger:
        c = self.config
        if c.state:
            from ..ledger.redis import RedisLedger

            return RedisLedger.from_url(c.state, total or 0, period=c.period, namespace=namespace)
        return MemoryLedger(total or 0, period=c.period)

    # -- lifecycle ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        c = self.config
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(c.upstream_timeout, connect=5.0),
            limits=httpx.Limits(max_connections=2048, max_keepalive_connections=512),
            follow_redirects=False,
        )
        self._tasks = [
            asyncio.create_task(self._price_loop()),
            asyncio.create_task(self._health_loop()),
        ]
        try:
            yield
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.http.aclose()
            for led in {
                id(x): x for x in [self.ledger, *self.decider.tenant_ledgers.values()]
            }.values():
                await led.aclose()

    async def _price_loop(self) -> None:
        while True:
            try:
                price = await self.decider.refresh()
                self.metrics.price.set(price)
                s = getattr(self.ledger, "last_state", None)
                if isinstance(self.ledger, MemoryLedger):
                    s = self.ledger.state_now()
                if s is not None:
                    self.metrics.spent.set(s.spent)
                    self.metrics.reserved.set(s.reserved)
                    self.metrics.period.set(s.period)
            except Exception:  # a loop that dies would freeze the price: log and go on
                log.exception("price update failed")
            await asyncio.sleep(self.config.tick)

    async def _health_loop(self) -> None:
        assert self.http is not None
        while True:
            await asyncio.sleep(self.config.health_interval)
            with contextlib.suppress(Exception):
                await self.pool.check(self.http)
            for u in self.pool.upstreams:
                self.metrics.healthy.labels(u.url).set(int(u.healthy))

    # -- endpoints ----------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        return await self._completion(request, "/chat/completions")

    async def text(self, request: Request) -> Response:
        return await self._completion(request, "/completions")

    async def models(self, request: Request) -> Response:
        assert self.http is not None
        up = self.pool.pick()
        try:
            r = await self.http.get(f"{up.url}/models", headers=self._headers, timeout=10.0)
        except httpx.HTTPError as exc:
            self.pool.failed(up)
            return error_response(502, "upstream_error", f"upstream unreachable: {exc}", "upstream")
        return Response(r.content, r.status_code, media_type="application/json")

    async def healthz(self, request: Request) -> Response:
        ledger_ok = self.decider.store_ok
        ok = (ledger_ok or self.decider.fail_open is not None) and self.pool.healthy > 0
        body = {
            "status": "ok" if ok else "unavailable",
            "ledger": "ok" if ledger_ok else "unreachable",
            "upstreams_healthy": self.pool.healthy,
            "upstreams": len(self.pool.upstreams),
            "price": self.pricer.price,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    # -- the request path ---------------------------------------------------------------------
    async def _completion(self, request: Request, path: str) -> Response:
        try:
            body = await self._read_json(request)
            tenant = self._authenticate(request)
            _check_body(body, chat=path == "/chat/completions")
            floor = self._floor(request, tenant)
        except BadRequest as exc:
            self.metrics.requests.labels("rejected").inc()
            return error_response(exc.status, exc.kind, str(exc), exc.code)
        cap = self._cap(body)
        tau = self.thresholds.tau(prompt_text(body))
        d = await self.decider.decide(tau, cap, floor=floor, tenant=tenant.name if tenant else None)
        if isinstance(d, Refusal):
            return self._refusal(d)
        self.metrics.requests.labels(d.status).inc()
        self.metrics.allowed.inc(d.allowance)
        c = self.config
        payload = upstream_body(
            body,
            d.allowance,
            token_param=c.token_param,
            thinking_field=c.thinking_field,
            effort_levels=c.effort_levels,
        )
        headers = {
            "x-shadowprice-allowance": str(d.allowance),
            "x-shadowprice-price": f"{d.price:.6g}",
        }
        data = json.dumps(payload).encode()
        if payload.get("stream"):
            opts = body.get("stream_options")
            wants_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return await self._stream(path, data, d, headers, wants_usage)
        return await self._whole(path, data, d, headers)

    async def _read_json(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, "invalid_request_error", "request_too_large", _too_large(limit))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(
                    413, "invalid_request_error", "request_too_large", _too_large(limit)
                )
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise BadRequest(
                400, "invalid_request_error", "invalid_json", f"body is not JSON: {exc}"
            ) from exc
        if not isinstance(body, dict):
            raise BadRequest(
                400, "invalid_request_error", "invalid_body", "body must be a JSON object"
            )
        return body

    def _authenticate(self, request: Request) -> Tenant | None:
        keys = self.config.keys
        if keys is None:
            return None
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        tenant = keys.lookup(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        if tenant is None:
            raise BadRequest(
                401,
                "invalid_request_error",
                "invalid_api_key",
                "missing or unknown API key (send Authorization: Bearer KEY)",
            )
        return tenant

    def _floor(self, request: Request, tenant: Tenant | None) -> int:
        floor = tenant.floor if tenant else 0
        name = request.headers.get("x-shadowprice-class")
        if name is None:
            return floor
        classes = self.config.classes
        if name not in classes or (
            self.config.keys is not None and (tenant is None or name not in tenant.classes)
        ):
            raise BadRequest(
                400,
                "invalid_request_error",
                "unknown_class",
                f"x-shadowprice-class {name!r} is not a class this key may use",
            )
        return max(floor, classes[name])

    def _cap(self, body: dict[str, Any]) -> int:
        ceiling = self.config.max_tokens_ceiling
        asked = [body.get(k) for k in ("max_completion_tokens", "max_tokens")]
        given = [int(v) for v in asked if isinstance(v, int) and not isinstance(v, bool)]
        return min([ceiling, *given])

    def _refusal(self, d: Refusal) -> Response:
        self.metrics.requests.labels(d.kind).inc()
        headers = {"retry-after": str(d.retry_after), "x-shadowprice-price": f"{d.price:.6g}"}
        if d.kind == "unavailable":
            return error_response(
                503, "ledger_unavailable", d.message, "ledger_unavailable", headers
            )
        return error_response(429, d.kind, d.message, d.kind, headers)

    async def _send(
        self, path: str, data: bytes, grant: Grant, stream: bool
    ) -> tuple[Upstream, httpx.Response]:
        """Send to an upstream; a connection refused moves on to the next one (nothing was
        generated). Raises the last transport error."""
        assert self.http is not None
        tries = min(2, len(self.pool.upstreams))
        for attempt in range(tries):
            up = self.pool.pick()
            up.inflight += 1
            t0 = time.perf_counter()
            try:
                req = self.http.build_request(
                    "POST", f"{up.url}{path}", content=data, headers=self._headers
                )
                r = await self.http.send(req, stream=stream)
            except httpx.ConnectError:
                up.inflight -= 1
                self.pool.failed(up)
                if attempt + 1 >= tries:
                    raise
                continue
            except BaseException:
                up.inflight -= 1
                self.pool.failed(up)
                raise
            self.metrics.latency.labels(up.url).observe(time.perf_counter() - t0)
            return up, r
        raise AssertionError("unreachable")  # pragma: no cover

    async def _whole(
        self, path: str, data: bytes, grant: Grant, headers: dict[str, str]
    ) -> Response:
        renew = self._renewal(grant)
        try:
            up, r = await self._send(path, data, grant, stream=False)
        except httpx.ConnectError as exc:
            return await self._failed(grant, 0, 502, f"upstream unreachable: {exc}")
        except httpx.TimeoutException:
            # It may have generated up to the allowance before timing out: charge it all.
            return await self._failed(grant, grant.allowance, 504, "upstream timed out")
        except httpx.HTTPError as exc:
            return await self._failed(grant, grant.allowance, 502, f"upstream failed: {exc}")
        finally:
            if renew is not None:
                renew.cancel()
        up.inflight -= 1
        return await self._answer(up, r, grant, headers)

    async def _answer(
        self, up: Upstream, r: httpx.Response, grant: Grant, headers: dict[str, str]
    ) -> Response:
        if r.status_code >= 500:
            self.pool.failed(up)
            return await self._failed(
                grant, 0, 502, f"upstream answered {r.status_code}: {r.text[:200]}"
            )
        self.pool.ok(up)
        if r.status_code != 200:  # the upstream refused the request itself: nothing generated
            await self._settle(grant, 0, "error")
            return Response(
                r.content, r.status_code, headers=headers, media_type="application/json"
            )
        try:
            parsed = json.loads(r.content)
        except ValueError:
            return await self._failed(
                grant, grant.allowance, 502, "upstream sent a body that is not JSON"
            )
        used, finish, _ = completion_tokens(parsed, grant.allowance)
        await self._settle(grant, used, finish)
        return Response(r.content, 200, headers=headers, media_type="application/json")

    async def _failed(self, grant: Grant, charge: int, status: int, message: str) -> Response:
        await self._settle(grant, charge, "error")
        self.metrics.requests.labels("failed").inc()
        return error_response(status, "upstream_error", message, "upstream_error")

    async def _settle(self, grant: Grant, used: int, finish: str) -> None:
        charged = await self.decider.settle(grant, used, finish)
        self.metrics.settled.inc(charged)

    def _renewal(self, grant: Grant) -> asyncio.Task[None] | None:
        if self.decider.ttl is None:
            return None
        return asyncio.create_task(self._renew(grant))

    async def _renew(self, grant: Grant) -> None:
        assert self.decider.ttl is not None
        while True:
            await asyncio.sleep(self.decider.ttl / 3)
            await self.decider.extend(grant)

    async def _stream(
        self, path: str, data: bytes, grant: Grant, headers: dict[str, str], wants_usage: bool
    ) -> Response:
        try:
            up, r = await self._send(path, data, grant, stream=True)
        except httpx.ConnectError as exc:
            return await self._failed(grant, 0, 502, f"upstream unreachable: {exc}")
        except httpx.TimeoutException:
            return await self._failed(grant, grant.allowance, 504, "upstream timed out")
        except httpx.HTTPError as exc:
            return await self._failed(grant, grant.allowance, 502, f"upstream failed: {exc}")
        if r.status_code != 200:
            await r.aread()
            await r.aclose()
            up.inflight -= 1
            return await self._answer(up, r, grant, headers)
        return MeteredStream(self, up, r, grant, headers, StreamMeter(forward_usage=wants_usage))  # type: ignore[return-value]


class MeteredStream:
    """ASGI response relaying an upstream event stream while metering it (see
    :class:`~shadowprice.serve.relay.StreamMeter`). Whatever ends the stream (its end, an
    upstream fault, the client going away), the upstream response is closed and the tokens
    generated are settled exactly once."""

    def __init__(
        self,
        gateway: Gateway,
        up: Upstream,
        response: httpx.Response,
        grant: Grant,
        headers: dict[str, str],
        meter: StreamMeter,
    ) -> None:
        self.gw, self.up, self.resp, self.grant, self.meter = gateway, up, response, grant, meter
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
                if self.gw.decider.ttl is not None:
                    tg.start_soon(self.gw._renew, self.grant)
                await self._pump(send)
                tg.cancel_scope.cancel()
        except OSError:  # the client went away while we were sending
            gone = True
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(gone)

    async def _pump(self, send: Send) -> None:
        try:
            async for raw in self.resp.aiter_raw():
                out = self.meter.feed(raw)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = self.meter.flush()
            if not self.meter.done:
                self.fault = "upstream stream ended before [DONE]"
        except httpx.HTTPError as exc:
            tail = b""
            self.fault = f"upstream stream failed: {type(exc).__name__}"
        if self.fault:
            err = {
                "error": {"message": self.fault, "type": "upstream_error", "code": "upstream_error"}
            }
            tail += b"data: " + json.dumps(err).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _finish(self, gone: bool) -> None:
        await self.resp.aclose()  # closes the connection: the upstream stops generating
        self.up.inflight -= 1
        if self.fault:
            self.gw.pool.failed(self.up)
            self.gw.metrics.requests.labels("failed").inc()
        else:
            self.gw.pool.ok(self.up)
        finish = "disconnect" if gone else self.meter.finish_reason
        await self.gw._settle(self.grant, self.meter.tokens, finish)


def _check_body(body: dict[str, Any], *, chat: bool) -> None:
    """Schema checks that matter to the budget; the upstream validates the rest."""

    def bad(code: str, message: str) -> BadRequest:
        return BadRequest(400, "invalid_request_error", code, message)

    if chat:
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            raise bad("invalid_messages", "'messages' must be a non-empty list of message objects")
    else:
        prompt = body.get("prompt")
        if not (
            isinstance(prompt, str)
            or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))
        ):
            raise bad("invalid_prompt", "'prompt' must be a string or a list of strings")
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise bad("invalid_max_tokens", f"'{key}' must be a positive integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad("invalid_stream", "'stream' must be true or false")
    for key in ("n", "best_of"):
        v = body.get(key)
        if v is not None and v != 1:
            raise bad(
                "unsupported_n", f"'{key}' must be 1: each request is budgeted as one completion"
            )
    if "model" in body and not isinstance(body["model"], str):
        raise bad("invalid_model", "'model' must be a string")


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes"
