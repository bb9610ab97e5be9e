"""Where the traces an evaluation scores come from: a file, a bundled set or a synthetic stream.

A trace source is named by one string (what ``shadowprice evaluate TRACES`` takes):

- a path: a trace file (JSONL, JSONL.gz, CSV or Parquet; :func:`shadowprice.traces.read_traces`);
- ``bundled:NAME``: a trace set shipped with the package (:func:`shadowprice.traces.load_traces`);
- ``stream:NAME:N``: N queries of a calibrated synthetic stream (:mod:`.streams`), each with
  8 simulated samples; ``stream:NAME:N:long`` draws from the long-reasoning pools.

Before anything is built or read, the memory it would take is estimated and compared with
what the machine has, so a typo (``stream:balanced:99999999999``) ends with a message, not
with the machine swapping.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..traces import TraceSet, load_traces, read_traces
from .streams import MAX_SAMPLE_TOKENS_LONG, STREAMS, make_stream, sample_seed

__all__ = ["STREAM_SAMPLES", "available_memory", "load_trace_source", "memory_needed"]

#: Samples per query simulated for ``stream:NAME:N``.
STREAM_SAMPLES = 8
#: Bytes an evaluation holds per simulated query (traces, fitted curves, menus, replay),
#: measured on 2x10^4-query streams with tracemalloc (~19 KB), rounded up.
BYTES_PER_STREAM_QUERY = 24_000
#: Bytes an evaluation holds per byte of a trace file (parsed records and their arrays).
BYTES_PER_FILE_BYTE = 60


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def memory_needed(spec: str) -> int:
    """Estimated bytes an evaluation of trace source ``spec`` holds (0 if unknown)."""
    if spec.startswith("stream:"):
        parts = spec.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            return int(parts[2]) * BYTES_PER_STREAM_QUERY
        return 0
    if spec.startswith("bundled:"):
        return 0
    p = Path(spec)
    return p.stat().st_size * BYTES_PER_FILE_BYTE if p.is_file() else 0


def _check_memory(spec: str) -> None:
    need = memory_needed(spec)
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(
            f"{spec}: evaluating it would take about {_gib(need)} of memory and this machine "
            f"has {_gib(have)} available; use fewer queries (or a machine with more memory)"
        )


def _stream(spec: str, seed: int) -> TraceSet:
    parts = spec.split(":")
    family = "long" if len(parts) == 4 and parts[3] == "long" else "short"
    if len(parts) not in (3, 4) or (len(parts) == 4 and family != "long"):
        raise ValueError(
            f"a stream is stream:NAME:N or stream:NAME:N:long (e.g. stream:balanced:2000), "
            f"got {spec!r}"
        )
    if not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(f"{spec}: N must be a positive whole number of queries")
    if parts[1] not in STREAMS:
        raise ValueError(f"{spec}: unknown stream {parts[1]!r}; choose one of {', '.join(STREAMS)}")
    _check_memory(spec)
    stream = make_stream(parts[1], int(parts[2]), seed, family=family)
    # The samples get a seed of their own: the stream's draws, the samples and the split must
    # not share random numbers.
    kwargs = {"max_tokens": MAX_SAMPLE_TOKENS_LONG} if family == "long" else {}
    return stream.sample_traces(STREAM_SAMPLES, sample_seed(seed, 0x5A), **kwargs)


def load_trace_source(spec: str, seed: int = 0) -> TraceSet:
    """The trace set named by ``spec`` (see the module docstring).

    Parameters
    ----------
    spec : str
        A path, ``bundled:NAME`` or ``stream:NAME:N[:long]``.
    seed : int
        Seeds a synthetic stream's queries and samples.

    Raises
    ------
    ValueError
        For an unknown name, a malformed spec, a missing file or a folder, an invalid trace
        file (:class:`~shadowprice.traces.TraceValidationError`, naming the line and field),
        or a source too large for this machine's memory.
    """
    if spec.startswith("bundled:"):
        try:
            return load_traces(spec.split(":", 1)[1])
        except KeyError as exc:
            raise ValueError(str(exc.args[0]) if exc.args else str(exc)) from None
    if spec.startswith("stream:"):
        return _stream(spec, seed)
    path = Path(spec)
    if path.is_dir():
        raise ValueError(f"{spec} is a directory; give a trace file (or bundled:NAME)")
    if not path.exists():
        raise ValueError(f"{spec}: no such file (or use bundled:NAME / stream:NAME:N)")
    _check_memory(spec)
    return read_traces(path)
