"""The gateway against an upstream that misbehaves on purpose, and clients that send odd but
ordinary requests: the budget holds (counted against what the upstream *generated*), every
answer is an OpenAI response or an OpenAI error body, and the gateway never answers 5xx for a
request body. Real HTTP on loopback throughout; the openai SDK where a user would use it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowprice.serve import Gateway, GatewayConfig, load_keys
from shadowprice.serve.predictor import FixedThreshold, TextPredictor
from shadowprice.serve.testing import FAULTS, FakeLog, ServerThread, fake_upstream
from test_serve import Running

#: Statuses that say an upstream failed (the gateway's own answer to a request is never 5xx).
UPSTREAM_FAILED = {502, 504}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    """A fast fault-capable upstream that counts what it would have generated."""
    app, log = fake_upstream(speed=0, worst_case=True, pause=3.0, keep_bodies=False)
    with ServerThread(app) as s:
        yield s.url, log


def chat(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def Gw(upstreams: list[str], thresholds: Any = None, **cfg: Any) -> Running:
    """A gateway in a thread over an in-process ledger, one long period, a small relay limit."""
    cfg.setdefault("period", 10**7)
    cfg.setdefault("max_upstream_body", 1 << 20)
    return Running(upstreams, thresholds=thresholds, **cfg)


def assert_openai_error(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and err["type"] and err["code"]
    return dict(err)


# -- overspend paths ------------------------------------------------------------------------------
def test_a_stream_answered_as_json_is_relayed_as_a_stream_and_charged(upstream) -> None:  # type: ignore[no-untyped-def]
    """The upstream ignores ``stream``: 20 streaming requests of 300 tokens against 1,000
    tokens generated 2,000-2,500 before; now the budget holds and clients get their stream."""
    url, log = upstream
    log.reset()
    with Gw([url], budget=1000, tick=3600) as g:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key="none", max_retries=0)
        answered = 0
        for _ in range(20):
            try:
                stream = client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "LEN:300 FAULT:json"}],
                    max_tokens=300,
                    stream=True,
                )
            except openai.RateLimitError:
                continue
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            assert text.startswith("tok ")
            answered += 1
        s = g.idle().state_now()
    assert answered == 3  # 300 each of 1,000
    assert log.generated == s.spent == 900 and s.spent <= 1000


def test_a_streaming_request_answered_with_garbage_is_charged_in_full(upstream) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    log.reset()
    with Gw([url], budget=1000, tick=3600) as g:
        for fault in ("garbage", "sse_garbage", "notcompletion", "truncated", "oversized"):
            r = g.post(chat(f"LEN:200 FAULT:{fault}", stream=True, max_tokens=200))
            if r.status_code == 200:  # the event stream started: the error is its last event
                assert '"upstream_error"' in r.text.strip().splitlines()[-1]
            else:
                assert r.status_code == 502
                assert_openai_error(r)
        s = g.idle().state_now()
    assert s.spent == 5 * 200 >= log.generated  # each charged its whole allowance


def test_one_request_one_completion(upstream) -> None:  # type: ignore[no-untyped-def]
    """Prompt lists, token-id batches, best_of, beam search: each would generate several
    completions for the price of one."""
    url, _ = upstream
    with Gw([url]) as g:
        for body in (
            {"model": "m", "prompt": ["a LEN:10", "b LEN:10", "c LEN:10", "d LEN:10"]},
            {"model": "m", "prompt": [[1, 2, 3], [4, 5, 6]]},
            {"model": "m", "prompt": "LEN:10", "best_of": 3},
            {"model": "m", "prompt": "LEN:10", "n": 2},
            {"model": "m", "prompt": "LEN:10", "use_beam_search": True},
        ):
            r = g.post(body, path="/v1/completions")
            assert r.status_code == 400, body
            assert assert_openai_error(r)["code"] == "unsupported_n"
        for body in (
            {"model": "m", "prompt": ["LEN:10"]},
            {"model": "m", "prompt": [1, 2, 3]},
            {"model": "m", "prompt": [[1, 2, 3]]},
            {"model": "m", "prompt": "LEN:10", "n": 1, "best_of": 1},
        ):
            assert g.post(body, path="/v1/completions").status_code == 200, body
        assert g.post(chat("LEN:10", n=4)).status_code == 400


def test_length_fields_other_servers_read_cannot_bypass_the_allowance(upstream) -> None:  # type: ignore[no-untyped-def]
    app, log = fake_upstream(speed=0)
    with ServerThread(app) as up, Gw([up.url]) as g:
        body = chat(
            "LEN:10",
            n_predict=100_000,
            max_new_tokens=100_000,
            max_length=100_000,
            max_output_tokens=100_000,
            options={"num_predict": 100_000, "temperature": 0},
        )
        assert g.post(body).status_code == 200
        sent = log.bodies[-1]
        assert not {"n_predict", "max_new_tokens", "max_length", "max_output_tokens"} & set(sent)
        assert sent["options"] == {"temperature": 0}
        assert sent["max_tokens"] == sent["max_completion_tokens"] <= 300


def test_a_non_streaming_body_that_is_not_a_completion_is_a_502(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    with Gw([url]) as g:
        client = openai.OpenAI(base_url=g.url + "/v1", api_key="none", max_retries=0)
        for fault in ("notcompletion", "garbage", "truncated", "oversized"):
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"FAULT:{fault}"}]
                )
            assert info.value.status_code == 502
        assert g.idle().state_now().spent == 4 * 300  # each may have generated: in full


@pytest.mark.parametrize("fault", ["nousage", "lowusage", "negusage", "absurdusage", "strusage"])
@pytest.mark.parametrize("stream", [False, True])
def test_usage_that_cannot_be_believed_is_charged_in_full(
    upstream, fault: str, stream: bool
) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    with Gw([url]) as g:
        log.reset()
        r = g.post(chat(f"LEN:40 FAULT:{fault}", stream=stream, max_tokens=100))
        assert r.status_code == 200
        s = g.idle().state_now()
    assert s.spent == 100 >= log.generated == 40


# -- odd but ordinary requests --------------------------------------------------------------------
ODD_BODIES: list[tuple[str, Any, int]] = [
    ("empty content", chat(""), 200),
    ("blank content", chat("   \n\t"), 200),
    ("image-only parts", chat([{"type": "image_url", "image_url": {"url": "data:,"}}]), 200),
    ("text and image parts", chat([{"type": "text", "text": "LEN:5"}, {"type": "image"}]), 200),
    ("no content", {"model": "m", "messages": [{"role": "user"}]}, 200),
    ("null content", chat(None), 200),
    (
        "assistant last",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]},
        200,
    ),
    ("numeric content", chat(5), 400),
    ("part that is not an object", chat(["text"]), 400),
    ("message without role", {"model": "m", "messages": [{"content": "hi"}]}, 400),
    ("message that is a string", {"model": "m", "messages": ["hi"]}, 400),
    ("empty messages", {"model": "m", "messages": []}, 400),
    ("no messages", {"model": "m"}, 400),
    ("stream_options a list", chat("hi", stream=True, stream_options=[]), 400),
    ("max_tokens a float", chat("hi", max_tokens=1.5), 400),
    ("max_tokens NaN", '{"messages": [{"role": "user", "content": "x"}], "max_tokens": NaN}', 400),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, 400),
    ("deep nesting in a field", '{"messages": ' + "[" * 50_000 + "]" * 50_000 + "}", 400),
    ("not UTF-8", b'{"messages": "\xff\xfe"}', 400),
    ("a JSON string", '"hello"', 400),
    ("lone surrogate", '{"messages": [{"role": "user", "content": "\\ud800 LEN:3"}]}', 200),
]


@pytest.mark.parametrize("name,body,status", ODD_BODIES, ids=[b[0] for b in ODD_BODIES])
def test_odd_requests_get_an_answer_or_a_400_never_a_500(  # type: ignore[no-untyped-def]
    upstream, name: str, body: Any, status: int
) -> None:
    url, _ = upstream
    with Gw([url], thresholds=_text_predictor()) as g:
        r = g.post(body)
        assert r.status_code == status, (name, r.text[:300])
        if status == 400:
            assert assert_openai_error(r)["type"] == "invalid_request_error"
        else:
            assert r.json()["choices"]
    prompts = [("empty prompt", ""), ("blank prompt", "  "), ("token ids", [1, 2])]
    with Gw([url], thresholds=_text_predictor()) as g:
        for _, prompt in prompts:
            r = g.post({"model": "m", "prompt": prompt}, path="/v1/completions")
            assert r.status_code == 200, r.text


_PREDICTOR: TextPredictor | None = None


def _text_predictor() -> TextPredictor:
    """The bundled text predictor (what `serve` runs by default), loaded once."""
    global _PREDICTOR
    if _PREDICTOR is None:
        from shadowprice.predict import load_predictor

        _PREDICTOR = TextPredictor(load_predictor("default"))
    return _PREDICTOR


def test_a_request_without_text_is_priced_on_the_median_curve() -> None:
    from shadowprice.predict import load_predictor

    p = TextPredictor(load_predictor("default"))
    first = p.tau("")  # before any text: a generic question's threshold
    assert first > 0
    taus = [p.tau(q) for q in ("What is 2+2?", "Prove that there are infinitely many primes.")]
    assert p.tau("   ") == p.default_tau == pytest.approx(sum(taus) / 2)


# -- what clients may see -------------------------------------------------------------------------
def test_with_keys_nothing_internal_is_shown_without_one(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    keyfile = tmp_path / "keys.jsonl"
    rows = [
        {"sha256": hashlib.sha256(b"sk-user").hexdigest(), "tenant": "user"},
        {"sha256": hashlib.sha256(b"sk-ops").hexdigest(), "tenant": "ops", "metrics": True},
    ]
    keyfile.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with Gw([url], keys=load_keys(keyfile)) as g:
        for path in ("/metrics", "/v1/models"):
            r = httpx.get(g.url + path, timeout=10)
            assert r.status_code == 401 and assert_openai_error(r)["code"] == "invalid_api_key"
        user, ops = ({"authorization": f"Bearer sk-{k}"} for k in ("user", "ops"))
        assert httpx.get(g.url + "/v1/models", headers=user, timeout=10).status_code == 200
        assert httpx.get(g.url + "/metrics", headers=user, timeout=10).status_code == 403
        assert g.post(chat("LEN:3"), headers=user).status_code == 200
        text = httpx.get(g.url + "/metrics", headers=ops, timeout=10).text
        assert "shadowprice_spent_tokens" in text and "127.0.0.1" not in text
        health = httpx.get(g.url + "/healthz", timeout=10)  # load balancers: no key
        assert health.status_code == 200 and "127.0.0.1" not in health.text


def test_a_separate_metrics_listener_serves_metrics_only(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What `serve --metrics-port` binds: the gateway tells its listeners apart."""
    import socket

    url, _ = upstream
    keyfile = tmp_path / "keys.jsonl"
    keyfile.write_text(json.dumps({"sha256": "0" * 64, "tenant": "t"}) + "\n")
    with Gw([url], keys=load_keys(keyfile)) as g:
        side = socket.socket()
        side.bind(("127.0.0.1", 0))
        g.gw.metrics_ports.add(side.getsockname()[1])
        extra = ServerThread.__new__(ServerThread)  # a second listener on the same app
        ServerThread.__init__(extra, g.gw.app, port=0)
        side.close()
        g.gw.metrics_ports = {extra.port}
        with extra:
            assert httpx.get(extra.url + "/metrics", timeout=10).status_code == 200
            r = httpx.post(extra.url + "/v1/chat/completions", json=chat("x"), timeout=10)
            assert r.status_code == 404
            assert httpx.get(g.url + "/metrics", timeout=10).status_code == 401


