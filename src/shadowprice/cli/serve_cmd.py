"""``shadowprice serve``: the OpenAI-compatible gateway that prices live traffic.

Exit statuses: 0 after a clean shutdown (SIGINT/SIGTERM), 2 for bad options or files or an
address that cannot be bound (one line on stderr naming the option).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from ._errors import fail, guarded
from .app import app

#: Environment variables read for the upstream key, first found wins (never a flag: flags
#: show up in process listings).
UPSTREAM_KEY_ENV = ("SHADOWPRICE_UPSTREAM_KEY", "OPENAI_API_KEY")


def _classes(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        name, _, floor = v.partition("=")
        if not name or not floor.isdigit():
            fail(f"--class {v!r}: expected NAME=FLOOR_TOKENS, e.g. interactive=256")
        out[name] = int(floor)
    return out


def _levels(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        fail(f"--effort-levels {value!r}: expected LOW,MEDIUM token counts, e.g. 1024,8192")
    return int(parts[0]), int(parts[1])


@app.command("serve")
@guarded
def serve_command(
    upstream: list[str] = typer.Option(..., "--upstream", help="model server URL (repeatable)"),
    budget: int = typer.Option(..., "--budget", help="completion tokens per period"),
    period: float = typer.Option(
        ...,
        "--period",
        help="budget period in seconds, aligned to the Unix epoch (3600 renews on the hour, "
        "UTC; every replica and restart agrees on the boundaries)",
    ),
    state: str | None = typer.Option(
        None, "--state", help="redis://HOST:PORT/DB: share ledger and price between replicas"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", help="0 picks a free port"),
    predictor: str = typer.Option(
        "default", "--predictor", help="threshold predictor directory, or 'default' (bundled)"
    ),
    route_tau: float | None = typer.Option(
        None,
        "--route-tau",
        help="fixed threshold (tokens) for every request instead of a predictor",
    ),
    pace_margin: float = typer.Option(
        0.2,
        "--pace-margin",
        help="share of the budget spending may run ahead of the period's pace line (0: pace "
        "strictly; 1: a burst may take the whole budget)",
    ),
    keys: Path | None = typer.Option(
        None, "--keys", help="JSONL of key hashes -> tenant, budget, floor"
    ),
    classes: list[str] = typer.Option([], "--class", help="NAME=FLOOR priority class (repeatable)"),
    floor_share: float = typer.Option(
        0.0, "--floor-share", help="share of each period's budget kept for requests with a floor"
    ),
    max_tokens_ceiling: int = typer.Option(
        32768, "--max-tokens-ceiling", help="client max_tokens above this are clamped to it"
    ),
    fallback_tokens: int = typer.Option(
        0, "--fallback-tokens", help="allowance instead of 429 when priced out"
    ),
    balance: str = typer.Option("least-busy", "--balance", help="least-busy or round-robin"),
    provider: str | None = typer.Option(
        None,
        "--provider",
        help="the upstreams' API: vllm, sglang, llamacpp, openai, gemini or anthropic (the "
        "allowance in its own fields, with a thinking cap and an answer reserve); default: "
        "the generic --token-param/--thinking-field/--effort-levels",
        show_default=False,
    ),
    reserve: int | None = typer.Option(
        None,
        "--reserve",
        help="tokens of each allowance kept to answer after a capped thought (default: 10%%, "
        "at least 64, at most 1024)",
        show_default=False,
    ),
    token_param: str = typer.Option(
        "both", "--token-param", help="both, max_tokens or max_completion_tokens"
    ),
    thinking_field: str | None = typer.Option(
        None,
        "--thinking-field",
        help="also send the allowance in this field (vLLM: thinking_token_budget)",
    ),
    effort_levels: str | None = typer.Option(
        None, "--effort-levels", help="LOW,MEDIUM: map the allowance to reasoning_effort"
    ),
    ttl: float = typer.Option(
        120.0,
        "--ttl",
        help="seconds an unrenewed reservation lives (running requests renew); one that "
        "lapses (its replica died) is charged in full",
    ),
    release_lapsed: bool = typer.Option(
        False,
        "--release-lapsed",
        help="give a lapsed reservation's tokens back instead of charging them (allows "
        "overspend: a dead replica's requests may still have generated)",
    ),
    fail_open: bool = typer.Option(
        False,
        "--fail-open",
        help="Redis down: serve from the float of tokens this replica holds in Redis for "
        "outages instead of 503 (the replicas together stay within --budget)",
    ),
    fail_open_budget: int | None = typer.Option(
        None,
        "--fail-open-budget",
        help="tokens of that float, held each period (default: 1%% of --budget); not "
        "available to ordinary requests",
        show_default=False,
    ),
    max_body: int = typer.Option(1 << 20, "--max-body", help="largest request body, bytes"),
    max_upstream_body: int = typer.Option(
        1 << 26,
        "--max-upstream-body",
        help="largest upstream answer relayed, bytes (past it: 502, charged in full)",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        help="serve /metrics (and /healthz) on this separate port, without keys (0: a free "
        "port; its address is the second line on stdout)",
        show_default=False,
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1", "--metrics-host", help="address of the --metrics-port listener"
    ),
    upstream_timeout: float = typer.Option(
        600.0, "--upstream-timeout", help="seconds an upstream may take to answer (per read)"
    ),
    namespace: str = typer.Option("default", "--namespace", help="budget name inside Redis"),
    workers: int = typer.Option(
        1,
        "--workers",
        help="processes serving the same port with one budget and price (one per core; "
        "without --state they share a private redis-server)",
    ),
    log_level: str = typer.Option(
        "warning", "--log-level", help="uvicorn's log level: debug, info, warning, error"
    ),
) -> None:
    """Serve an OpenAI-compatible gateway that prices every request's max_tokens."""
    from shadowprice.serve.app import Gateway
    from shadowprice.serve.config import ConfigError, GatewayConfig, load_keys
    from shadowprice.serve.predictor import load_threshold_source
    from shadowprice.serve.server import bind, serve
    from shadowprice.serve.workers import serve_workers

    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535, got {port}")
    if workers < 1:
        fail(f"--workers must be at least 1, got {workers}")
    key = next((os.environ[k] for k in UPSTREAM_KEY_ENV if os.environ.get(k)), None)
    try:
        config = GatewayConfig(
            upstreams=list(upstream),
            budget=budget,
            period=period,
            state=state,
            namespace=namespace,
            predictor=None if route_tau is not None else predictor,
            route_tau=route_tau,
            max_tokens_ceiling=max_tokens_ceiling,
            pace_margin=pace_margin,
            fallback_tokens=fallback_tokens,
            classes=_classes(classes),
            floor_share=floor_share,
            keys=load_keys(keys) if keys is not None else None,
            upstream_key=key,
            provider=provider,
            reserve=reserve,
            token_param=token_param,  # type: ignore[arg-type]
            thinking_field=thinking_field,
            effort_levels=_levels(effort_levels),
            balance=balance,  # type: ignore[arg-type]
            ttl=ttl,
            release_lapsed=release_lapsed,
            fail_open=fail_open,
            fail_open_budget=fail_open_budget,
            max_body=max_body,
            max_upstream_body=max_upstream_body,
            upstream_timeout=upstream_timeout,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        )
        # Loaded once, before any worker starts: a bad --predictor ends here with status 2.
        thresholds = load_threshold_source(config.predictor, config.route_tau)
        gateway = Gateway(config, thresholds=thresholds) if workers == 1 else None
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    socks = [_bind(bind, host, port, "--host", "--port")]
    metrics_ports: set[int] = set()
    if metrics_port is not None:
        socks.append(_bind(bind, metrics_host, metrics_port, "--metrics-host", "--metrics-port"))
        metrics_ports.add(socks[1].getsockname()[1])
    if gateway is None:
        try:
            serve_workers(
                config, socks, workers, thresholds=thresholds, metrics_ports=metrics_ports,
                log_level=log_level,
            )  # fmt: skip
        except ConfigError as exc:
            fail(str(exc))
        return
    gateway.metrics_ports |= metrics_ports
    serve(gateway.app, socks, log_level=log_level)


def _bind(bind: Any, host: str, port: int, host_flag: str, port_flag: str) -> Any:
    try:
        return bind(host, port)
    except OSError as exc:
        fail(
            f"{host_flag} {host} {port_flag} {port}: cannot listen there ({exc.strerror}); "
            f"choose another port, or 0 for a free one"
        )
