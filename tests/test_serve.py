"""The gateway over real HTTP on loopback: a fake upstream server and the gateway, each served
by uvicorn in a thread, called with httpx as a client would."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadowprice.ledger import MemoryLedger
from shadowprice.serve import Gateway, GatewayConfig, load_keys
from shadowprice.serve.config import ConfigError
from shadowprice.serve.localredis import free_port
from shadowprice.serve.predictor import FixedThreshold, ThresholdSource
from shadowprice.serve.testing import FakeLog, RawServer, ServerThread, fake_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeLog]]:
    app, log = fake_upstream(speed=2000)
    with ServerThread(app) as s:
        yield s.url, log


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


class Running:
    """A gateway served in a thread, with its in-process ledger at hand (every request has
    threshold ``tau``, unless ``thresholds`` predicts them)."""

    def __init__(
        self,
        upstreams: list[str],
        tau: float = 100.0,
        thresholds: ThresholdSource | None = None,
        **cfg: Any,
    ) -> None:
        cfg.setdefault("budget", 100_000)
        cfg.setdefault("period", 3600)
        self.gw = Gateway(
            GatewayConfig(upstreams, **cfg), thresholds=thresholds or FixedThreshold(tau)
        )
        assert isinstance(self.gw.ledger, MemoryLedger)
        self.ledger: MemoryLedger = self.gw.ledger
        self.server = ServerThread(self.gw.app)

    def __enter__(self) -> Running:
        self.server.start()
        self.url = self.server.url
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def idle(self) -> MemoryLedger:
        """The ledger once no reservation is open (a stream settles just after its end)."""
        for _ in range(500):
            if self.ledger.state_now().reserved == 0:
                break
            time.sleep(0.01)
        return self.ledger

    def post(self, body: Any, path: str = "/v1/chat/completions", **kw: Any) -> httpx.Response:
        """POST ``body`` as JSON, or as it is when it is already bytes or text."""
        kw.setdefault("timeout", 30)
        if isinstance(body, bytes | str):
            return httpx.post(self.url + path, content=body, **kw)
        return httpx.post(self.url + path, json=body, **kw)

    def stream(self, body: dict[str, Any], **kw: Any) -> tuple[httpx.Response, list[str]]:
        with httpx.stream(
            "POST", self.url + "/v1/chat/completions", json=body, timeout=30, **kw
        ) as r:
            lines = [line for line in r.iter_lines() if line]
        return r, lines


def test_granted_request_is_reserved_forwarded_with_its_allowance_and_settled(upstream) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    with Running([url]) as g:
        r = g.post(chat("hello LEN:40"))
        assert r.status_code == 200
        allowance = int(r.headers["x-shadowprice-allowance"])
        assert float(r.headers["x-shadowprice-price"]) == 0.0
        sent = log.bodies[-1]
        assert sent["max_tokens"] == sent["max_completion_tokens"] == allowance
        assert r.json()["usage"]["completion_tokens"] == 40
        s = g.ledger.state_now()
        assert (s.spent, s.reserved) == (40, 0)
        # The text-completions route goes the same way.
        r = g.post({"model": "m", "prompt": "LEN:7"}, path="/v1/completions")
        assert r.status_code == 200 and r.json()["choices"][0]["text"]
        assert g.ledger.state_now().spent == 47


def test_stream_is_counted_and_usage_forwarded_only_when_asked(upstream) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    with Running([url]) as g:
        r, lines = g.stream(chat("LEN:25", stream=True))
        assert r.status_code == 200 and lines[-1] == "data: [DONE]"
        assert not any('"usage"' in line for line in lines)  # the gateway asked, not the client
        assert log.bodies[-1]["stream_options"] == {"include_usage": True}
        r, lines = g.stream(chat("LEN:25", stream=True, stream_options={"include_usage": True}))
        usage = [json.loads(line[6:]) for line in lines if '"usage"' in line]
        assert usage and usage[0]["usage"]["completion_tokens"] == 25
        # Without usage from the server nothing says how many tokens the chunks held: the
        # whole allowance is charged (tau + the curve's peak excess at price 0).
        g.stream(chat("LEN:9 FAULT:nousage", stream=True))
        assert g.idle().state_now().spent == 25 + 25 + 300  # a stream settles after its end


def test_budget_runs_out_with_a_clean_429_and_never_overspends(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    # Price 0 (no update) and no pace line (margin 1): what refuses is the ledger.
    with Running([url], budget=1000, min_tokens=16, tick=3600, pace_margin=1.0) as g:
        codes = []
        for _ in range(12):
            r = g.post(chat("LEN:300", max_tokens=300))
            codes.append(r.status_code)
            if r.status_code == 429:
                err = r.json()["error"]
                assert err["type"] == err["code"] == "budget_exhausted"
                assert int(r.headers["retry-after"]) >= 1
            else:
                assert r.json()["usage"]["completion_tokens"] <= int(
                    r.headers["x-shadowprice-allowance"]
                )
        assert 429 in codes and 200 in codes
        s = g.ledger.state_now()
        assert s.spent <= 1000 and s.reserved == 0 and s.overrun == 0


def test_priced_out_floor_class_and_fallback(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    with Running([url], tau=5000, tick=3600, classes={"gold": 128}) as g:
        g.gw.pricer.set_price(1.0)  # a scarce market: a 5000-token threshold is not worth it
        r = g.post(chat("LEN:50"))
        assert r.status_code == 429 and r.json()["error"]["type"] == "priced_out"
        r = g.post(chat("LEN:50"), headers={"x-shadowprice-class": "gold"})
        assert r.status_code == 200 and r.headers["x-shadowprice-allowance"] == "128"
        r = g.post(chat("LEN:50"), headers={"x-shadowprice-class": "platinum"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_class"
    with Running([url], tau=5000, tick=3600, fallback_tokens=32) as g:
        g.gw.pricer.set_price(1.0)
        r = g.post(chat("LEN:50"))
        assert r.status_code == 200 and r.headers["x-shadowprice-allowance"] == "32"
        assert g.ledger.state_now().spent == 32


def test_a_floor_share_serves_floor_classes_after_the_budget_is_spent(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    gold = {"x-shadowprice-class": "gold"}
    with Running(
        [url], budget=1000, floor_share=0.2, classes={"gold": 100}, tick=3600, pace_margin=1.0
    ) as g:
        assert g.ledger.total == 800  # the rest is kept for floor requests
        got = [g.post(chat("LEN:300", max_tokens=300)) for _ in range(4)]
        assert [r.status_code for r in got] == [200, 200, 200, 429]
        assert got[3].json()["error"]["type"] == "budget_exhausted"
        assert [r.headers["x-shadowprice-allowance"] for r in got[:3]] == ["300", "300", "200"]
        r = g.post(chat("LEN:300", max_tokens=300), headers=gold)
        assert r.status_code == 200 and r.headers["x-shadowprice-allowance"] == "200"
        r = g.post(chat("LEN:300", max_tokens=300), headers=gold)
        assert r.status_code == 429  # the floor share is spent too: nothing is overspent
        floor = g.gw.decider.floor_ledger
        assert isinstance(floor, MemoryLedger)
        assert (g.ledger.state_now().spent, floor.state_now().spent) == (800, 200)
    with pytest.raises(ConfigError, match="--floor-share"):
        GatewayConfig([url], budget=1000, period=60, floor_share=1.0)


def test_bad_input_gets_openai_errors_and_max_tokens_is_clamped(upstream) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    with Running([url], max_body=2000, max_tokens_ceiling=64) as g:
        r = g.post(chat("x" * 5000))
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = httpx.post(g.url + "/v1/chat/completions", content=b"{not json", timeout=10)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        for bad in (
            [1, 2],
            {"messages": "hi"},
            chat("a", max_tokens=0),
            chat("a", n=3),
            chat("a", stream="yes"),
        ):
            assert g.post(bad).status_code == 400
        r = g.post(chat("LEN:500", max_tokens=100_000))
        assert r.status_code == 200 and int(r.headers["x-shadowprice-allowance"]) <= 64
        assert log.max_tokens[-1] <= 64
        assert g.ledger.state_now().spent <= 64


def test_keys_tenants_and_the_upstream_key(upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, log = upstream
    keyfile = tmp_path / "keys.jsonl"
    rows = [
        {"sha256": hashlib.sha256(b"sk-alice").hexdigest(), "tenant": "alice", "budget": 100},
        {"sha256": hashlib.sha256(b"sk-bob").hexdigest(), "tenant": "bob", "floor": 48},
    ]
    keyfile.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with Running([url], keys=load_keys(keyfile), upstream_key="sk-upstream") as g:
        assert g.post(chat("LEN:5")).status_code == 401
        assert g.post(chat("LEN:5"), headers={"authorization": "Bearer sk-eve"}).status_code == 401
        alice = {"authorization": "Bearer sk-alice"}
        r = g.post(chat("LEN:60", max_tokens=60), headers=alice)
        assert r.status_code == 200 and r.headers["x-shadowprice-allowance"] == "60"
        assert log.auth[-1] == "Bearer sk-upstream"  # never the client's key
        # alice's own budget (100 per period) has 40 left: not enough for another 60.
        r = g.post(chat("LEN:60", max_tokens=60), headers=alice)
        assert r.status_code == 429 and "alice" in r.json()["error"]["message"]
        assert g.ledger.state_now().spent == 60
        g.gw.pricer.set_price(1.49)
        r = g.post(chat("LEN:60"), headers={"authorization": "Bearer sk-bob"})
        assert r.status_code == 200 and int(r.headers["x-shadowprice-allowance"]) >= 48
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sha256": "abc", "tenant": "x"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1.*sha256"):
        load_keys(bad)


def test_upstream_faults_are_clean_errors_and_charged_honestly(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    with Running([url], upstream_timeout=0.5) as g:
        allowance = 100 + 200  # tau + the curve's peak excess at price 0
        r = g.post(chat("FAULT:500"))
        assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
        assert "500" in r.json()["error"]["message"]
        assert g.ledger.state_now().spent == allowance  # a 500 may come after generating
        r = g.post(chat("FAULT:garbage"))
        assert r.status_code == 502 and g.ledger.state_now().spent == 2 * allowance
        r = g.post(chat("FAULT:slow"))
        assert r.status_code == 504 and g.ledger.state_now().spent == 3 * allowance
        r, lines = g.stream(chat("LEN:40 FAULT:drop", stream=True))
        assert r.status_code == 200 and '"upstream_error"' in lines[-1]
        assert g.idle().state_now().spent == 4 * allowance  # cut short: nobody counted the rest
        r = g.post(chat("LEN:400 FAULT:overrun", max_tokens=50))
        s = g.ledger.state_now()
        assert r.status_code == 200 and s.overrun == 350 and s.reserved == 0


def test_an_upstream_that_hangs_up_or_speaks_no_http_is_charged_the_allowance() -> None:
    allowance = 100 + 200  # tau + the curve's peak excess at price 0
    for server in (RawServer(), RawServer(b"not http\r\n\r\n"), RawServer(reset=True)):
        with server as up, Running([up.url]) as g:
            for stream in (False, True):  # the answer never started: a plain 502 either way
                r = g.post(chat("LEN:5", stream=stream))
                assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
            posts = [h for h in up.heads if h.startswith(b"POST")]
            assert len(posts) == 2  # it took both requests: they may have generated
            s = g.ledger.state_now()
            assert (s.spent, s.reserved) == (2 * allowance, 0)
    with Running([f"http://127.0.0.1:{free_port()}"]) as g:  # refused: reached no server
        r = g.post(chat("LEN:5"))
        assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
        assert g.ledger.state_now().spent == 0


def test_client_disconnect_closes_the_upstream_stream_and_charges_the_allowance() -> None:
    app, log = fake_upstream(speed=200)
    with ServerThread(app) as up, Running([up.url], tau=1000) as g:
        with httpx.stream(
            "POST", g.url + "/v1/chat/completions", json=chat("LEN:1000", stream=True), timeout=30
        ) as r:
            got = 0
            for line in r.iter_lines():
                got += line.startswith("data:")
                if got >= 10:
                    break  # leaving the block closes the connection mid-stream
        s = g.idle().state_now()
        # What the server generated after the client left is nobody's to count: all of it.
        allowance = 1000 + 200
        assert (s.reserved, s.spent) == (0, allowance)
        for _ in range(500):  # the upstream notices the closed connection on its own thread
            if log.cancelled:
                break
            time.sleep(0.01)
        assert log.cancelled == 1


def test_dead_upstream_is_skipped_and_ejected(upstream) -> None:  # type: ignore[no-untyped-def]
    url, _ = upstream
    dead = f"http://127.0.0.1:{free_port()}"
    with Running([dead, url], balance="round-robin", eject_after=2) as g:
        for _ in range(6):
            assert g.post(chat("LEN:3")).status_code == 200
        assert [u.healthy for u in g.gw.pool.upstreams] == [False, True]
        assert g.ledger.state_now().spent == 18
        assert httpx.get(g.url + "/v1/models").json()["data"][0]["id"] == "fake"
        h = httpx.get(g.url + "/healthz").json()
        assert h["upstreams_healthy"] == 1 and h["status"] == "ok"
        metrics = httpx.get(g.url + "/metrics").text
        assert 'shadowprice_requests_total{outcome="granted"} 6.0' in metrics
        assert "shadowprice_budget_tokens 100000.0" in metrics


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="--upstream"):
        GatewayConfig(["ftp://x"], budget=1, period=1)
    with pytest.raises(ConfigError, match="--budget"):
        GatewayConfig(["http://x"], budget=0, period=1)
    with pytest.raises(ConfigError, match="--state"):
        GatewayConfig(["http://x"], budget=1, period=1, state="memcached://x")