def test_an_unreachable_ledger_is_a_503_that_names_no_address() -> None:
    from shadowprice.serve.localredis import free_port

    port = free_port()
    app, _ = fake_upstream(speed=0)
    with ServerThread(app) as up:
        cfg = GatewayConfig(
            [up.url], budget=1000, period=60, state=f"redis://127.0.0.1:{port}/0", route_tau=50
        )
        gw = Gateway(cfg, thresholds=FixedThreshold(50))
        with ServerThread(gw.app) as g:
            r = httpx.post(g.url + "/v1/chat/completions", json=chat("LEN:3"), timeout=30)
    assert r.status_code == 503 and assert_openai_error(r)["code"] == "ledger_unavailable"
    assert str(port) not in r.text and "127.0.0.1" not in r.text


# -- fuzzing the HTTP API -------------------------------------------------------------------------
_finite = st.floats(allow_nan=False, allow_infinity=False)  # what a JSON encoder can send
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _finite | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_content = (
    st.text(max_size=40)
    | st.none()
    | st.integers()
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "input_audio", "x"])},
            optional={"text": st.text(max_size=20) | st.integers(), "image_url": _json},
        ),
        max_size=3,
    )
    | _json
)
_message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "system", "assistant", "tool"]) | st.integers(),
        "content": _content,
        "name": st.text(max_size=5),
    },
)
_params = {
    "model": st.text(max_size=5) | st.integers(),
    "max_tokens": st.integers(-3, 10**6) | _finite | st.booleans() | st.text(max_size=3),
    "max_completion_tokens": st.integers(-3, 10**6) | st.none(),
    "stream": st.booleans() | st.integers(0, 2),
    "stream_options": st.none() | st.fixed_dictionaries({"include_usage": st.booleans()}) | _json,
    "n": st.integers(-1, 3) | st.floats(0, 2),
    "best_of": st.integers(0, 3),
    "temperature": _finite | st.text(max_size=3),
    "n_predict": st.integers(-1, 10**6),
}
_chat_body = st.fixed_dictionaries(
    {"messages": st.lists(_message, max_size=4) | _json}, optional=_params
)
_text_body = st.fixed_dictionaries(
    {
        "prompt": st.text(max_size=40)
        | st.lists(st.text(max_size=10), max_size=3)
        | st.lists(st.integers(-5, 50_000), max_size=5)
        | st.lists(st.lists(st.integers(0, 9), max_size=3), max_size=3)
        | _json
    },
    optional=_params,
)


