"""Run a gateway on uvicorn: bind first, announce the address, then serve.

The socket is bound before uvicorn starts so that ``--port 0`` can report the port the OS
picked: the first line on stdout is exactly ``listening on http://HOST:PORT`` (scripts read it);
a separate metrics listener, when there is one, is announced on the second line as ``metrics
on http://HOST:PORT``. The gateway's own log (``shadowprice.serve``: the ledger going away and
coming back, upstream failures) goes to stderr, one line per event.
"""

from __future__ import annotations

import logging
import socket
import sys
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the OS picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def configure_log(log_level: str) -> None:
    """The gateway's own log on stderr, one line per event (once per process)."""
    logger = logging.getLogger("shadowprice.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("shadowprice serve: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if log_level in ("debug", "info") else logging.WARNING)
        logger.propagate = False


def announce(socks: list[socket.socket]) -> None:
    """Print the addresses scripts read: the main listener, then the metrics one."""
    print(f"listening on {_address(socks[0])}", flush=True)
    for extra in socks[1:]:
        print(f"metrics on {_address(extra)}", flush=True)


def serve(
    app: ASGIApp,
    socks: socket.socket | list[socket.socket],
    *,
    log_level: str = "warning",
    quiet: bool = False,
) -> None:
    """Serve ``app`` (a gateway's, or a test server's) on ``socks`` until SIGINT/SIGTERM;
    announce the addresses first (the main listener, then the metrics one) unless ``quiet``
    (a worker of :mod:`.workers`, whose supervisor announced them)."""
    socks = [socks] if isinstance(socks, socket.socket) else list(socks)
    if not quiet:
        announce(socks)
    configure_log(log_level)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        loop=loop,
        http="httptools",
        log_level=log_level,
        access_log=False,  # access logs would record client headers; keys stay out of logs
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    server.run(sockets=socks)


class _Server(uvicorn.Server):
    """uvicorn's server, but SIGINT/SIGTERM end it with exit status 0 (a clean, asked-for
    shutdown) instead of re-raising the signal once the server has stopped."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
