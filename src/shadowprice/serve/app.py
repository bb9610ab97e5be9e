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
4. settle by the package's one counting rule (:mod:`shadowprice.usage`): the usage the
   upstream reports where it can be believed, the whole allowance where it cannot (no usage,
   a body that is not a completion, a stream cut short or left by its client, a timeout, an
   error after the request reached the upstream): :mod:`.relay`.

No request body makes the gateway answer 5xx itself: a malformed one is a 400 with an OpenAI
error body, a legal one without text (images only) is priced on the median curve of recent
requests; 502/504 say an upstream failed, 503 that the ledger is away. Internal addresses
(upstreams, the ledger) go to the log, never to clients.

Responses carry ``x-shadowprice-allowance`` and ``x-shadowprice-price``. Three loops run
beside the requests: the price update (every ``tick``), the renewal of running requests'
reservations (every third of their TTL) and the upstream health checks. ``kill -USR1`` prints
every task's stack on stderr (what a stuck process is waiting on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..ledger import Ledger
from ..usage import Count, StreamMeter, completion_problem, count_completion, error_charge
from .budget import build_decider, every
from .config import GatewayConfig, Tenant
from .decision import Grant, Refusal
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
from .relay import MeteredStream, event_stream, prompt_text, upstream_body
from .transport import UpstreamClient
from .upstreams import Upstream, UpstreamPool

__all__ = ["Gateway", "error_response"]

log = logging.getLogger("shadowprice.serve")

# Nothing reached a model server: nothing was generated, and the next upstream may be tried.
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