@pytest.fixture(scope="module")
def fuzz_gateway(upstream) -> Iterator[Running]:  # type: ignore[no-untyped-def]
    url, _ = upstream
    with Gw([url], thresholds=_text_predictor(), max_tokens_ceiling=64) as g:
        g.client = httpx.Client(timeout=30)  # type: ignore[attr-defined]
        yield g
        g.client.close()  # type: ignore[attr-defined]


def _check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code in UPSTREAM_FAILED, r.text[:300]
    if r.status_code != 200:
        assert_openai_error(r)
    elif r.headers["content-type"].startswith("text/event-stream"):
        events = [e for e in r.text.split("\n\n") if e.strip()]
        for e in events[:-1]:
            assert isinstance(json.loads(e.removeprefix("data: ")), dict), e
        last = events[-1].removeprefix("data: ")  # the end, or the error that ended it
        assert last == "[DONE]" or json.loads(last)["error"]["type"] == "upstream_error"
    else:
        assert r.json()["choices"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_chat_body | _text_body | _json, chat_route=st.booleans())
def test_fuzz_no_body_makes_the_gateway_answer_5xx(
    fuzz_gateway: Gw, body: Any, chat_route: bool
) -> None:
    path = "/v1/chat/completions" if chat_route else "/v1/completions"
    r = fuzz_gateway.client.post(fuzz_gateway.url + path, json=body)  # type: ignore[attr-defined]
    _check_answer(r)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_are_a_400(fuzz_gateway: Running, raw: bytes) -> None:
    r = fuzz_gateway.client.post(fuzz_gateway.url + "/v1/chat/completions", content=raw)  # type: ignore[attr-defined]
    assert r.status_code in (200, 400), r.text[:200]
    _check_answer(r)


