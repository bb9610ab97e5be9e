"""Async client for any OpenAI-compatible chat-completions endpoint.

Works with vLLM, SGLang, llama.cpp's server and hosted APIs. It knows HTTP and token usage,
nothing about prices. What a response is charged follows the package's one counting rule
(:mod:`shadowprice.usage`): what cannot be counted is charged in full, never under-count.

**Retries never spend a reservation twice.** The caller holds one reservation of
``max_tokens`` for a :meth:`ChatClient.chat` call. An attempt the server refused before
generating (a connection that could not be made; 429, 503, 529 or another 4xx) generated
nothing, so it is retried under the same reservation. An attempt that may have generated (a
timeout or a dropped connection after the request was sent, a 500, 502 or 504, an answer that
cannot be read) is charged its whole allowance and ends the call with an :class:`EngineError`
carrying that charge: a new attempt needs a new reservation, which is the caller's to make.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import httpx

from ..providers import Preset
from ..usage import count_completion, error_charge, read_usage
from .transport import HttpClient

TokenParam = Literal["auto", "max_tokens", "max_completion_tokens", "both"]
#: How a request that stopped on its cap is continued: ``prefill`` (llama.cpp's server continues
#: a final assistant message by default), ``vllm`` (vLLM and SGLang, with
#: ``continue_final_message``), ``off`` (no continuation); ``auto`` asks the server.
Continuation = Literal["auto", "prefill", "vllm", "off"]
CONTINUATIONS: tuple[str, ...] = ("auto", "prefill", "vllm", "off")

#: HTTP statuses worth retrying under the same reservation: refusals before generating (rate
#: limits, overload, a conflict) that say nothing was generated (see the module docstring).
RETRY_STATUSES = frozenset({409, 425, 429, 503, 529})


class EngineError(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted)."""

    def __init__(
        self, message: str, *, status: int | None = None, attempts: int = 1, charge: int = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        #: tokens to charge anyway: a 200 we could not read may still have been generated
        self.charge = charge


@dataclass
class Usage:
    """Token counts of one response, as far as they can be trusted."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    #: False when the server's usage was missing or implausible and we charged a safe bound.
    trusted: bool = True


@dataclass
class Completion:
    """One answered chat completion (always a single choice: we send n=1)."""

    text: str
    finish_reason: str
    usage: Usage
    latency_s: float
    attempts: int
    reasoning_text: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Whether the answer is right, when the engine knows it (a replayed sample); None for a
    #: model's answer, which is graded from its text.
    correct: bool | None = None


def normalize_base_url(url: str) -> str:
    """Accept ``http://host:port``, ``.../v1`` or ``.../v1/``; return the ``/v1`` root.

    Raises
    ------
    ValueError
        If ``url`` is not an absolute http(s) URL with a host.
    """
    text = str(url).strip().rstrip("/")
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"endpoint {url!r} is not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"endpoint {url!r} is not an http(s) URL with a host; e.g. http://127.0.0.1:8000/v1"
        )
    text = text.removesuffix("/chat/completions").removesuffix("/completions")
    if not text.endswith("/v1"):
        text += "/v1"
    return text


class MalformedResponse(EngineError):
    """A 200 response whose body cannot be read as a chat completion."""


def parse_usage(body: dict[str, Any], max_tokens: int) -> Usage:
    """What a chat-completions body is charged, by the one counting rule
    (:mod:`shadowprice.usage`).

    The server's count where it can be believed; the full allowance where usage is missing,
    says 0 tokens for an answer with text (llama.cpp's own ``timings.predicted_n`` where
    present), or the answer stopped on its cap with fewer reported (``trusted=False`` then).
    A count above the allowance is charged as reported (the server generated past
    ``max_tokens``: an overrun the ledger records).

    Raises
    ------
    ValueError
        When usage fields are present but wrong: not an object, not a non-negative integer, or
        absurd (:func:`shadowprice.usage.absurd`).
    """
    _, _, _, problem = read_usage(body, max_tokens)
    if problem:
        raise ValueError(problem)
    count = count_completion(body, max_tokens)
    return Usage(count.prompt_tokens, count.tokens, count.reasoning_tokens, count.trusted)


def _optional_str(container: dict[str, Any], key: str, where: str) -> str:
    v = container.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{where}.{key} is a {type(v).__name__}, not a string")
    return v


def parse_completion(body: Any, max_tokens: int) -> tuple[str, str, str, Usage]:
    """(text, reasoning text, finish reason, usage) of a chat-completions body.

    Raises
    ------
    ValueError
        Naming the field when the body is not a chat completion (wrong types, missing
        ``choices``, unbelievable usage).
    """
    if not isinstance(body, dict):
        raise ValueError(f"the body is a JSON {type(body).__name__}, not an object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"choices is {choices!r:.60}, not a non-empty list")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ValueError(f"choices[0] is a {type(choice).__name__}, not an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ValueError(f"choices[0].message is {message!r:.60}, not an object")
    text = _optional_str(message, "content", "choices[0].message")
    reasoning = _optional_str(message, "reasoning_content", "choices[0].message") or (
        _optional_str(message, "reasoning", "choices[0].message")
    )
    finish = _optional_str(choice, "finish_reason", "choices[0]") or "unknown"
    return text, reasoning, finish, parse_usage(body, max_tokens)


class ChatClient:
    """Async OpenAI-compatible chat client with retries and backoff.

    Parameters
    ----------
    base_url : str
        Endpoint root, e.g. ``http://127.0.0.1:8080`` (``/v1`` is added if missing).
    model : str
        Model name sent in every request.
    api_key : str, optional
        Sent as a bearer token when given.
    timeout : float
        Seconds one attempt may take (reads included); long generations need a lot.
    max_retries : int
        Extra attempts after the first on retryable failures.
    backoff : float
        First backoff in seconds; doubles each retry (with jitter), capped at 30 s.
    deadline : float, optional
        Seconds one :meth:`chat` call may take over all its attempts and backoffs; default
        ``timeout * (max_retries + 1)`` plus the backoffs. Each attempt's timeout is cut to
        what is left of it.
    token_param : {'auto', 'max_tokens', 'max_completion_tokens', 'both'}
        How the allowance is sent. ``auto`` sends both and falls back to one of them if the
        server rejects the other.
    preset : Preset, optional
        Write each request's allowance in one provider's fields instead
        (:class:`~shadowprice.providers.Preset`: the output cap, a thinking cap and an answer
        reserve); ``token_param`` is then not used.
    extra_body : dict, optional
        Fields added to every request body.
    http : httpx.AsyncClient, optional
        A client to share (not closed by :meth:`aclose`); default: the package's own
        (:class:`~shadowprice.engine.transport.HttpClient`, shared with the gateway).

    Raises
    ------
    ValueError
        For a URL that is not http(s), a timeout or deadline that is not a positive finite
        number of seconds, or a negative ``max_retries``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        deadline: float | None = None,
        token_param: TokenParam = "auto",
        extra_body: dict[str, Any] | None = None,
        http: httpx.AsyncClient | None = None,
        preset: Preset | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        _check_seconds("timeout", timeout)
        if deadline is not None:
            _check_seconds("deadline", deadline)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        if not (math.isfinite(backoff) and backoff >= 0):
            raise ValueError(f"backoff must be a non-negative number of seconds, got {backoff!r}")
        if not model or not isinstance(model, str):
            raise ValueError("model must be a non-empty name")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.deadline = deadline
        self.token_param: TokenParam = token_param
        self.preset = preset
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self._http = http or HttpClient(
            headers=headers,
            timeout=timeout,
            connect_timeout=min(10.0, timeout),
            max_connections=256,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_http:
            await self._http.aclose()

    def _payload(
        self, messages: list[dict[str, str]], max_tokens: int, **params: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "n": 1}
        body.update(self.extra_body)
        body.update(params)
        body["n"] = 1  # llama.cpp reports usage of the first choice only when n > 1
        if self.preset is not None:
            return self.preset.apply(body, max_tokens)
        if self.token_param in ("auto", "both", "max_tokens"):
            body["max_tokens"] = max_tokens
        if self.token_param in ("auto", "both", "max_completion_tokens"):
            body["max_completion_tokens"] = max_tokens
        return body

    def _adapt_token_param(self, response: httpx.Response) -> bool:
        """On a 400 naming one allowance parameter, switch to the other; True if switched."""
        if self.token_param != "auto" or self.preset is not None or response.status_code != 400:
            return False
        text = response.text.lower()
        # OpenAI rejects max_tokens for reasoning models ("use max_completion_tokens");
        # older servers reject the unknown max_completion_tokens. Which one is named alone?
        if "max_tokens" in text.replace("max_completion_tokens", ""):
            self.token_param = "max_completion_tokens"
            return True
        if "max_completion_tokens" in text:
            self.token_param = "max_tokens"
            return True
        return False

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = response.headers.get("retry-after")
            if after:
                try:
                    return min(max(float(after), 0.0), 60.0)
                except ValueError:
                    pass
        base = min(self.backoff * (2**attempt), 30.0)
        return base * (0.5 + random.random() / 2)

    async def continuation(self) -> Continuation:
        """Which continuation the server supports: ``prefill`` for llama.cpp's server (it
        answers ``GET /props``), ``vllm`` for vLLM (it answers ``GET /version`` with a
        version), else ``off``. Costs no tokens."""
        root = self.base_url.removesuffix("/v1")
        probe = httpx.Timeout(min(5.0, self.timeout))
        try:
            r = await self._http.get(f"{root}/props", timeout=probe)
            if r.status_code == 200 and "default_generation_settings" in r.text:
                return "prefill"
        except httpx.HTTPError:
            pass
        try:
            r = await self._http.get(f"{root}/version", timeout=probe)
            if r.status_code == 200 and "version" in r.json():
                return "vllm"
        except (httpx.HTTPError, ValueError, TypeError):
            pass
        return "off"

    async def chat(
        self, messages: list[dict[str, str]], max_tokens: int, **params: Any
    ) -> Completion:
        """Send one chat completion with allowance ``max_tokens``; retry transient failures.

        The caller holds a ledger reservation of ``max_tokens`` for the whole call; every
        attempt re-sends the same allowance, so retries never need a second reservation.

        Raises
        ------
        EngineError
            When the request fails for good, or fails after it may have generated (see the
            module docstring). Its ``charge`` is what the failed call may have been billed:
            the allowance for a 200 whose body could not be read (:class:`MalformedResponse`),
            a timeout or dropped connection after the request was sent, or an HTTP error that
            can follow generation; else 0.
        """
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        last = "no attempt made"
        start = time.perf_counter()
        deadline = start + (self.deadline if self.deadline is not None else math.inf)
        while True:
            response: httpx.Response | None = None
            left = deadline - time.perf_counter()
            try:
                response = await self._http.post(
                    url,
                    json=self._payload(messages, max_tokens, **params),
                    timeout=httpx.Timeout(min(self.timeout, left), connect=min(10.0, left)),
                )
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not isinstance(exc, _NOT_SENT):
                    # The server had the request and may have generated (and billed) tokens:
                    # charged in full, and not retried under the same reservation.
                    raise EngineError(
                        f"{last} after the request was sent",
                        attempts=attempt + 1,
                        charge=max_tokens,
                    ) from None
            else:
                if response.status_code == 200:
                    return self._completion(response, max_tokens, start, attempt + 1)
                if self._adapt_token_param(response):
                    continue  # not a retry: the request was rejected before generating
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUSES:
                    raise EngineError(
                        last,
                        status=response.status_code,
                        attempts=attempt + 1,
                        charge=error_charge(response.status_code, max_tokens),
                    )
            status = response.status_code if response is not None else None
            wait = self._delay(attempt, response)
            if attempt >= self.max_retries:
                raise EngineError(
                    f"gave up after {attempt + 1} attempts: {last}",
                    status=status,
                    attempts=attempt + 1,
                )
            if time.perf_counter() + wait >= deadline:
                raise EngineError(
                    f"deadline of {self.deadline:g} s reached after {attempt + 1} attempts: {last}",
                    status=status,
                    attempts=attempt + 1,
                )
            await asyncio.sleep(wait)
            attempt += 1

    def _completion(
        self, response: httpx.Response, max_tokens: int, start: float, attempts: int
    ) -> Completion:
        try:
            body = response.json()
            text, reasoning, finish, usage = parse_completion(body, max_tokens)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise MalformedResponse(
                f"malformed response ({exc}): {response.text[:200]}",
                status=response.status_code,
                attempts=attempts,
                charge=max_tokens,  # it may have generated up to the allowance
            ) from None
        return Completion(
            text=text,
            reasoning_text=reasoning,
            finish_reason=finish,
            usage=usage,
            latency_s=time.perf_counter() - start,
            attempts=attempts,
            raw=body,
        )


#: Transport errors raised before the request reached a server: nothing was generated.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _check_seconds(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
