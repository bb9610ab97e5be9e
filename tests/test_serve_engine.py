"""The gateway in front of the real local llama.cpp server, called through the official
``openai`` client as a user would, with the ledger in a real Redis.

Needs ``SHADOWPRICE_LLAMA_URL`` (``tools/engine.sh start``; CI always starts it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from shadowprice.ledger.redis import RedisLedger
from shadowprice.serve import Gateway, GatewayConfig
from shadowprice.serve.localredis import LocalRedis
from shadowprice.serve.predictor import FixedThreshold
from shadowprice.serve.testing import ServerThread

pytestmark = pytest.mark.engine

BUDGET = 160  # tokens for the whole test: runs out after a few requests


@pytest.fixture(scope="module")
def gateway(llama_url: str) -> Iterator[tuple[str, LocalRedis, str]]:
    ns = uuid.uuid4().hex
    with LocalRedis() as redis:
        cfg = GatewayConfig(
            [llama_url], budget=BUDGET, period=86_400, state=redis.url, namespace=ns,
            max_tokens_ceiling=48, ttl=30,
        )  # fmt: skip
        gw = Gateway(cfg, thresholds=FixedThreshold(8.0))
        with ServerThread(gw.app) as s:
            yield s.url, redis, ns


def _spent(redis: LocalRedis, ns: str) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        led = RedisLedger.from_url(redis.url, BUDGET, period=86_400, namespace=ns)
        try:
            s = await led.state()
            return s.spent, s.reserved
        finally:
            await led.aclose()

    for _ in range(100):
        spent, reserved = asyncio.run(go())
        if reserved == 0:
            break
        time.sleep(0.05)
    return spent, reserved


def test_openai_client_through_the_gateway_never_exceeds_allowance_or_budget(gateway) -> None:  # type: ignore[no-untyped-def]
    import openai

    url, redis, ns = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    question = [{"role": "user", "content": "Count from one to twenty in words."}]
    charged = 0
    refused = None
    for i in range(8):
        try:
            if i % 2 == 0:
                raw = client.chat.completions.with_raw_response.create(
                    model="local", messages=question, max_tokens=40
                )
                allowance = int(raw.headers["x-shadowprice-allowance"])
                done = raw.parse()
                assert done.usage is not None
                assert 0 < done.usage.completion_tokens <= allowance <= 40
                charged += done.usage.completion_tokens
            else:
                with client.chat.completions.with_streaming_response.create(
                    model="local", messages=question, max_tokens=40, stream=True,
                    stream_options={"include_usage": True},
                ) as resp:  # fmt: skip
                    allowance = int(resp.headers["x-shadowprice-allowance"])
                    chunks = list(resp.parse())
                usage = [c.usage for c in chunks if c.usage is not None]
                assert usage and 0 < usage[-1].completion_tokens <= allowance
                charged += usage[-1].completion_tokens
        except openai.RateLimitError as exc:
            refused = exc
            break
    assert refused is not None, "the 160-token budget should run out within 8 requests"
    assert refused.status_code == 429
    body = refused.response.json()["error"]
    assert (
        body["type"] in ("budget_exhausted", "priced_out")
        and refused.response.headers["retry-after"]
    )
    spent, reserved = _spent(redis, ns)
    assert reserved == 0 and spent == charged <= BUDGET


def test_the_llamacpp_preset_reaches_the_real_server(llama_url: str) -> None:
    """``--provider llamacpp``: the allowance as max_tokens with a thinking cap and an answer
    reserve in llama.cpp's own field; the real server takes it and stays within it."""
    import openai

    from shadowprice.ledger import MemoryLedger

    cfg = GatewayConfig([llama_url], budget=10_000, period=86_400, provider="llamacpp")
    gw = Gateway(cfg, thresholds=FixedThreshold(8.0))
    assert isinstance(gw.ledger, MemoryLedger)
    with ServerThread(gw.app) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "What is 2+3?"}], max_tokens=40
        )
        reply = raw.parse()
    allowance = int(raw.headers["x-shadowprice-allowance"])
    assert allowance <= 40 and reply.usage is not None
    assert reply.usage.completion_tokens <= allowance
    thinking, reserve, _ = gw.preset.split(allowance)
    assert thinking + reserve == allowance and reserve >= min(64, allowance)
    assert gw.preset.fields(allowance).fields == {
        "max_tokens": allowance,
        "thinking_budget_tokens": thinking,
    }
