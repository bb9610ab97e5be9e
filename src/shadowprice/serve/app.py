"""The ASGI gateway: an OpenAI-compatible front that prices, reserves, forwards and settles.

Request path of ``POST /v1/chat/completions`` and ``/v1/completions``:

1. read the body (413 past ``max_body``), parse and check it (400 with an OpenAI error body),
   authenticate the client key when a key table is configured (401; the key is never logged
   nor forwarded): :mod:`.inbound`;
2. predict the request's threshold from its text, quote an allowance at the current price and
   reserve it in the ledger *before* forwarding (429 ``priced_out`` / ``budget_exhausted``
   with ``Retry-After``; 503 when the shared ledger is unreachable and the gateway fails
   closed): :mod:`.decision`;
3. forward to a configured upstream with the allowance as ``max_tokens`` (and
   ``max_completion_tokens``, a thinking budget or ``reasoning_effort`` where configured);
4. settle with the usage the upstream reports, counted from the stream where it is missing;
   a client that disconnects mid-stream closes the upstream stream and is charged what was
   generated until then: :mod:`.relay`.

Responses carry ``x-shadowprice-allowance`` and ``x-shadowprice-price``. Three loops run
beside the requests: the price update (every ``tick``), the renewal of running requests'
reservations (every third of their TTL) and the upstream health checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..ledger import Ledger, MemoryLedger
from ..online import OnlinePricer, PopulationPrior, SurgeShape
from .config import GatewayConfig
from .decision import Decider, Grant, Refusal
from .inbound import (
    BadRequest,
    authenticate,
    check_body,
    error_response,
    floor_of,
    read_json,
    requested_cap,
)
from .metrics import Metrics
from .predictor import ThresholdSource, load_threshold_source
from .relay import MeteredStream, StreamMeter, completion_tokens, prompt_text, upstream_body
from .transport import UpstreamClient
from .upstreams import Upstream, UpstreamPool

__all__ = ["Gateway", "error_response"]

log = logging.getLogger("shadowprice.serve")

# Nothing reached a model server: nothing was generated, and the next upstream may be tried.
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


class Gateway:
    """One gateway replica: configuration, ledger, pricer, upstreams and the ASGI app.

    Parameters
    ----------
    config : GatewayConfig
    ledger : Ledger, optional
        Use this ledger for the shared budget instead of building one from ``config.state``
        (tests, embedding); its total is the budget less the floor share.
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
        shared = c.budget - c.floor_tokens
        shape = SurgeShape(c.alpha, c.beta)
        # Without a text predictor the prior learns the population's threshold scale.
        prior = PopulationPrior(short_excess=shape.short_excess, learn_scale=c.predictor is None)
        self.pricer = OnlinePricer(
            shared, c.period, shape, window=c.window, min_tokens=c.min_tokens, prior=prior
        )
        self.ledger = ledger if ledger is not None else self._ledger(shared, c.namespace)
        tenants = c.keys.tenants if c.keys is not None else []
        self.decider = Decider(
            self.pricer,
            self.ledger,
            floor_ledger=self._ledger(c.floor_tokens, f"{c.namespace}.floor")
            if c.floor_tokens
            else None,
            tenant_ledgers={
                t.name: self._ledger(t.budget, f"{c.namespace}.tenant.{t.name}")
                for t in tenants
                if t.budget is not None
            },
            fallback_tokens=c.fallback_tokens,
            ttl=c.ttl,
            fail_open=MemoryLedger(c.fail_open_budget or shared, period=c.period)
            if c.fail_open and c.state
            else None,
            tick=c.tick,
        )
        self.metrics.budget.set(c.budget)
        self._headers = {"content-type": "application/json"}
        if c.upstream_key:
            self._headers["authorization"] = f"Bearer {c.upstream_key}"
        self.http: UpstreamClient | None = None
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

    def _ledger(self, total: int, namespace: str) -> Ledger:
        c = self.config
        if c.state:
            from ..ledger.redis import RedisLedger

            return RedisLedger.from_url(c.state, total, period=c.period, namespace=namespace)
        return MemoryLedger(total, period=c.period)

    # -- lifecycle ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        c = self.config
        self.http = UpstreamClient(headers=self._headers, timeout=c.upstream_timeout)
        loops = [
            (self._update_price, c.tick),
            (self.decider.renew, c.ttl / 3),
            (self._check_upstreams, c.health_interval),
        ]
        tasks = [asyncio.create_task(_every(step, seconds)) for step, seconds in loops]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.aclose()
            for led in self.decider.ledgers:
                await led.aclose()

    async def _update_price(self) -> None:
        self.metrics.price.set(await self.decider.refresh())
        states = [s for s in (self.decider.state, self.decider.floor_state) if s is not None]
        if states:
            self.metrics.spent.set(sum(s.spent for s in states))
            self.metrics.reserved.set(sum(s.reserved for s in states))
            self.metrics.period.set(states[0].period)

    async def _check_upstreams(self) -> None:
        assert self.http is not None
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
            r = await self.http.get(up.endpoint("/models"), timeout=10.0)
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
        c = self.config
        try:
            body = await read_json(request, c.max_body)
            tenant = authenticate(request, c)
            check_body(body, chat=path == "/chat/completions")
            floor = floor_of(request, tenant, c)
        except BadRequest as exc:
            self.metrics.requests.labels("rejected").inc()
            return exc.response()
        cap = requested_cap(body, c.max_tokens_ceiling)
        tau = self.thresholds.tau(prompt_text(body))
        d = await self.decider.decide(tau, cap, floor=floor, tenant=tenant.name if tenant else None)
        if isinstance(d, Refusal):
            return self._refusal(d)
        self.metrics.requests.labels(d.status).inc()
        self.metrics.allowed.inc(d.allowance)
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
        stream = bool(payload.get("stream"))
        try:
            up, r = await self._send(path, json.dumps(payload).encode(), stream)
        except _UNREACHABLE as exc:  # nothing reached a server: nothing generated
            return await self._failed(d, 0, 502, f"upstream unreachable: {exc}")
        except httpx.TimeoutException:
            # It may have generated up to the allowance before timing out: charge it all.
            return await self._failed(d, d.allowance, 504, "upstream timed out")
        except httpx.HTTPError as exc:
            return await self._failed(d, d.allowance, 502, f"upstream failed: {exc!r}")
        if stream and r.status_code == 200:
            opts = body.get("stream_options")
            meter = StreamMeter(
                forward_usage=isinstance(opts, dict) and bool(opts.get("include_usage"))
            )
            # Raw bytes as they arrive (the client asked for no encoding; decoded otherwise).
            chunks = r.aiter_bytes() if "content-encoding" in r.headers else r.aiter_raw()
            return MeteredStream(chunks, headers, meter, self._stream_end(up, r, d))  # type: ignore[return-value]  # an ASGI response Starlette calls like its own
        up.inflight -= 1
        try:
            await r.aread()  # read already unless it is a refused stream
        except httpx.HTTPError as exc:
            self.pool.failed(up)
            return await self._failed(d, d.allowance, 502, f"upstream failed: {exc!r}")
        finally:
            await r.aclose()
        return await self._answer(up, r.status_code, r.content, d, headers)

    def _refusal(self, d: Refusal) -> Response:
        self.metrics.requests.labels(d.kind).inc()
        headers = {"retry-after": str(d.retry_after), "x-shadowprice-price": f"{d.price:.6g}"}
        if d.kind == "unavailable":
            return error_response(
                503, "ledger_unavailable", d.message, "ledger_unavailable", headers
            )
        return error_response(429, d.kind, d.message, d.kind, headers)

    async def _send(self, path: str, data: bytes, stream: bool) -> tuple[Upstream, httpx.Response]:
        """Send to an upstream and wait for its response headers (and, not streaming, its
        body). A connection that cannot be made moves on to the next upstream (nothing was
        generated); raises the last :class:`httpx.HTTPError`."""
        assert self.http is not None
        tries = min(2, len(self.pool.upstreams))
        for attempt in range(1, tries + 1):
            up = self.pool.pick()
            up.inflight += 1
            t0 = time.perf_counter()
            try:
                r = await self.http.relay(up.endpoint(path), data, stream=stream)
            except BaseException as exc:
                up.inflight -= 1
                if isinstance(exc, httpx.HTTPError):
                    self.pool.failed(up)
                if isinstance(exc, _UNREACHABLE) and attempt < tries:
                    continue
                raise
            self.metrics.latency.labels(up.url).observe(time.perf_counter() - t0)
            return up, r
        raise AssertionError("unreachable")  # pragma: no cover

    async def _answer(
        self, up: Upstream, status: int, content: bytes, grant: Grant, headers: dict[str, str]
    ) -> Response:
        """Settle and relay a whole (non-streamed, or refused) upstream response."""
        if status >= 500:
            self.pool.failed(up)
            message = f"upstream answered {status}: {content[:200].decode(errors='replace')}"
            return await self._failed(grant, 0, 502, message)
        self.pool.ok(up)
        if status != 200:  # the upstream refused the request itself: nothing generated
            await self._settle(grant, 0, "error")
            return Response(content, status, headers=headers, media_type="application/json")
        try:
            parsed = json.loads(content)
        except ValueError:
            message = "upstream sent a body that is not JSON"
            return await self._failed(grant, grant.allowance, 502, message)
        used, finish, _ = completion_tokens(parsed, grant.allowance)
        await self._settle(grant, used, finish)
        return Response(content, 200, headers=headers, media_type="application/json")

    def _stream_end(
        self, up: Upstream, r: httpx.Response, grant: Grant
    ) -> Callable[[int, str, str | None], Awaitable[None]]:
        async def end(tokens: int, finish: str, fault: str | None) -> None:
            # A body not read to its end (a fault, a client gone) closes the connection, so
            # the upstream stops generating; a finished one goes back to the pool.
            await r.aclose()
            up.inflight -= 1
            if fault:
                self.pool.failed(up)
                self.metrics.requests.labels("failed").inc()
            else:
                self.pool.ok(up)
            await self._settle(grant, tokens, finish)

        return end

    async def _failed(self, grant: Grant, charge: int, status: int, message: str) -> Response:
        await self._settle(grant, charge, "error")
        self.metrics.requests.labels("failed").inc()
        return error_response(status, "upstream_error", message, "upstream_error")

    async def _settle(self, grant: Grant, used: int, finish: str) -> None:
        self.metrics.settled.inc(await self.decider.settle(grant, used, finish))


async def _every(step: Callable[[], Awaitable[Any]], seconds: float) -> None:
    """Run ``step`` every ``seconds`` until cancelled; a failing step is logged, not fatal (a
    dead price loop would freeze the price)."""
    while True:
        try:
            await step()
        except Exception:
            log.exception("background step %s failed", getattr(step, "__name__", step))
        await asyncio.sleep(seconds)
