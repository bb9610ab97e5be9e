"""A LiteLLM proxy callback that prices every completion's ``max_tokens`` against one budget.

Name the instance in the proxy's config and set the budget in the environment::

    litellm_settings:
      callbacks: ["shadowprice.integrations.litellm.handler"]

    SHADOWPRICE_BUDGET=2000000 SHADOWPRICE_PERIOD=3600 litellm --config config.yaml

``handler`` is built on first access from the ``SHADOWPRICE_*`` variables
(:meth:`PluginSettings.from_env`; a bad value stops the proxy at start with a message naming
the variable and the fix). It runs the same budget machinery as ``shadowprice serve``
(:func:`shadowprice.serve.budget.build_decider`: ledgers, paced price, decision core), so a
LiteLLM proxy and ``serve`` replicas naming the same ``SHADOWPRICE_STATE`` / ``--state`` and
namespace share one budget and one price in Redis.

The request's life, hook by hook (LiteLLM runs them in different tasks, so each grant is kept
by LiteLLM's call id and its lifetime is managed here, not tied to a task):

1. ``async_pre_call_hook`` (chat and text completions): check the body, predict the
   threshold from the prompt, decide and reserve; write the allowance as ``max_tokens`` (and,
   per ``SHADOWPRICE_THINKING``, LiteLLM's provider-neutral ``thinking`` or
   ``reasoning_effort``, which LiteLLM translates for each provider) or refuse with the
   gateway's OpenAI error (429 ``priced_out`` / ``budget_exhausted`` with ``Retry-After``,
   400 ``cap_too_small``, 503 ``ledger_unavailable``). Other generating routes (Responses,
   Anthropic messages, batches, realtime) are refused: they would escape the budget.
2. ``async_pre_call_deployment_hook``, once per attempt: a retry or fallback LiteLLM makes
   after a failure is another request that may generate: it holds another allowance (or is
   refused when the budget cannot hold it); ``async_post_call_failure_deployment_hook``
   records what each failed attempt is charged.
3. The end, settled once by the package's counting rule (:mod:`shadowprice.usage`): a whole
   answer (``async_post_call_success_hook``) its believable usage; a stream
   (``async_post_call_streaming_iterator_hook``) by a :class:`~shadowprice.usage.StreamMeter`
   over its chunks and the provider's own usage report, in full when it is cut, fails, or its
   client leaves; a failure (``async_post_call_failure_hook``) by its status (0 for a refusal
   before generating, else in full). A request that never reports back is charged in full:
   an unstreamed one whose request task ended, or any after ``SHADOWPRICE_REQUEST_TIMEOUT``
   seconds without news (its reservation is left to lapse).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

from ..ledger import Ledger, LedgerError, Reservation
from ..providers import OPENAI_EFFORT, litellm_fields
from ..serve.budget import build_decider, every
from ..serve.config import BudgetShares, ConfigError, KeyTable, _positive, _positive_int
from ..serve.decision import Decider, Grant, Refusal
from ..serve.inbound import BadRequest, check_body, requested_cap
from ..serve.predictor import ThresholdSource, load_threshold_source
from ..serve.relay import LENGTH_ALIASES, prompt_text
from ..usage import Count, StreamMeter, count_completion, error_charge

__all__ = ["PluginSettings", "ShadowpricePlugin"]  # and `handler`, built on first access

log = logging.getLogger("shadowprice.litellm")

Thinking = Literal["auto", "budget", "effort", "off"]

#: LiteLLM call types priced here: chat completions and text completions.
PRICED: dict[str, bool] = {
    "completion": True,
    "acompletion": True,
    "text_completion": False,
    "atext_completion": False,
}
#: Call types that generate tokens but are not priced: refused, or they would escape the budget.
UNPRICED = frozenset(
    {
        "responses",
        "aresponses",
        "anthropic_messages",
        "aanthropic_messages",
        "generate_content",
        "agenerate_content",
        "generate_content_stream",
        "agenerate_content_stream",
        "_arealtime",
        "_aresponses_websocket",
        "create_batch",
        "acreate_batch",
        "run_thread",
        "arun_thread",
        "run_thread_stream",
        "arun_thread_stream",
    }
)
#: Header selecting a priority class (``SHADOWPRICE_CLASSES``), as with ``serve``.
CLASS_HEADER = "x-shadowprice-class"

_ENV = "SHADOWPRICE_"
#: The variables the plugin reads (after ``SHADOWPRICE_``).
_READ = (
    "BUDGET", "PERIOD", "STATE", "NAMESPACE", "PREDICTOR", "ROUTE_TAU", "PACE_MARGIN",
    "MAX_TOKENS_CEILING", "FALLBACK_TOKENS", "CLASSES", "FLOOR_SHARE", "TTL", "RELEASE_LAPSED",
    "FAIL_OPEN", "FAIL_OPEN_BUDGET", "THINKING", "RESERVE", "REQUEST_TIMEOUT",
)  # fmt: skip
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass
class PluginSettings(BudgetShares):
    """What the plugin is told (the environment, see :meth:`from_env`); the budget fields
    mean what ``shadowprice serve``'s options of the same name mean.

    Attributes
    ----------
    budget : int
        Completion tokens per period (``SHADOWPRICE_BUDGET``; all replicas together).
    period : float
        Budget period in seconds, aligned to the Unix epoch (``SHADOWPRICE_PERIOD``).
    state : str, optional
        ``redis://HOST:PORT/DB`` shared with other replicas (``SHADOWPRICE_STATE``).
    namespace : str
        Name of the budget inside Redis (``SHADOWPRICE_NAMESPACE``, as ``--namespace``).
    predictor : str, optional
        Threshold predictor directory or ``default`` (``SHADOWPRICE_PREDICTOR``); None with
        ``route_tau`` (``SHADOWPRICE_ROUTE_TAU``): that threshold for every request.
    thinking : {'auto', 'budget', 'effort', 'off'}
        Thinking fields written with the allowance (``SHADOWPRICE_THINKING``): ``budget``
        LiteLLM's ``thinking`` budget (allowance less the answer reserve), ``effort`` its
        ``reasoning_effort`` chosen by that budget, ``auto`` whichever of the two the client
        sent (none when it sent neither), ``off`` leaves them as sent.
    reserve : int, optional
        Tokens of the allowance kept for the answer after thinking (``SHADOWPRICE_RESERVE``;
        default: 10 %, 64 ... 1024, see :mod:`shadowprice.providers`).
    request_timeout : float
        Seconds without news after which a request's grant is given up and charged in full
        (``SHADOWPRICE_REQUEST_TIMEOUT``); set it above the longest unstreamed request.
    """

    budget: int
    period: float
    state: str | None = None
    namespace: str = "default"
    predictor: str | None = "default"
    route_tau: float | None = None
    pace_margin: float = 0.2
    max_tokens_ceiling: int = 32768
    fallback_tokens: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    floor_share: float = 0.0
    ttl: float = 120.0
    release_lapsed: bool = False
    fail_open: bool = False
    fail_open_budget: int | None = None
    thinking: Thinking = "auto"
    reserve: int | None = None
    request_timeout: float = 600.0
    alpha: float = 1.5
    beta: float = 0.005
    window: int = 1024
    tick: float = 0.25
    min_tokens: int = 16
    keys: KeyTable | None = None

    def __post_init__(self) -> None:
        _positive_int("SHADOWPRICE_BUDGET", self.budget)
        _positive("SHADOWPRICE_PERIOD", self.period)
        _positive("SHADOWPRICE_TTL", self.ttl)
        _positive("SHADOWPRICE_REQUEST_TIMEOUT", self.request_timeout)
        _positive_int("SHADOWPRICE_MAX_TOKENS_CEILING", self.max_tokens_ceiling)
        if self.fail_open_budget is not None:
            _positive_int("SHADOWPRICE_FAIL_OPEN_BUDGET", self.fail_open_budget)
        if self.route_tau is not None:
            _positive("SHADOWPRICE_ROUTE_TAU", self.route_tau)
        if self.predictor is None and self.route_tau is None:
            raise ConfigError("set SHADOWPRICE_PREDICTOR=default|PATH or SHADOWPRICE_ROUTE_TAU")
        if self.fallback_tokens < 0:
            raise ConfigError("SHADOWPRICE_FALLBACK_TOKENS must be >= 0")
        if self.reserve is not None and self.reserve < 0:
            raise ConfigError("SHADOWPRICE_RESERVE must be >= 0 tokens")
        if not 0 <= self.pace_margin <= 1:
            raise ConfigError(f"SHADOWPRICE_PACE_MARGIN must be in [0, 1], got {self.pace_margin}")
        if not 0 <= self.floor_share < 1:
            raise ConfigError(f"SHADOWPRICE_FLOOR_SHARE must be in [0, 1), got {self.floor_share}")
        if self.floor_share > 0 and self.floor_tokens == 0:
            raise ConfigError("SHADOWPRICE_FLOOR_SHARE rounds to 0 tokens of SHADOWPRICE_BUDGET")
        if self.thinking not in ("auto", "budget", "effort", "off"):
            raise ConfigError(
                f"SHADOWPRICE_THINKING must be auto, budget, effort or off, got {self.thinking!r}"
            )
        if self.state is not None and not self.state.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"SHADOWPRICE_STATE must be a redis://HOST:PORT/DB URL, got {self.state!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PluginSettings:
        """Settings from ``SHADOWPRICE_*`` variables (``os.environ`` by default).

        Raises
        ------
        ConfigError
            Naming the variable and what it should hold.
        """
        env = os.environ if environ is None else environ
        unread = sorted(k for k in env if k.startswith(_ENV) and k[len(_ENV) :] not in _READ)
        if unread:  # a misspelt option must not pass unnoticed
            log.warning(
                "the LiteLLM plugin does not read %s; it reads SHADOWPRICE_%s",
                ", ".join(unread),
                ", SHADOWPRICE_".join(_READ),
            )
        read = _Reader(env)
        route_tau = read.number("ROUTE_TAU")
        predictor = env.get(_ENV + "PREDICTOR", "default").strip() or "default"
        return cls(
            budget=read.whole("BUDGET", required=True),  # type: ignore[arg-type]  # required
            period=read.number("PERIOD", required=True),  # type: ignore[arg-type]  # required
            state=env.get(_ENV + "STATE", "").strip() or None,
            namespace=env.get(_ENV + "NAMESPACE", "").strip() or "default",
            predictor=None if route_tau is not None else predictor,
            route_tau=route_tau,
            pace_margin=read.number("PACE_MARGIN", 0.2),  # type: ignore[arg-type]
            max_tokens_ceiling=read.whole("MAX_TOKENS_CEILING", 32768),  # type: ignore[arg-type]
            fallback_tokens=read.whole("FALLBACK_TOKENS", 0),  # type: ignore[arg-type]
            classes=read.classes("CLASSES"),
            floor_share=read.number("FLOOR_SHARE", 0.0),  # type: ignore[arg-type]
            ttl=read.number("TTL", 120.0),  # type: ignore[arg-type]
            release_lapsed=read.flag("RELEASE_LAPSED"),
            fail_open=read.flag("FAIL_OPEN"),
            fail_open_budget=read.whole("FAIL_OPEN_BUDGET"),
            thinking=env.get(_ENV + "THINKING", "auto").strip().lower() or "auto",  # type: ignore[arg-type]
            reserve=read.whole("RESERVE"),
            request_timeout=read.number("REQUEST_TIMEOUT", 600.0),  # type: ignore[arg-type]
        )


class _Reader:
    """Parses ``SHADOWPRICE_*`` values, naming the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str, required: bool) -> str | None:
        raw = self.env.get(_ENV + name, "").strip()
        if not raw:
            if required:
                raise ConfigError(
                    f"{_ENV}{name} is not set: the plugin needs SHADOWPRICE_BUDGET (tokens per "
                    f"period) and SHADOWPRICE_PERIOD (seconds) in the proxy's environment"
                )
            return None
        return raw

    def whole(self, name: str, default: int | None = None, *, required: bool = False) -> int | None:
        raw = self._raw(name, required)
        if raw is None:
            return default
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{_ENV}{name}={raw!r} is not a whole number of tokens") from None

    def number(
        self, name: str, default: float | None = None, *, required: bool = False
    ) -> float | None:
        raw = self._raw(name, required)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{_ENV}{name}={raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{_ENV}{name}={raw!r} must be finite")
        return value

    def flag(self, name: str) -> bool:
        raw = self.env.get(_ENV + name, "").strip().lower()
        if raw in _TRUE or raw in _FALSE:
            return raw in _TRUE
        raise ConfigError(f"{_ENV}{name}={raw!r}: use true or false")

    def classes(self, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in self.env.get(_ENV + name, "").split(","))):
            cls, _, floor = part.partition("=")
            if not cls.strip() or not floor.strip().isdigit():
                raise ConfigError(
                    f"{_ENV}{name}: {part!r} is not NAME=FLOOR_TOKENS; e.g. "
                    f"SHADOWPRICE_CLASSES=interactive=256,batch=0"
                )
            out[cls.strip()] = int(floor)
        return out