class _TooLarge(Exception):
    """An upstream answer past ``max_upstream_body``."""


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
        self.decider = build_decider(c, ledger=ledger)
        self.preset = c.preset()
        self.ledger = self.decider.ledger
        self.pricer = self.decider.core.pricer
        #: Ports of the separate metrics listener (set by whoever binds it).
        self.metrics_ports: set[int] = set()
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
        await self._update_price()
        if not self.decider.store_ok:
            log.error(
                "the budget ledger (--state) did not answer at start: %s",
                "serving from a local share while it is away (--fail-open)"
                if self.decider.local is not None
                else "requests are refused (503) until it answers",
            )
        tasks = [asyncio.create_task(every(step, seconds, log)) for step, seconds in loops]
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            # Operators (and tests) ask a stuck process what it is waiting on: kill -USR1.
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=10)
            if stuck:  # pragma: no cover - a step that ignores cancellation: do not hang on it
                log.error("%d background tasks did not stop at shutdown", len(stuck))
            await self.http.aclose()
            await self.decider.aclose()

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
        for k, u in enumerate(self.pool.upstreams):  # labelled by position: no address leaks
            self.metrics.healthy.labels(str(k)).set(int(u.healthy))

    # -- endpoints ----------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        return await self._completion(request, "/chat/completions")

    async def text(self, request: Request) -> Response:
        return await self._completion(request, "/completions")

    async def models(self, request: Request) -> Response:
        assert self.http is not None
        try:
            self._guard(request, metrics=False)
        except BadRequest as exc:
            return exc.response()
        up = self.pool.pick()
        try:
            r = await self.http.get(up.endpoint("/models"), timeout=10.0)
            body = r.json()
        except (httpx.HTTPError, ValueError, RecursionError) as exc:
            self.pool.failed(up)
            log.warning("upstream %d: model list failed: %r", self._index(up), exc)
            return error_response(502, "upstream_error", "upstream unreachable", "upstream")
        return JSONResponse(body, r.status_code)

    async def healthz(self, request: Request) -> Response:
        ledger_ok = self.decider.store_ok
        ok = (ledger_ok or self.decider.local is not None) and self.pool.healthy > 0
        body = {
            "status": "ok" if ok else "unavailable",
            "ledger": "ok" if ledger_ok else "unreachable",
            "upstreams_healthy": self.pool.healthy,
            "upstreams": len(self.pool.upstreams),
            "price": self.pricer.price,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        try:
            self._guard(request, metrics=True)
        except BadRequest as exc:
            return exc.response()
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    def _on_metrics_listener(self, request: Request) -> bool:
        server = request.scope.get("server")
        return server is not None and server[1] in self.metrics_ports

    def _guard(self, request: Request, *, metrics: bool) -> Tenant | None:
        """The tenant of a request to a protected endpoint; raises :class:`BadRequest`.

        With keys configured, every endpoint but ``/healthz`` needs one; ``/metrics`` a key
        allowed to read it (``"metrics": true``) unless it came through the separate metrics
        listener, which serves nothing else.
        """
        if self._on_metrics_listener(request):
            if metrics:
                return None
            raise BadRequest(404, "not_found", "the metrics listener serves /metrics only")
        tenant = authenticate(request, self.config)
        if metrics and tenant is not None and not tenant.metrics:
            raise BadRequest(
                403, "forbidden", 'this key may not read /metrics (needs "metrics": true)'
            )
        return tenant

    def _index(self, up: Upstream) -> int:
        return self.pool.upstreams.index(up)

    # -- the request path ---------------------------------------------------------------------
    async def _completion(self, request: Request, path: str) -> Response:
        c = self.config
        chat = path == "/chat/completions"
        try:
            tenant = self._guard(request, metrics=False)
            body = await read_json(request, c.max_body)
            check_body(body, chat=chat)
            floor = floor_of(request, tenant, c)
        except BadRequest as exc:
            self.metrics.requests.labels("rejected").inc()
            return exc.response()
        cap = requested_cap(body, c.max_tokens_ceiling)
        tau = self.thresholds.tau(prompt_text(body))
        d = await self.decider.decide(tau, cap, floor=floor, tenant=tenant.name if tenant else None)
        if isinstance(d, Refusal):
            return self._refusal(d)
        try:
            return await self._forward(path, body, d, chat)
        except Exception:  # a fault of the gateway's own: charged in full, answered in JSON
            log.exception("request failed inside the gateway")
            await self._settle(d, d.allowance, "error")
            return error_response(500, "internal_error", "the gateway failed", "internal_error")

    async def _forward(self, path: str, body: dict[str, Any], d: Grant, chat: bool) -> Response:
        c = self.config
        self.metrics.requests.labels(d.status).inc()
        self.metrics.allowed.inc(d.allowance)
        payload = upstream_body(body, d.allowance, self.preset)
        headers = {
            "x-shadowprice-allowance": str(d.allowance),
            "x-shadowprice-price": f"{d.price:.6g}",
        }
        stream = bool(payload.get("stream"))
        opts = body.get("stream_options")
        wants_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        try:
            up, r = await self._send(path, json.dumps(payload).encode())
        except _UNREACHABLE as exc:  # nothing reached a server: nothing generated
            log.warning("upstreams unreachable: %r", exc)
            return await self._failed(d, 0, 502, "upstream unreachable")
        except httpx.TimeoutException:
            # It may have generated up to the allowance before timing out: charge it all.
            return await self._failed(d, d.allowance, 504, "upstream timed out")
        except httpx.HTTPError as exc:
            log.warning("upstream failed: %r", exc)
            return await self._failed(d, d.allowance, 502, "upstream failed")
        ctype = r.headers.get("content-type", "")
        # Raw bytes as they arrive (the client asked for no encoding; decoded otherwise).
        chunks = r.aiter_bytes() if "content-encoding" in r.headers else r.aiter_raw()
        if stream and r.status_code == 200 and "text/event-stream" in ctype:
            meter = StreamMeter(drop_usage=not wants_usage, max_event=c.max_upstream_body)
            return MeteredStream(chunks, headers, meter, d.allowance, self._stream_end(up, r, d))  # type: ignore[return-value]  # an ASGI response Starlette calls like its own
        try:
            content = await _read(chunks, c.max_upstream_body)
        except (httpx.HTTPError, _TooLarge) as exc:
            self.pool.failed(up)
            log.warning("upstream %d: answer unreadable: %r", self._index(up), exc)
            return await self._failed(d, d.allowance, 502, "upstream answer could not be read")
        finally:
            up.inflight -= 1
            await r.aclose()
        if r.status_code != 200:
            return await self._refused(up, r.status_code, content, d, headers)
        self.pool.ok(up)
        return await self._answer(content, ctype, d, headers, stream, chat, wants_usage)

    def _refusal(self, d: Refusal) -> Response:
        self.metrics.requests.labels(d.kind).inc()
        headers = {"x-shadowprice-price": f"{d.price:.6g}"}
        if d.retry_after is not None:
            headers["retry-after"] = str(d.retry_after)
        if d.kind == "unavailable":
            return error_response(
                503, "ledger_unavailable", d.message, "ledger_unavailable", headers
            )
        if d.kind == "cap_too_small":  # the request must change: no use retrying it as is
            return error_response(
                400, "invalid_request_error", d.message, d.kind, headers, param="max_tokens"
            )
        return error_response(429, d.kind, d.message, d.kind, headers)

    async def _send(self, path: str, data: bytes) -> tuple[Upstream, httpx.Response]:
        """Send to an upstream and wait for its response headers. A connection that cannot
        be made moves on to the next upstream (nothing was generated); raises the last
        :class:`httpx.HTTPError`."""
        assert self.http is not None
        tries = min(2, len(self.pool.upstreams))
        for attempt in range(1, tries + 1):
            up = self.pool.pick()
            up.inflight += 1
            t0 = time.perf_counter()
            try:
                r = await self.http.relay(up.endpoint(path), data, stream=True)
            except BaseException as exc:
                up.inflight -= 1
                if isinstance(exc, httpx.HTTPError):
                    self.pool.failed(up)
                if isinstance(exc, _UNREACHABLE) and attempt < tries:
                    continue
                raise
            self.metrics.latency.labels(str(self._index(up))).observe(time.perf_counter() - t0)
            return up, r
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refused(
        self, up: Upstream, status: int, content: bytes, grant: Grant, headers: dict[str, str]
    ) -> Response:
        """Settle and answer an upstream's error status: a 4xx is the client's to see, a 5xx
        a 502 (its body may hold the upstream's internals: logged, not relayed)."""
        charge = error_charge(status, grant.allowance)
        if status >= 500:
            self.pool.failed(up)
            text = content[:200].decode(errors="replace")
            log.warning("upstream %d answered %d: %s", self._index(up), status, text)
            return await self._failed(grant, charge, 502, f"upstream answered {status}")
        self.pool.ok(up)
        await self._settle(grant, charge, "error")
        try:
            err = json.loads(content)
        except (ValueError, RecursionError):
            err = None
        if isinstance(err, dict) and isinstance(err.get("error"), dict | str):
            return Response(content, status, headers=headers, media_type="application/json")
        message = f"upstream refused the request ({status})"
        return error_response(status, "upstream_error", message, "upstream_error", headers)

    async def _answer(
        self,
        content: bytes,
        ctype: str,
        grant: Grant,
        headers: dict[str, str],
        stream: bool,
        chat: bool,
        wants_usage: bool,
    ) -> Response:
        """Settle and relay a whole 200 answer: a completion as it came (or as the event
        stream a streaming client asked for); anything else is a 502 charged in full."""
        if "text/event-stream" in ctype:  # a stream nobody asked for: counted, not relayed
            meter = StreamMeter()
            meter.feed(content)
            meter.flush()
            used = meter.count(grant.allowance)
            await self._settle(grant, used.tokens, used.finish_reason)
            return await self._failed(grant, 0, 502, "upstream streamed an unstreamed request")
        try:
            parsed = json.loads(content)
        except (ValueError, RecursionError):
            parsed = None
        problem = completion_problem(parsed)
        if problem:
            log.warning("upstream answered 200 without a completion: %s", problem)
            message = "upstream answered 200 with a body that is not a completion"
            return await self._failed(grant, grant.allowance, 502, message)
        used = count_completion(parsed, grant.allowance)
        await self._settle(grant, used.tokens, used.finish_reason)
        if stream:
            events = event_stream(parsed, chat=chat, usage=wants_usage)
            return Response(events, 200, headers=headers, media_type="text/event-stream")
        return Response(content, 200, headers=headers, media_type="application/json")

    def _stream_end(
        self, up: Upstream, r: httpx.Response, grant: Grant
    ) -> Callable[[Count, str, str | None], Awaitable[None]]:
        async def end(used: Count, finish: str, fault: str | None) -> None:
            # A body not read to its end (a fault, a client gone) closes the connection, so
            # the upstream stops generating; a finished one goes back to the pool.
            await r.aclose()
            up.inflight -= 1
            if fault:
                self.pool.failed(up)
                self.metrics.requests.labels("failed").inc()
            else:
                self.pool.ok(up)
            await self._settle(grant, used.tokens, finish)

        return end

    async def _failed(self, grant: Grant, charge: int, status: int, message: str) -> Response:
        await self._settle(grant, charge, "error")
        self.metrics.requests.labels("failed").inc()
        return error_response(status, "upstream_error", message, "upstream_error")

    async def _settle(self, grant: Grant, used: int, finish: str) -> None:
        self.metrics.settled.inc(await self.decider.settle(grant, used, finish))


async def _read(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A whole body, or :class:`_TooLarge` past ``limit`` bytes."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"upstream answer larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _dump_tasks() -> None:
    """Every asyncio task's stack on stderr (SIGUSR1)."""
    tasks = asyncio.all_tasks()
    print(f"shadowprice serve: {len(tasks)} tasks", file=sys.stderr, flush=True)
    for t in tasks:
        t.print_stack(file=sys.stderr)
    sys.stderr.flush()
