"""Async client for any OpenAI-compatible chat-completions endpoint.

Works with vLLM, SGLang, llama.cpp's server and hosted APIs. It knows HTTP and token usage,
nothing about prices. Retries (429, 5xx, connection errors, timeouts) reuse the caller's
token reservation: a retry re-sends the same ``max_tokens`` and only the answered attempt is
charged, so the budget is never charged twice for one request.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import httpx

TokenParam = Literal["auto", "max_tokens", "max_completion_tokens", "both"]

#: HTTP statuses worth retrying: rate limits and transient server faults.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


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


def normalize_base_url(url: str) -> str:
    """Accept ``http://host:port``, ``.../v1`` or ``.../v1/``; return the ``/v1`` root."""
    url = url.strip().rstrip("/")
    url = url.removesuffix("/chat/completions")
    if not url.endswith("/v1"):
        url += "/v1"
    return url


def parse_usage(body: dict[str, Any], max_tokens: int) -> Usage:
    """Read the server's usage; charge ``max_tokens`` where it is missing or implausible.

    Never under-counts: a response with text but zero (or absent) completion tokens is
    charged the full allowance, flagged ``trusted=False``.
    """
    usage = body.get("usage") or {}
    choices = body.get("choices") or [{}]
    text = ((choices[0].get("message") or {}).get("content")) or ""
    details = usage.get("completion_tokens_details") or {}
    reasoning = int(details.get("reasoning_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = usage.get("completion_tokens")
    if not isinstance(completion, int) or completion < 0 or (completion == 0 and text):
        timings = body.get("timings") or {}  # llama.cpp reports its own count here
        predicted = timings.get("predicted_n")
        if isinstance(predicted, int) and predicted > 0:
            return Usage(prompt, predicted, reasoning, trusted=False)
        return Usage(prompt, max_tokens, reasoning, trusted=False)
    return Usage(prompt, int(completion), reasoning, trusted=True)


class ChatClient:
    """Async OpenAI-compatible chat client with retries and backoff.

    Parameters
    ----------
    base_url : endpoint root, e.g. ``http://127.0.0.1:8080`` (``/v1`` is added if missing).
    model : model name sent in every request.
    api_key : sent as a bearer token when given.
    timeout : seconds for a whole request (reads included); long generations need a lot.
    max_retries : extra attempts after the first on retryable failures.
    backoff : first backoff in seconds; doubles each retry (with jitter), capped at 30 s.
    token_param : how the allowance is sent. ``auto`` sends both ``max_tokens`` and
        ``max_completion_tokens`` and falls back to one of them if the server rejects the other.
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
        token_param: TokenParam = "auto",
        extra_body: dict[str, Any] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.max_retries = max_retries
        self.backoff = backoff
        self.token_param: TokenParam = token_param
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers=headers,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    def _payload(self, messages: list[dict[str, str]], max_tokens: int, **params: Any) -> dict:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "n": 1}
        body.update(self.extra_body)
        body.update(params)
        body["n"] = 1  # llama.cpp reports usage of the first choice only when n > 1
        if self.token_param in ("auto", "both", "max_tokens"):
            body["max_tokens"] = max_tokens
        if self.token_param in ("auto", "both", "max_completion_tokens"):
            body["max_completion_tokens"] = max_tokens
        return body

    def _adapt_token_param(self, response: httpx.Response) -> bool:
        """On a 400 naming one allowance parameter, switch to the other; True if switched."""
        if self.token_param != "auto" or response.status_code != 400:
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
                    return min(float(after), 60.0)
                except ValueError:
                    pass
        base = min(self.backoff * (2**attempt), 30.0)
        return base * (0.5 + random.random() / 2)

    async def chat(
        self, messages: list[dict[str, str]], max_tokens: int, **params: Any
    ) -> Completion:
        """Send one chat completion with allowance ``max_tokens``; retry transient failures.

        The caller holds a ledger reservation of ``max_tokens`` for the whole call; every
        attempt re-sends the same allowance, so retries never need a second reservation.
        """
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        last = "no attempt made"
        start = time.perf_counter()
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.post(
                    url, json=self._payload(messages, max_tokens, **params)
                )
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._completion(response, max_tokens, start, attempt + 1)
                if self._adapt_token_param(response):
                    continue  # not a retry: the request was rejected before generating
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUSES:
                    raise EngineError(last, status=response.status_code, attempts=attempt + 1)
            if attempt >= self.max_retries:
                status = response.status_code if response is not None else None
                raise EngineError(
                    f"gave up after {attempt + 1} attempts: {last}",
                    status=status,
                    attempts=attempt + 1,
                )
            await asyncio.sleep(self._delay(attempt, response))
            attempt += 1

    def _completion(
        self, response: httpx.Response, max_tokens: int, start: float, attempts: int
    ) -> Completion:
        try:
            body = response.json()
            choice = body["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineError(
                f"malformed response: {response.text[:300]}",
                status=response.status_code,
                attempts=attempts,
                charge=max_tokens,
            ) from exc
        message = choice.get("message") or {}
        return Completion(
            text=message.get("content") or "",
            reasoning_text=message.get("reasoning_content") or message.get("reasoning") or "",
            finish_reason=str(choice.get("finish_reason") or "unknown"),
            usage=parse_usage(body, max_tokens),
            latency_s=time.perf_counter() - start,
            attempts=attempts,
            raw=body,
        )
