"""Trace sets: per-query samples of (tokens, correct), their file formats, bundled data."""

from .bundled import (
    REAL_TRACE_SET,
    list_bundled,
    load_paper_results,
    load_problems,
    load_traces,
)
from .io import FORMATS, read_traces, write_traces
from .schema import TraceSet, TraceValidationError, validate_record

__all__ = [
    "FORMATS",
    "REAL_TRACE_SET",
    "TraceSet",
    "TraceValidationError",
    "list_bundled",
    "load_paper_results",
    "load_problems",
    "load_traces",
    "read_traces",
    "validate_record",
    "write_traces",
]