def test_every_fault_of_the_catalogue_is_an_answer_or_an_openai_error(upstream) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    log.reset()
    budget = 10_000
    with Gw([url], budget=budget, tick=3600, upstream_timeout=1.0) as g:
        for fault in FAULTS:
            if fault == "overrun":
                continue  # a server that ignores max_tokens is outside what a gateway can hold
            for stream in (False, True):
                r = g.post(chat(f"LEN:100 FAULT:{fault}", stream=stream, max_tokens=100))
                _check_answer(r)
        s = g.idle().state_now()
    assert log.generated <= s.spent <= budget  # never under-counted, never over the budget


def test_a_cap_below_the_threshold_is_its_own_refusal_without_retry_after(upstream) -> None:  # type: ignore[no-untyped-def]
    """A client's max_tokens is part of its curve: below the predicted threshold the request
    is worth nothing at any positive price, and retrying will not change that."""
    url, _ = upstream
    with Gw([url], thresholds=FixedThreshold(500.0), tick=3600) as g:
        g.gw.decider.core.agree(1e-9)  # the price that used to refuse it for ever
        client = openai.OpenAI(base_url=g.url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "LEN:50"}], max_tokens=100
            )
        r = info.value.response
        assert r.status_code == 400 and "retry-after" not in r.headers
        err = assert_openai_error(r)
        assert err["code"] == "cap_too_small" and err["param"] == "max_tokens"
        assert "max_tokens (100)" in err["message"] and "500" in err["message"]
        ok = g.post(chat("LEN:50", max_tokens=900))  # room above the threshold: served
        assert ok.status_code == 200 and int(ok.headers["x-shadowprice-allowance"]) <= 900
