"""Fixtures shared by test modules."""

from __future__ import annotations

import os

import httpx
import pytest


def _llama_skip_reason(url: str) -> str | None:
    if not url:
        return "SHADOWPRICE_LLAMA_URL is not set (start the engine: tools/engine.sh start)"
    try:
        if httpx.get(url.rstrip("/") + "/health", timeout=5).status_code == 200:
            return None
        return f"llama.cpp server at {url} is not healthy"
    except httpx.HTTPError as exc:
        return f"llama.cpp server at {url} is unreachable ({exc})"


@pytest.fixture(scope="session")
def llama_url() -> str:
    """The real llama.cpp server of ``tools/engine.sh start`` (``SHADOWPRICE_LLAMA_URL``);
    tests that need it skip, saying why, when it is not there."""
    url = os.environ.get("SHADOWPRICE_LLAMA_URL", "").strip()
    reason = _llama_skip_reason(url)
    if reason:
        pytest.skip(reason)
    return url
