"""What a client sent: its body read within the size limit and checked, its key, its class,
and the OpenAI-style errors it gets back when any of that is wrong.

Only what matters to the budget and to reading the request is checked (the messages or prompt,
``max_tokens``, how many completions it asks for, ``stream``); the upstream validates the rest.
A request is budgeted as one completion: a body that would make the upstream generate several
(``n``, ``best_of``, beam search, several prompts) is refused, naming the field. The key is
looked up in constant time and never logged (see :class:`~shadowprice.serve.config.KeyTable`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .config import GatewayConfig, Tenant

__all__ = [
    "BadRequest",
    "authenticate",
    "check_body",
    "error_response",
    "floor_of",
    "read_json",
    "requested_cap",
]


class BadRequest(Exception):
    """A client error.

    Parameters
    ----------
    status : int
        HTTP status (400, 401, 413).
    code : str
        OpenAI-style error code (``invalid_json``, ``invalid_api_key``, ...).
    message : str
        What is wrong and how to fix it.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def response(self) -> JSONResponse:
        """The error as an OpenAI-style response."""
        return error_response(self.status, "invalid_request_error", str(self), self.code)


def error_response(
    status: int,
    kind: str,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
) -> JSONResponse:
    """An OpenAI-style error: ``{"error": {"message", "type", "code", "param"}}``."""
    body = {"error": {"message": message, "type": kind, "code": code, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes (declared or streamed), 400 if it
    is not a JSON object."""
    too_large = BadRequest(413, "request_too_large", f"request body larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise BadRequest(400, "invalid_json", f"body is not JSON: {exc}") from exc
    except RecursionError:
        raise BadRequest(400, "invalid_json", "body is not JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "invalid_body", "body must be a JSON object")
    return body


def check_body(body: dict[str, Any], *, chat: bool) -> None:
    """Raise :class:`BadRequest` naming the first field that the budget cannot work with."""
    if chat:
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BadRequest(400, "invalid_max_tokens", f"'{key}' must be a positive integer")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest(400, "invalid_stream", "'stream' must be true or false")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise BadRequest(400, "invalid_stream_options", "'stream_options' must be an object")
    for key in ("n", "best_of"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v != 1):
            raise BadRequest(
                400,
                "unsupported_n",
                f"'{key}' must be 1: each request is budgeted as one completion; send one "
                "request per completion",
            )
    if body.get("use_beam_search"):
        raise BadRequest(
            400,
            "unsupported_n",
            "'use_beam_search' generates several beams: each request is budgeted as one completion",
        )
    if "model" in body and not isinstance(body["model"], str):
        raise BadRequest(400, "invalid_model", "'model' must be a string")


def _check_messages(messages: Any) -> None:
    if not (isinstance(messages, list) and messages):
        raise BadRequest(
            400, "invalid_messages", "'messages' must be a non-empty list of message objects"
        )
    for k, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(400, "invalid_messages", f"'messages[{k}]' must be an object")
        if not isinstance(m.get("role"), str):
            raise BadRequest(
                400, "invalid_messages", f"'messages[{k}].role' must be a string, e.g. 'user'"
            )
        content = m.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
            raise BadRequest(
                400,
                "invalid_messages",
                f"'messages[{k}].content' must be a string or a list of content-part objects",
            )


def _check_prompt(prompt: Any) -> None:
    """One prompt: a string, token ids, or a list holding one of them."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) > 1:
            raise BadRequest(
                400,
                "unsupported_n",
                f"'prompt' holds {len(prompt)} prompts: each request is budgeted as one "
                "completion; send one prompt per request",
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        return
    raise BadRequest(
        400, "invalid_prompt", "'prompt' must be a string or a list of token ids (one prompt)"
    )


def requested_cap(body: dict[str, Any], ceiling: int) -> int:
    """The client's ``max_tokens`` (or ``max_completion_tokens``, the smaller), clamped to
    ``ceiling``; ``ceiling`` when it asks for none."""
    asked = [body.get("max_completion_tokens"), body.get("max_tokens")]
    return min([ceiling, *(v for v in asked if isinstance(v, int) and not isinstance(v, bool))])


def authenticate(request: Request, config: GatewayConfig) -> Tenant | None:
    """The tenant of the request's bearer key (None when no key table is configured)."""
    if config.keys is None:
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    tenant = config.keys.lookup(key) if scheme.lower() == "bearer" and key else None
    if tenant is None:
        raise BadRequest(
            401, "invalid_api_key", "missing or unknown API key (send Authorization: Bearer KEY)"
        )
    return tenant


def floor_of(request: Request, tenant: Tenant | None, config: GatewayConfig) -> int:
    """Guaranteed tokens of the request: its tenant's floor, raised by the class it selects
    with ``x-shadowprice-class`` (one of the configured classes its key may use)."""
    floor = tenant.floor if tenant else 0
    name = request.headers.get("x-shadowprice-class")
    if name is None:
        return floor
    allowed = name in config.classes and (
        config.keys is None or (tenant is not None and name in tenant.classes)
    )
    if not allowed:
        raise BadRequest(
            400, "unknown_class", f"x-shadowprice-class {name!r} is not a class this key may use"
        )
    return max(floor, config.classes[name])