@dataclass(eq=False)
class _Call:
    """One priced request between its pre-call hook and its settlement.

    ``extra[i]`` holds attempt ``i + 2`` (a retry or fallback); ``charges[i]`` is what attempt
    ``i + 1`` is charged when it failed (None: no failure recorded for it).
    """

    grant: Grant
    stream: bool
    task: asyncio.Task[Any] | None
    touched: float
    attempts: int = 0
    charges: list[int | None] = field(default_factory=list)
    extra: list[list[tuple[Ledger, Reservation]]] = field(default_factory=list)
    streaming: bool = False


class ShadowpricePlugin(CustomLogger):
    """The LiteLLM callback (see the module docstring).

    Parameters
    ----------
    settings : PluginSettings
    thresholds : ThresholdSource, optional
        Use this threshold source instead of loading ``settings.predictor``.
    ledger : Ledger, optional
        The shared budget to use instead of building one from ``settings.state``.

    Attributes
    ----------
    decider : Decider
        The budget machinery, shared in shape (and, through Redis, in state) with ``serve``.
    """

    def __init__(
        self,
        settings: PluginSettings,
        *,
        thresholds: ThresholdSource | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.thresholds = thresholds or load_threshold_source(
            settings.predictor, settings.route_tau
        )
        self.decider: Decider = build_decider(settings, ledger=ledger)
        self._calls: dict[str, _Call] = {}
        #: Calls charged in full because their request ended without news: a later attempt
        #: of one is refused (it would generate outside what was charged).
        self._gone: dict[str, float] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    # -- background work ------------------------------------------------------------------------
    def _start(self) -> None:
        """Start the price, renewal and sweep loops in the proxy's event loop (once)."""
        if self._loops and not any(t.done() for t in self._loops):
            return
        s = self.settings
        steps: list[tuple[Callable[[], Awaitable[Any]], float]] = [
            (self.decider.refresh, s.tick),
            (self._renew, s.ttl / 3),
            (self._sweep, min(1.0, s.ttl / 3)),
        ]
        self._loops = [asyncio.create_task(every(step, seconds, log)) for step, seconds in steps]

    async def _renew(self) -> None:
        await self.decider.renew()
        for call in list(self._calls.values()):
            for holds in call.extra:
                for ledger, res in holds:
                    try:
                        await ledger.extend(res, self.settings.ttl)
                    except LedgerError:
                        pass  # the store is away: the hold may lapse (charged in full)

    async def _sweep(self) -> None:
        """Charge in full the requests that will not report back (see the module docstring)."""
        now = time.monotonic()
        for key, at in list(self._gone.items()):
            if now - at > self.settings.request_timeout:
                del self._gone[key]
        for key, call in list(self._calls.items()):
            if not call.stream and call.task is not None and call.task.done():
                # The request task ended without a success or failure hook: cancelled (its
                # client left) or crashed. What the provider did is unknown.
                self._gone[key] = now
                await self._close(key, call, call.grant.allowance, "disconnect")
            elif now - call.touched > self.settings.request_timeout:
                self._gone[key] = now
                self._calls.pop(key, None)
                self.decider.abandon(call.grant)  # its reservations lapse: charged in full
                log.warning(
                    "request %s sent no news for %.0f s: charged in full", key, now - call.touched
                )

    async def aclose(self) -> None:
        """Stop the loops and close the ledgers (tests, embedding)."""
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, *self._pending, return_exceptions=True)
        self._loops = []
        await self.decider.aclose()

    # -- 1. price and reserve --------------------------------------------------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        kind = str(getattr(call_type, "value", call_type))
        if kind in UNPRICED:
            raise _error(
                400,
                "invalid_request_error",
                f"this proxy budgets tokens and does not price {kind!r} requests; send them "
                f"as /v1/chat/completions",
                "route_not_budgeted",
            )
        chat = PRICED.get(kind)
        if chat is None:
            return data  # embeddings, moderation, images...: no completion tokens
        self._start()
        key = data.get("litellm_call_id")
        try:
            check_body(data, chat=chat)
            floor = self._floor(data)
            if not isinstance(key, str) or not key:
                raise BadRequest(400, "invalid_call_id", "the request has no LiteLLM call id")
            if key in self._calls or key in self._gone:
                # Clients may choose the id (x-litellm-call-id); each grant is kept by it.
                raise BadRequest(
                    400,
                    "duplicate_call_id",
                    f"call id {key!r} belongs to a request in flight; send a unique "
                    f"x-litellm-call-id or none",
                )
        except BadRequest as exc:
            raise _error(exc.status, "invalid_request_error", str(exc), exc.code) from None
        cap = requested_cap(data, self.settings.max_tokens_ceiling)
        tau = self.thresholds.tau(prompt_text(data))
        d = await self.decider.decide(tau, cap, floor=floor, track=False)
        if isinstance(d, Refusal):
            raise _refusal(d)
        self._calls[key] = _Call(
            d, bool(data.get("stream")), asyncio.current_task(), time.monotonic()
        )
        self._write(data, d)
        return data

    def _floor(self, data: dict[str, Any]) -> int:
        request = data.get("proxy_server_request")
        headers = request.get("headers") if isinstance(request, dict) else None
        name = None
        if isinstance(headers, dict):
            name = next((v for k, v in headers.items() if k.lower() == CLASS_HEADER), None)
        if name is None:
            return 0
        if name not in self.settings.classes:
            raise BadRequest(400, "unknown_class", f"{CLASS_HEADER} {name!r} is not a class")
        return self.settings.classes[name]

    def _write(self, data: dict[str, Any], grant: Grant) -> None:
        """Write the allowance into the request: ``max_tokens`` (``max_completion_tokens``
        too when the client sent it), the thinking fields, no other length field."""
        a = grant.allowance
        for alias in LENGTH_ALIASES:
            data.pop(alias, None)
        data["max_tokens"] = a
        if "max_completion_tokens" in data:
            data["max_completion_tokens"] = a
        mode = self.settings.thinking
        thinking = data.get("thinking")
        asked_budget = isinstance(thinking, dict) and thinking.get("type") == "enabled"
        asked_effort = data.get("reasoning_effort") not in (None, "none")
        effort = mode == "effort" or (mode == "auto" and asked_effort and not asked_budget)
        if mode in ("budget", "effort") or (mode == "auto" and (asked_budget or asked_effort)):
            f = litellm_fields(
                a, reserve=self.settings.reserve, effort=OPENAI_EFFORT if effort else None
            )
            data.pop("reasoning_effort" if not effort else "thinking", None)
            data.update(f.fields)
        metadata = data.get("metadata")
        if isinstance(metadata, dict):
            metadata["shadowprice_allowance"] = a
            metadata["shadowprice_price"] = grant.price

    # -- 2. attempts -----------------------------------------------------------------------------
    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        key = str(kwargs.get("litellm_call_id"))
        call = self._calls.get(key)
        if call is None:
            if key in self._gone:
                raise _error(
                    408, "timeout", "this request was given up and charged in full", "gone"
                )
            return None
        call.touched = time.monotonic()
        if call.attempts >= 1:  # a retry or fallback: it may generate as much again
            holds = await self._hold_again(call.grant)
            if holds is None:
                raise _refusal(
                    self.decider.refuse(
                        "budget_exhausted",
                        "the budget cannot hold another attempt of this request (LiteLLM "
                        "retried or fell back after a failure)",
                    )
                )
            call.extra.append(holds)
        call.attempts += 1
        call.charges.append(None)
        return None

    async def _hold_again(self, grant: Grant) -> list[tuple[Ledger, Reservation]] | None:
        """The grant's allowance once more in each ledger it holds, all or nothing."""
        holds: list[tuple[Ledger, Reservation]] = []
        for ledger, _ in grant.holds:
            try:
                res = await ledger.reserve(grant.allowance, tag="retry", ttl=self.settings.ttl)
            except LedgerError:
                res = None
            if res is None:
                for led, r in holds:
                    await _quiet(led.release(r))
                return None
            holds.append((ledger, res))
        return holds

    async def async_post_call_failure_deployment_hook(
        self,
        request_data: Mapping[str, object],
        exception: Exception,
        call_type: Any,
        fallback_depth: int | None = None,
    ) -> None:
        call = self._calls.get(str(request_data.get("litellm_call_id")))
        if call is not None and call.charges:
            call.charges[-1] = error_charge(_status(exception), call.grant.allowance)

    # -- 3. settle -------------------------------------------------------------------------------
    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        key = str(data.get("litellm_call_id"))
        call = self._calls.get(key)
        if call is None or call.streaming:
            return None
        dump = getattr(response, "model_dump", None)
        body = dump() if callable(dump) else response
        used = count_completion(body, call.grant.allowance)
        await self._close(key, call, used.tokens, used.finish_reason)
        return None

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        key = str(request_data.get("litellm_call_id"))
        call = self._calls.get(key)
        if call is None:
            return None
        recorded = call.charges[-1] if call.charges else None
        charge = (
            recorded
            if recorded is not None
            else error_charge(_status(original_exception), call.grant.allowance)
        )
        await self._close(key, call, charge, "error")
        return None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        key = str(request_data.get("litellm_call_id"))
        call = self._calls.get(key)
        if call is None:
            async for item in response:
                yield item
            return
        call.streaming = True
        meter = StreamMeter()
        complete = False
        try:
            async for item in response:
                call.touched = time.monotonic()
                _feed(meter, item)
                yield item
            complete = True
        finally:
            # The stream ended, failed, or its client left (GeneratorExit or a cancellation:
            # no await may run here), so the settlement runs in a task of its own.
            used = _stream_count(meter, response, call.grant.allowance, complete)
            self._calls.pop(key, None)
            task = asyncio.get_running_loop().create_task(
                self._settle(call, used.tokens, used.finish_reason if complete else "disconnect")
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        metadata = data.get("metadata")
        if not isinstance(metadata, dict) or "shadowprice_allowance" not in metadata:
            return None
        return {
            "x-shadowprice-allowance": str(metadata["shadowprice_allowance"]),
            "x-shadowprice-price": f"{metadata['shadowprice_price']:.6g}",
        }

    async def _close(self, key: str, call: _Call, final: int, finish: str) -> None:
        if self._calls.pop(key, None) is None:
            return  # settled already by another hook
        await self._settle(call, final, finish)

    async def _settle(self, call: _Call, final: int, finish: str) -> None:
        """Charge each attempt: failed ones what their failure is charged (in full when no
        failure was recorded), the last one ``final``."""
        a = call.grant.allowance
        per = [a if c is None else c for c in call.charges[:-1]] + [final]
        try:
            await self.decider.settle(call.grant, per[0], finish if len(per) == 1 else "error")
            for holds, used in zip(call.extra, per[1:], strict=False):
                for ledger, res in holds:
                    await ledger.settle(res, used)
        except LedgerError as exc:
            log.warning("could not settle a request (its reservation lapses): %s", exc)


def _feed(meter: StreamMeter, item: Any) -> None:
    """One chunk as LiteLLM yields it, as the OpenAI chunk the meter reads: each choice's
    text, reasoning, tool calls and finish reason. LiteLLM's own usage is left out (it
    estimates one when the provider sent none): the provider's report is read at the end
    (:func:`_stream_count`)."""
    choices = []
    for c in _fields(item).get("choices") or ():
        got = _fields(c)
        delta = _fields(got.get("delta"))
        d = {
            name: True if name == "tool_calls" else value
            for name in ("content", "reasoning_content", "reasoning", "tool_calls")
            if (value := delta.get(name))
        }
        choice: dict[str, Any] = {"delta": d, "finish_reason": got.get("finish_reason")}
        if isinstance(got.get("text"), str):
            choice["text"] = got["text"]
        choices.append(choice)
    meter.feed_chunk({"choices": choices})


def _fields(obj: Any) -> Mapping[str, Any]:
    """The fields of a LiteLLM response object (a pydantic model keeps the declared ones in
    ``__dict__`` and the rest in ``__pydantic_extra__``; attribute access on a missing one is
    slow), or of a dict."""
    if isinstance(obj, Mapping):
        return obj
    if obj is None:
        return {}
    extra = getattr(obj, "__pydantic_extra__", None)
    own = getattr(obj, "__dict__", None) or {}
    return {**extra, **own} if extra else own


def _stream_count(meter: StreamMeter, response: Any, allowance: int, complete: bool) -> Count:
    """What a stream is charged: the provider's own usage report (LiteLLM keeps the chunks it
    received on its stream wrapper) with the chunks seen, in full when it did not end."""
    chunks = getattr(response, "chunks", None)
    if isinstance(chunks, list):
        for c in reversed(chunks):
            usage = getattr(c, "usage", None)
            if usage is not None:
                dump = getattr(usage, "model_dump", None)
                meter.feed_chunk({"choices": [], "usage": dump() if callable(dump) else usage})
                break
    if complete:
        meter.feed(b"data: [DONE]\n\n")
    return meter.count(allowance, complete=complete)


def _status(exc: BaseException) -> int:
    """The HTTP status an exception stands for (500 when it names none: charged in full)."""
    for name in ("status_code", "code"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return 500


def _error(
    status: int,
    kind: str,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> ProxyException:
    """An OpenAI-style error LiteLLM answers as is: ``{"error": {"message", "type", "param",
    "code"}}`` with ``status``."""
    return ProxyException(
        message=message, type=kind, param=param, code=status, headers=headers, openai_code=code
    )


def _refusal(d: Refusal) -> ProxyException:
    """The gateway's refusal statuses and bodies (see ``serve``'s README section)."""
    headers = {"x-shadowprice-price": f"{d.price:.6g}"}
    if d.retry_after is not None:
        headers["retry-after"] = str(d.retry_after)
    if d.kind == "unavailable":
        return _error(503, "ledger_unavailable", d.message, "ledger_unavailable", headers)
    if d.kind == "cap_too_small":
        return _error(400, "invalid_request_error", d.message, d.kind, headers, "max_tokens")
    return _error(429, d.kind, d.message, d.kind, headers)


async def _quiet(step: Awaitable[Any]) -> None:
    try:
        await step
    except LedgerError:
        pass  # the reservation lapses after its TTL


_handler: ShadowpricePlugin | None = None


def __getattr__(name: str) -> Any:
    """``handler``: the instance LiteLLM's ``callbacks`` names, built from the environment on
    first access (so importing this module needs no configuration)."""
    global _handler
    if name != "handler":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _handler is None:
        _handler = ShadowpricePlugin(PluginSettings.from_env())
    return _handler
