"""What the LiteLLM plugin adds: a LiteLLM proxy with it next to LiteLLM alone, same rounds.

    .venv/bin/python benchmarks/bench_litellm.py [--requests 200] [--rounds 3]

Everything runs on this machine: the fake upstream (its own process, answers at once, 32
tokens), two LiteLLM proxies (``litellm --config``: one with no callback, one with
``shadowprice.integrations.litellm.handler``, the bundled text predictor and an in-process
budget too large to refuse anything) and an asyncio client. Each round sends the same
requests, one at a time, to the upstream directly, to LiteLLM alone and to LiteLLM with the
plugin, unstreamed and streamed, interleaved so the machine's state moves all alike; each
question is new to the predictor (its cache does not answer). Latency is the client's, request
sent to answer read; CPU per request is the proxy process's user + system time (``/proc``)
over the run divided by its requests. Prints one JSON line per round and measurement, then the
medians of rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from bench_serve import Proc, emit, fake, pct, spread

from shadowprice.serve.localredis import free_port
from shadowprice.serve.testing import run_load

PY = sys.executable


class LiteLLM:
    """A LiteLLM proxy on loopback in front of ``upstream``; ``plugin``: with the callback."""

    def __init__(self, upstream: str, plugin: bool, folder: Path) -> None:
        lines = [
            "model_list:",
            "  - model_name: fake",
            "    litellm_params:",
            "      model: openai/fake",
            f"      api_base: {upstream}/v1",
            "      api_key: none",
        ]
        if plugin:
            lines += [
                "litellm_settings:",
                '  callbacks: ["shadowprice.integrations.litellm.handler"]',
            ]
        config = folder / f"litellm-{'plugin' if plugin else 'alone'}.yaml"
        config.write_text("\n".join(lines) + "\n")
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # loopback only, no keys: both proxies alike
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
            "SHADOWPRICE_BUDGET": str(10**12),
            "SHADOWPRICE_PERIOD": "3600",
        }
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        code = "from litellm.proxy.proxy_cli import run_server; run_server()"
        self.log = (folder / f"{config.stem}.log").open("wb")
        self.p = subprocess.Popen(
            [PY, "-c", code, "--config", str(config), "--port", port, "--host", "127.0.0.1"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"litellm exited at start; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health/liveliness", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"litellm did not start; see {self.log.name}")

    cpu_seconds = Proc.cpu_seconds

    def stop(self) -> None:
        self.p.terminate()
        self.p.wait(timeout=30)
        self.log.close()


def run(url: str, prompts: list[str], stream: bool) -> list[float]:
    """Latencies (s) of one request at a time, every answer a 200."""
    out = asyncio.run(
        run_load(url, len(prompts), 1, stream=stream, prompts=prompts, max_tokens=64, timeout=60)
    )
    assert set(out.status) == {200}, {s: out.status.count(s) for s in set(out.status)}
    return out.latency


async def hooks(pool: list[str], n: int, chunks: int = 32) -> dict[str, float]:
    """The plugin's own time in this process, without LiteLLM: its pre-call hook (predict,
    decide, reserve, write the fields) and success hook (count, settle) per unstreamed
    request, and its stream wrapper (meter every chunk, count, settle) per stream (µs)."""
    from litellm.types.utils import ModelResponse, ModelResponseStream

    from shadowprice.integrations.litellm import PluginSettings, ShadowpricePlugin

    p = ShadowpricePlugin(PluginSettings(budget=10**12, period=3600))
    answer = ModelResponse(
        choices=[{"message": {"content": "tok " * 32}, "finish_reason": "stop"}],
        usage={"completion_tokens": 32, "prompt_tokens": 5},
    )
    items = [ModelResponseStream(choices=[{"delta": {"content": "tok "}}]) for _ in range(chunks)]

    async def stream():  # type: ignore[no-untyped-def]
        for item in items:
            yield item

    def body(k: int) -> dict[str, object]:
        return {"model": "fake", "messages": [{"role": "user", "content": pool[k]}],
                "litellm_call_id": f"b{k}", "metadata": {}}  # fmt: skip

    t0 = time.perf_counter()
    for k in range(n):
        data = body(k)
        await p.async_pre_call_hook(None, None, data, "acompletion")
        await p.async_post_call_success_hook(data, None, answer)
    request = (time.perf_counter() - t0) / n * 1e6
    granted = [body(n + k) for k in range(n)]
    for data in granted:
        await p.async_pre_call_hook(None, None, {**data, "stream": True}, "acompletion")
    t0 = time.perf_counter()
    for data in granted:
        async for _ in p.async_post_call_streaming_iterator_hook(None, stream(), data):
            pass
    streamed = (time.perf_counter() - t0) / n * 1e6
    await p.aclose()
    return {"us_per_request": request, f"us_per_stream_of_{chunks}_chunks": streamed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per run")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from importlib.metadata import version

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
    import litellm  # noqa: F401  (fails here, not in a subprocess, when the extra is missing)

    from shadowprice.traces import load_problems

    pool = load_problems("gsm8k-train")["question"].tolist()
    if len(pool) < 2 * a.rounds * a.requests:
        ap.error(f"--requests x --rounds needs {2 * a.rounds * a.requests} questions")
    emit(what="the plugin's hooks in process (new questions)", **asyncio.run(hooks(pool, 2000)))
    up = fake(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    alone = LiteLLM(up.url, False, folder)
    plugin = LiteLLM(up.url, True, folder)
    fronts = {"direct": None, "litellm": alone, "litellm+shadowprice": plugin}
    urls = {"direct": up.url, "litellm": alone.url, "litellm+shadowprice": plugin.url}
    n = a.requests
    try:
        for name in ("litellm", "litellm+shadowprice"):  # warm: imports, connections, predictor
            run(urls[name], [f"warm up {k} LEN:32" for k in range(20)], False)
        rows: dict[tuple[str, bool], dict[str, list[float]]] = {}
        for r in range(a.rounds):
            for stream in (False, True):
                start = (2 * r + stream) * n
                prompts = [f"{q} LEN:32" for q in pool[start : start + n]]
                for name, proc in fronts.items():
                    cpu0 = proc.cpu_seconds() if proc is not None else 0.0
                    lat = run(urls[name], prompts, stream)
                    cpu = (proc.cpu_seconds() - cpu0) / n * 1e3 if proc is not None else 0.0
                    row = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "cpu_ms": cpu}
                    emit(what=name, stream=stream, round=r, requests=n, **row)
                    for k, v in row.items():
                        rows.setdefault((name, stream), {}).setdefault(k, []).append(v)
        for (name, stream), row in rows.items():
            emit(what=name, stream=stream, summary="median of rounds",
                 **{k: spread(v) for k, v in row.items()})  # fmt: skip
        for stream in (False, True):
            base, with_plugin = rows[("litellm", stream)], rows[("litellm+shadowprice", stream)]
            emit(
                what="added by the plugin", stream=stream,
                p50_ms=float(np.median(np.subtract(with_plugin["p50_ms"], base["p50_ms"]))),
                p99_ms=float(np.median(np.subtract(with_plugin["p99_ms"], base["p99_ms"]))),
                cpu_ms=float(np.median(np.subtract(with_plugin["cpu_ms"], base["cpu_ms"]))),
                litellm=version("litellm"), cores=os.cpu_count(),
            )  # fmt: skip
    finally:
        alone.stop()
        plugin.stop()
        up.stop()
    print(json.dumps({"logs": str(folder)}))


if __name__ == "__main__":
    main()
