"""``shadowprice replay-server``: a GPU-free OpenAI-compatible server answering with traces.

Exit statuses: 0 after a clean shutdown (SIGINT/SIGTERM), 2 for a bad option, trace source or
an address that cannot be bound (one line on stderr naming the option).
"""

from __future__ import annotations

import socket

import typer

from ._errors import fail, guarded
from .app import app
from .options import template_option


@app.command("replay-server")
@guarded
def replay_server_command(
    traces: str = typer.Argument(
        ...,
        help="trace file (JSONL/CSV/Parquet), bundled:NAME or stream:NAME:N[:long]",
        show_default=False,
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on"),
    port: int = typer.Option(8000, "--port", help="0 picks a free port"),
    model: str = typer.Option("replay", "--model", help="the model name /v1/models lists"),
    template: str | None = template_option(),
    tokens_per_second: float | None = typer.Option(
        None,
        "--tokens-per-second",
        help="pace of each answer (a stream sends its tokens as they are 'generated'); "
        "default: answer at once",
        show_default=False,
    ),
    seed: int = typer.Option(
        0, "--seed", help="seeds the sample drawn for requests without one (and stream:NAME:N)"
    ),
    log_level: str = typer.Option(
        "warning", "--log-level", help="uvicorn's log level: debug, info, warning, error"
    ),
) -> None:
    """Serve an OpenAI-compatible chat API whose every answer replays a sample of TRACES.

    A request names its query by the prompt (the query's id, its question, or the question
    in --template) and its sample by 'seed' (sample seed mod n; random without one). The
    answer has the sample's length in tokens, cut at max_tokens ('length'), and ends with
    \\boxed{the gold answer} when the sample is correct. A final assistant message is
    continued. The first line on stdout is 'listening on http://HOST:PORT'.
    """
    from shadowprice.engine.replay_server import ReplayServer
    from shadowprice.evaluate.sources import load_trace_source
    from shadowprice.serve.server import bind, serve

    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535, got {port}")
    if tokens_per_second is not None and not tokens_per_second > 0:
        fail(f"--tokens-per-second must be a positive number, got {tokens_per_second}")
    ts = load_trace_source(traces, seed)
    try:
        server = ReplayServer(
            ts, model=model, template=template, tokens_per_second=tokens_per_second, seed=seed
        )
    except ValueError as exc:
        fail(f"{traces}: {exc}")
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})")
    # Accepted connections inherit it: an answer written in two parts would otherwise wait
    # for the client's delayed ACK (40 ms a request on Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    serve(server.app, sock, log_level=log_level)
