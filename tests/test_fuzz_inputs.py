"""Any bytes in a query or trace file end in exit 0 or 2: no traceback, no changed input."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shadowprice.cli import app

runner = CliRunner()

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_value = st.one_of(
    _scalar,
    st.lists(_scalar, max_size=2),
    st.dictionaries(st.text(max_size=3), _scalar, max_size=2),
)
_query = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=4), st.integers(0, 5), _scalar),
        "tau": _value,
        "floor": _value,
        "min_tokens": _value,
        "max_tokens": _value,
        "alpha": _value,
        "beta": _value,
    },
)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _trace_rows(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


_sample = st.fixed_dictionaries({}, optional={"tokens": _value, "correct": _value})
_trace = st.fixed_dictionaries(
    {}, optional={"id": _value, "samples": st.one_of(st.lists(_sample, max_size=3), _value)}
)

QUERY_FILES = st.one_of(
    st.binary(max_size=200),
    st.lists(_query, min_size=1, max_size=4).map(_jsonl),
    st.text(alphabet='id,tau,floor\n0123456789.-e\ufeff "', max_size=80).map(str.encode),
)
TRACE_FILES = st.one_of(
    st.binary(max_size=200),
    st.lists(_trace, min_size=1, max_size=3).map(_trace_rows),
)


def _check(args_for: Any, data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / f"in{suffix}"
        f.write_bytes(data)
        r = runner.invoke(app, args_for(f))
        assert f.read_bytes() == data, "the input changed"
        assert r.exit_code in (0, 2), (r.exit_code, r.output, data)
        assert "Traceback" not in r.output and "internal error" not in r.output, r.output


_FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=QUERY_FILES, csv=st.booleans())
def test_allocate_survives_any_query_file(data: bytes, csv: bool) -> None:
    _check(
        lambda f: ["allocate", str(f), "--budget", "1000", "--policy", "clear"],
        data,
        ".csv" if csv else ".jsonl",
    )


@_FUZZ
@given(data=QUERY_FILES)
def test_predictor_predict_survives_any_query_file(data: bytes) -> None:
    _check(lambda f: ["predictor", "predict", "default", str(f)], data, ".jsonl")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=TRACE_FILES, suffix=st.sampled_from([".jsonl", ".csv", ".jsonl.gz"]))
def test_evaluate_survives_any_trace_file(data: bytes, suffix: str) -> None:
    _check(
        lambda f: [
            "evaluate",
            str(f),
            "--per-query",
            "100",
            "--n-boot",
            "0",
            "--policies",
            "uniform,clear",
        ],
        data,
        suffix,
    )
