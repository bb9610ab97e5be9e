"""Trace-set schema and I/O: round trips (all formats) and every validation error path."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shadowprice.traces import (
    TraceSet,
    TraceValidationError,
    read_traces,
    validate_record,
    write_traces,
)


def _records() -> list[dict[str, Any]]:
    # Unknown fields at both levels, text that looks like a number, a sample field whose
    # name clashes with a query-level column, nested values, and ragged sample counts.
    return [
        {
            "id": "q1",
            "question": "What is 6*7?",
            "answer": "42",
            "samples": [
                {"tokens": 120, "correct": True, "pred": "42", "score": 0.5},
                {
                    "tokens": 0,
                    "correct": False,
                    "pred": "41",
                    "score": -1.25,
                    "answer": "41",
                    "steps": [1, 2, {"k": "v"}],
                },
                {"tokens": 300, "correct": True, "pred": "true"},
            ],
            "meta": {"level": 3, "source": "MATH", "tags": ["a", "b"]},
            "difficulty": "hard",
            "extra": {"nested": [1, 2.5, "x"]},
        },
        {
            "id": "007",
            "samples": [{"tokens": 55, "correct": False, "pred": "", "lang": "en, fr"}],
            "meta": {"level": 1},
        },
        {
            "id": "q3",
            "question": 'Multi-line\nquestion, with "quotes"',
            "samples": [
                {"tokens": 10, "correct": True},
                {"tokens": 20, "correct": True, "meta.odd": 1},
            ],
        },
    ]


SUFFIXES = ["traces.jsonl", "traces.jsonl.gz", "traces.csv", "traces.parquet"]


@pytest.mark.parametrize("name", SUFFIXES)
def test_round_trip_keeps_every_field(tmp_path: Path, name: str) -> None:
    ts = TraceSet(_records())
    path = tmp_path / name
    write_traces(ts, path)
    back = read_traces(path)
    assert back.records == _records()
    assert back.ids == ["q1", "007", "q3"]
    np.testing.assert_array_equal(back.tokens(), ts.tokens())
    # Writing what was read gives the same file (stable, deterministic output).
    path2 = tmp_path / ("again-" + name)
    write_traces(back, path2)
    assert path2.read_bytes() == path.read_bytes()


def test_jsonl_gz_is_gzip_and_format_override(tmp_path: Path) -> None:
    ts = TraceSet(_records())
    write_traces(ts, tmp_path / "t.jsonl.gz")
    with gzip.open(tmp_path / "t.jsonl.gz", "rt") as fh:
        assert json.loads(fh.readline())["id"] == "q1"
    write_traces(ts, tmp_path / "t.data", format="csv")
    assert read_traces(tmp_path / "t.data", format="csv").records == _records()
    with pytest.raises(ValueError, match="cannot infer"):
        read_traces(tmp_path / "t.data")


def test_jsonl_keeps_null_fields(tmp_path: Path) -> None:
    recs = [
        {"id": "a", "question": None, "samples": [{"tokens": 1, "correct": True, "pred": None}]}
    ]
    write_traces(TraceSet(recs), tmp_path / "n.jsonl")
    assert read_traces(tmp_path / "n.jsonl").records == recs


def test_dense_views_shapes_and_padding() -> None:
    ts = TraceSet(_records())
    tok, cor, ns = ts.tokens(), ts.correct(), ts.n_samples()
    assert tok.shape == cor.shape == (3, 3) and tok.dtype == np.float64
    assert cor.dtype == np.bool_ and ns.dtype == np.int64
    np.testing.assert_array_equal(ns, [3, 1, 2])
    np.testing.assert_array_equal(tok[0], [120, 0, 300])
    assert np.isnan(tok[1, 1:]).all() and not cor[1, 1:].any()
    np.testing.assert_array_equal(cor[2], [True, True, False])
    tok[0, 0] = -1  # callers get copies; the set is unchanged
    assert ts.tokens()[0, 0] == 120
    assert len(ts) == ts.n == 3


def test_fields_subset_and_map_samples() -> None:
    ts = TraceSet(_records())
    assert ts.questions() == ["What is 6*7?", None, _records()[2]["question"]]
    assert ts.meta("level") == [3, 1, None]
    assert ts.meta("level", default=0)[2] == 0
    assert ts.subset([2, 0]).ids == ["q3", "q1"]
    assert ts.subset(np.array([True, False, True])).ids == ["q1", "q3"]
    assert ts.subset(slice(1, None)).ids == ["007", "q3"]
    assert ts.subset(np.array([], dtype=int)).n == 0
    with pytest.raises(ValueError, match="shape"):
        ts.subset(np.array([True, False]))
    with pytest.raises(ValueError, match="unique"):
        ts.subset([0, 0])

    first = ts.map_samples(lambda s: s[:1])
    np.testing.assert_array_equal(first.n_samples(), [1, 1, 1])
    assert first.records[0]["difficulty"] == "hard"  # other fields survive
    assert ts.n_samples()[0] == 3  # original untouched
    with pytest.raises(TraceValidationError, match="at least one sample") as ei:
        ts.map_samples(lambda s: s[3:])
    assert ei.value.field == "samples"


def test_from_arrays() -> None:
    tok = np.array([[10.0, 20.0, np.nan], [np.nan, 5.0, 7.0]])
    cor = np.array([[True, False, True], [False, False, True]])
    ts = TraceSet.from_arrays(
        ["a", "b"], tok, cor, questions=["qa", None], meta=[{"level": 2}, None]
    )
    np.testing.assert_array_equal(ts.n_samples(), [2, 2])
    assert ts.records[1]["samples"] == [
        {"tokens": 5, "correct": False},
        {"tokens": 7, "correct": True},
    ]
    assert isinstance(ts.records[0]["samples"][0]["tokens"], int)
    assert ts.questions() == ["qa", None] and ts.meta("level") == [2, None]
    with pytest.raises(TraceValidationError, match=r"records\[0\]\.samples\[0\]\.tokens"):
        TraceSet.from_arrays(["a"], np.array([[1.5]]), np.array([[True]]))
    with pytest.raises(TraceValidationError, match="at least one sample"):
        TraceSet.from_arrays(["a"], np.array([[np.nan]]), np.array([[True]]))
    with pytest.raises(ValueError, match="shape"):
        TraceSet.from_arrays(["a", "b"], np.ones((1, 2)), np.ones((1, 2), bool))
    with pytest.raises(TraceValidationError, match="duplicate id"):
        TraceSet.from_arrays(["a", "a"], np.ones((2, 1)), np.ones((2, 1), bool))


# --------------------------------------------------------------------------------------
# validation errors: JSONL
# --------------------------------------------------------------------------------------
GOOD = {"id": "ok", "samples": [{"tokens": 1, "correct": True}]}


def _s(**kw: Any) -> dict[str, Any]:
    return {"tokens": 5, "correct": True, **kw}


BAD_LINES: list[tuple[str, str, str]] = [
    # (JSON text of the bad record, expected field, expected message fragment)
    (
        (
            '{"id": "b", "samples": [{"tokens": 1, "correct": true}, '
            '{"tokens": 2, "correct": true}, {"tokens": -3, "correct": true}]}'
        ),
        "samples[2].tokens",
        "must be a non-negative integer, got -3",
    ),
    ('{"id": "b", "samples": [{"tokens": NaN, "correct": true}]}', "samples[0].tokens", "nan"),
    ('{"id": "b", "samples": [{"tokens": Infinity, "correct": true}]}', "samples[0].tokens", "inf"),
    ('{"id": "b", "samples": [{"tokens": 2.5, "correct": true}]}', "samples[0].tokens", "2.5"),
    ('{"id": "b", "samples": [{"tokens": "12", "correct": true}]}', "samples[0].tokens", "'12'"),
    ('{"id": "b", "samples": [{"tokens": true, "correct": true}]}', "samples[0].tokens", "True"),
    ('{"id": "b", "samples": [{"correct": true}]}', "samples[0].tokens", "is required"),
    (
        '{"id": "b", "samples": [{"tokens": 3, "correct": 1}]}',
        "samples[0].correct",
        "must be a boolean",
    ),
    ('{"id": "b", "samples": [{"tokens": 3, "correct": "true"}]}', "samples[0].correct", "'true'"),
    ('{"id": "b", "samples": [{"tokens": 3}]}', "samples[0].correct", "is required"),
    ('{"id": "b", "samples": [5]}', "samples[0]", "must be an object"),
    ('{"id": "b", "samples": []}', "samples", "at least one sample"),
    ('{"id": "b"}', "samples", "is required"),
    ('{"id": "b", "samples": {"tokens": 1}}', "samples", "must be a list"),
    ('{"samples": [{"tokens": 1, "correct": true}]}', "id", "is required"),
    ('{"id": 7, "samples": [{"tokens": 1, "correct": true}]}', "id", "non-empty string"),
    ('{"id": "", "samples": [{"tokens": 1, "correct": true}]}', "id", "non-empty string"),
    (
        '{"id": "b", "question": 3, "samples": [{"tokens": 1, "correct": true}]}',
        "question",
        "must be a string",
    ),
    (
        '{"id": "b", "answer": [1], "samples": [{"tokens": 1, "correct": true}]}',
        "answer",
        "must be a string",
    ),
    (
        '{"id": "b", "meta": [1], "samples": [{"tokens": 1, "correct": true}]}',
        "meta",
        "must be an object",
    ),
]


@pytest.mark.parametrize(("text", "field", "fragment"), BAD_LINES)
def test_jsonl_errors_name_line_and_field(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    path = tmp_path / "traces.jsonl"
    # The bad record sits on line 7, after a blank line, so numbering is by file line.
    good = [json.dumps({**GOOD, "id": f"ok{i}"}) for i in range(5)]
    path.write_text("\n".join([*good, "", text, json.dumps(GOOD)]) + "\n")
    with pytest.raises(TraceValidationError) as ei:
        read_traces(path)
    e = ei.value
    assert (e.path, e.line, e.field) == (str(path), 7, field)
    assert f"traces.jsonl line 7: {field} " in str(e)
    assert fragment in str(e)


def test_exact_message_from_the_issue(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(
        "\n".join([json.dumps({**GOOD, "id": f"ok{i}"}) for i in range(6)] + [BAD_LINES[0][0]])
        + "\n"
    )
    with pytest.raises(TraceValidationError) as ei:
        read_traces(path)
    assert str(ei.value).endswith(
        "traces.jsonl line 7: samples[2].tokens must be a non-negative integer, got -3"
    )
    assert isinstance(ei.value, ValueError)


def test_jsonl_file_level_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(TraceValidationError, match="empty") as ei:
        read_traces(empty)
    assert ei.value.line is None and ei.value.path == str(empty)

    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(json.dumps(r) for r in [GOOD, {**GOOD, "id": "x"}, GOOD]))
    with pytest.raises(
        TraceValidationError, match=r"duplicate id 'ok' \(first seen at line 1\)"
    ) as ei:
        read_traces(dup)
    assert (ei.value.line, ei.value.field) == (3, "id")

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(TraceValidationError, match="line 2: invalid JSON"):
        read_traces(broken)

    notobj = tmp_path / "list.jsonl"
    notobj.write_text("[1, 2]\n")
    with pytest.raises(TraceValidationError, match="line 1: record must be a JSON object"):
        read_traces(notobj)

    with pytest.raises(FileNotFoundError):
        read_traces(tmp_path / "missing.jsonl")


def test_validate_record_normalises_and_keeps_unknowns() -> None:
    rec: dict[str, Any] = {
        "id": "a",
        "z": 1,
        "samples": [
            {"tokens": np.int64(4), "correct": np.bool_(True), "y": [1]},
            {"tokens": 7.0, "correct": False},
        ],
    }
    out = validate_record(rec, line=1, path="f.jsonl")
    assert out == {
        "id": "a",
        "z": 1,
        "samples": [{"tokens": 4, "correct": True, "y": [1]}, {"tokens": 7, "correct": False}],
    }
    assert type(out["samples"][0]["tokens"]) is int
    assert type(out["samples"][0]["correct"]) is bool
    before = copy.deepcopy(rec)
    validate_record(rec)
    assert rec == before and type(rec["samples"][0]["tokens"]) is np.int64  # input not mutated


# --------------------------------------------------------------------------------------
# validation errors: long form
# --------------------------------------------------------------------------------------
def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "long.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("body", "line", "field", "fragment"),
    [
        ("a,5,true\na,-3,false\n", 3, "tokens", "got -3"),
        ("a,5,true\nb,2.5,false\n", 3, "tokens", "got 2.5"),
        ("a,5,true\nb,NaN,false\n", 3, "tokens", "nan"),
        ("a,5,true\nb,,false\n", 3, "tokens", "is required"),
        ("a,5,maybe\n", 2, "correct", "'maybe'"),
        (",5,true\n", 2, "id", "is required"),
        ("a,5,true,extra\n", 2, None, "4 cells"),
    ],
)
def test_csv_errors_name_line_and_field(
    tmp_path: Path, body: str, line: int, field: str | None, fragment: str
) -> None:
    p = _csv(tmp_path, "id,tokens,correct\n" + body)
    with pytest.raises(TraceValidationError) as ei:
        read_traces(p)
    assert (ei.value.line, ei.value.field) == (line, field)
    assert f"long.csv line {line}:" in str(ei.value) and fragment in str(ei.value)


def test_csv_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceValidationError, match="empty"):
        read_traces(_csv(tmp_path, ""))
    with pytest.raises(TraceValidationError, match="empty"):
        read_traces(_csv(tmp_path, "id,tokens,correct\n"))
    with pytest.raises(TraceValidationError, match="line 1: correct column is required"):
        read_traces(_csv(tmp_path, "id,tokens\na,1\n"))
    with pytest.raises(TraceValidationError, match="line 1: tokens column appears twice"):
        read_traces(_csv(tmp_path, "id,tokens,correct,tokens\na,1,true,2\n"))
    # query-level values must agree across a query's rows
    p = _csv(tmp_path, "id,tokens,correct,question\na,1,true,Q1\na,2,true,Q2\n")
    with pytest.raises(TraceValidationError, match="line 3: question differs") as ei:
        read_traces(p)
    assert ei.value.field == "question"


def test_csv_foreign_file_conventions(tmp_path: Path) -> None:
    # Hand-written CSV: numeric-looking ids/answers stay text, 1/0 and True/False are
    # booleans, ids group rows even when not contiguous, 311.0 is an integer.
    p = _csv(
        tmp_path,
        "id,tokens,correct,answer,meta.level,pred\n"
        "1,311.0,True,42,3,42\n2,7,0,x,,\n1,12,1,42,3,41\n",
    )
    ts = read_traces(p)
    assert ts.ids == ["1", "2"]
    assert ts.records[0] == {
        "id": "1",
        "answer": "42",
        "meta": {"level": 3},
        "samples": [
            {"tokens": 311, "correct": True, "pred": 42},
            {"tokens": 12, "correct": True, "pred": 41},
        ],
    }
    assert ts.records[1]["samples"] == [{"tokens": 7, "correct": False}]


def test_parquet_errors_name_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "long.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["a", "a", "b"],
                "tokens": [1.0, 2.0, float("nan")],
                "correct": [True, False, True],
            }
        ),
        p,
    )
    with pytest.raises(TraceValidationError) as ei:
        read_traces(p)
    assert (ei.value.line, ei.value.field) == (3, "tokens")
    assert "long.parquet row 3: tokens must be a non-negative integer" in str(ei.value)

    pq.write_table(pa.table({"id": ["a"], "tokens": [1]}), p)
    with pytest.raises(TraceValidationError, match="correct column is required"):
        read_traces(p)
    p.write_text("not parquet")
    with pytest.raises(TraceValidationError, match="cannot read Parquet"):
        read_traces(p)


def test_select_samples_matches_map_samples_records_and_arrays() -> None:
    """The fast sample split gives what the general (re-validating) one gives."""
    from shadowprice.evaluate.streams import make_stream

    ts = make_stream("balanced", 60, 3).sample_traces(5, 4)
    rng = np.random.default_rng(0)
    keep = rng.random((ts.n, 5)) < 0.6
    keep[:, 0] = True  # every query keeps one sample
    fast = ts.select_samples(keep)
    rows = iter(keep)
    slow = ts.map_samples(lambda smp: [x for x, k in zip(smp, next(rows), strict=True) if k])
    assert fast.records == slow.records
    np.testing.assert_array_equal(fast.tokens(), slow.tokens())
    np.testing.assert_array_equal(fast.correct(), slow.correct())
    np.testing.assert_array_equal(fast.n_samples(), slow.n_samples())
    with pytest.raises(ValueError, match="keep no sample"):
        ts.select_samples(np.zeros((ts.n, 5), bool))
