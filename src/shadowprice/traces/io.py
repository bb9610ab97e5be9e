"""Read and write trace sets: JSONL (plain or gzip) and the long form as CSV or Parquet.

JSONL (``.jsonl``, ``.jsonl.gz``) holds one query record per line, exactly as described in
:mod:`shadowprice.traces.schema`.

The *long form* (``.csv``, ``.parquet``) holds one row per sample. Columns:

* ``id``, ``tokens``, ``correct`` — required;
* ``question``, ``answer`` — query-level, repeated on every row of the query;
* ``meta.<key>`` — query-level, the record's ``meta[key]``;
* ``query.<key>`` — any other query-level field ``key``;
* ``sample.<key>`` — per-sample field ``key`` (used when ``key`` would clash with a name
  above); any other column is a per-sample field of the same name.

Rows of one id form one query, in first-appearance order; samples keep row order. An empty
cell means "field absent". In CSV every extra cell is JSON-decoded when it parses as JSON
and kept as text otherwise; the writer quotes text that would parse as JSON, so values
round-trip with their types. Parquet columns are native where a column has one scalar type
and JSON text (listed in the file's metadata) otherwise.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .schema import TraceSet, TraceValidationError, _check_unique, validate_record

__all__ = ["FORMATS", "read_traces", "write_traces"]

FORMATS = ("jsonl", "jsonl.gz", "csv", "parquet")
_REQUIRED = ("id", "tokens", "correct")
_QUERY_COLS = ("question", "answer")
_RESERVED = frozenset(_REQUIRED + _QUERY_COLS)
_PREFIXES = ("meta.", "query.", "sample.")
_JSON_COLS_KEY = b"shadowprice.json_columns"
_MISSING: Any = object()  # sentinel: cell empty -> field absent


def _infer_format(path: str, format: str | None) -> str:
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"unknown trace format {format!r}; expected one of {FORMATS}")
        return fmt
    low = path.lower()
    for suffix, fmt in (
        (".jsonl.gz", "jsonl.gz"),
        (".jsonl", "jsonl"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    ):
        if low.endswith(suffix):
            return fmt
    raise ValueError(
        f"cannot infer trace format from {path!r}; use a .jsonl, .jsonl.gz, .csv or "
        f".parquet suffix or pass format="
    )


# ---------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------
def _open_read(path: str, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_jsonl(path: str, gz: bool) -> TraceSet:
    records: list[dict[str, Any]] = []
    lines: list[int | None] = []
    with _open_read(path, gz) as fh:
        for ln, text in enumerate(fh, start=1):
            if not text.strip():
                continue  # tolerate blank lines (e.g. a trailing newline)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise TraceValidationError(
                    f"invalid JSON: {e.msg} (column {e.colno})", path=path, line=ln
                ) from None
            records.append(validate_record(obj, line=ln, path=path))
            lines.append(ln)
    if not records:
        raise TraceValidationError("file holds no trace records (it is empty)", path=path)
    _check_unique(records, lines, path)
    return TraceSet._trusted(records)


def _write_jsonl(traces: TraceSet, path: str, gz: bool) -> None:
    data = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in traces.records)
    raw_bytes = data.encode("utf-8")
    with open(path, "wb") as fh:
        if not gz:
            fh.write(raw_bytes)
            return
        # mtime=0 and no file name in the gzip header keep the output byte-identical
        # across runs and paths (reproducible bundles and diffs).
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gzf:
            gzf.write(raw_bytes)


# ---------------------------------------------------------------------------------------
# long form: records <-> rows
# ---------------------------------------------------------------------------------------
def _sample_col(key: str) -> str:
    if key in _RESERVED or key.startswith(_PREFIXES):
        return "sample." + key
    return key


def _records_to_rows(records: Iterable[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Flatten records into one dict per sample; also return the column order."""
    cols: dict[str, None] = dict.fromkeys(_REQUIRED)
    query_cols: dict[str, None] = {}
    sample_cols: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    for rec in records:
        qpart: dict[str, Any] = {}
        for k, v in rec.items():
            if k in ("id", "samples"):
                continue
            if k == "meta":
                for mk, mv in (v or {}).items():
                    qpart["meta." + mk] = mv
            elif k in _QUERY_COLS:
                qpart[k] = v
            else:
                qpart["query." + k] = v
        query_cols.update(dict.fromkeys(qpart))
        for s in rec["samples"]:
            row: dict[str, Any] = {"id": rec["id"], "tokens": s["tokens"], "correct": s["correct"]}
            row.update(qpart)
            for k, v in s.items():
                if k not in ("tokens", "correct"):
                    c = _sample_col(k)
                    row[c] = v
                    sample_cols[c] = None
            rows.append(row)
    # question/answer first, then the other query-level columns, then per-sample extras.
    ordered_q = [c for c in _QUERY_COLS if c in query_cols]
    ordered_q += [c for c in query_cols if c not in _QUERY_COLS]
    cols.update(dict.fromkeys(ordered_q))
    cols.update(sample_cols)
    return list(cols), rows


def _rows_to_records(rows: Iterator[tuple[int, dict[str, Any]]], path: str, unit: str) -> TraceSet:
    """Group long-form rows (already type-decoded; absent cells omitted) into records.

    ``rows`` yields ``(line_or_row_number, {column: value})``.
    """
    grouped = _LongFormRecords(path, unit)
    for ln, row in rows:
        grouped.add(ln, row)
    return grouped.trace_set()


class _LongFormRecords:
    """Records built up from long-form rows, one query per id in first-appearance order."""

    def __init__(self, path: str, unit: str) -> None:
        self.path, self.unit = path, unit
        self.by_id: dict[str, dict[str, Any]] = {}
        self.first_line: dict[str, int] = {}
        # Where each query-level value was first set, to report conflicts between rows.
        self.set_at: dict[tuple[str, str], int] = {}
        self.n_rows = 0

    def _fail(self, ln: int, fld: str | None, msg: str) -> TraceValidationError:
        return TraceValidationError(msg, path=self.path, line=ln, field=fld, unit=self.unit)

    def add(self, ln: int, row: dict[str, Any]) -> None:
        """Add one row: its query-level cells to its record, its sample to the samples."""
        self.n_rows += 1
        rid = row.get("id", _MISSING)
        if rid is _MISSING or rid is None or rid == "":
            raise self._fail(ln, "id", "is required (empty cell)")
        if not isinstance(rid, str):
            rid = str(rid)  # numeric ids from foreign Parquet files
        rec = self.by_id.get(rid)
        if rec is None:
            rec = {"id": rid, "samples": []}
            self.by_id[rid] = rec
            self.first_line[rid] = ln
        sample: dict[str, Any] = {}
        for col, val in row.items():
            if col == "id":
                continue
            if col in _QUERY_COLS or col.startswith(("meta.", "query.")):
                self._set_query_field(ln, rec, col, val)
            else:
                key = col[len("sample.") :] if col.startswith("sample.") else col
                sample[key] = val
        self._check_sample(ln, rid, sample)
        rec["samples"].append(sample)

    def _set_query_field(self, ln: int, rec: dict[str, Any], col: str, val: Any) -> None:
        if col.startswith("meta."):
            target, key = rec.setdefault("meta", {}), col[len("meta.") :]
        elif col.startswith("query."):
            target, key = rec, col[len("query.") :]
        else:
            target, key = rec, col
        if key not in target:
            target[key] = val
            self.set_at[(rec["id"], col)] = ln
        elif target[key] != val:
            raise self._fail(
                ln,
                col,
                f"differs between rows of id {rec['id']!r}: {val!r} here, "
                f"{target[key]!r} at {self.unit} {self.set_at[(rec['id'], col)]}",
            )

    def _check_sample(self, ln: int, rid: str, sample: dict[str, Any]) -> None:
        for req in ("tokens", "correct"):
            if req not in sample:
                raise self._fail(ln, req, "is required (empty cell)")
        # Validate the sample now so that errors name this row, not the query's first row.
        try:
            validate_record(
                {"id": rid, "samples": [sample]}, line=ln, path=self.path, unit=self.unit
            )
        except TraceValidationError as e:
            fld = e.field.replace("samples[0].", "") if e.field else None
            raise self._fail(ln, fld, e.reason) from None

    def trace_set(self) -> TraceSet:
        """The validated trace set of every row added."""
        if self.n_rows == 0:
            raise TraceValidationError("file holds no trace rows (it is empty)", path=self.path)
        records = [
            validate_record(r, line=self.first_line[r["id"]], path=self.path, unit=self.unit)
            for r in self.by_id.values()
        ]
        return TraceSet._trusted(records)


# ---------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------
def _looks_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def _encode_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        # Quote text that would otherwise be decoded as a number/bool/JSON, and "".
        return json.dumps(v, ensure_ascii=False) if (v == "" or _looks_json(v)) else v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v, ensure_ascii=False)


def _decode_cell(s: str) -> Any:
    if s == "":
        return _MISSING
    try:
        return json.loads(s)
    except ValueError:
        return s


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _read_csv(path: str) -> TraceSet:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceValidationError(
                "file holds no trace rows (it is empty)", path=path
            ) from None
        _check_csv_header(header, path)

        def rows() -> Iterator[tuple[int, dict[str, Any]]]:
            start = reader.line_num + 1
            for cells in reader:
                ln = start
                start = reader.line_num + 1  # multi-line quoted cells span several lines
                if not cells or all(c == "" for c in cells):
                    continue
                if len(cells) != len(header):
                    raise TraceValidationError(
                        f"row has {len(cells)} cells but the header has {len(header)}",
                        path=path,
                        line=ln,
                    )
                yield ln, _decode_csv_row(header, cells)

        return _rows_to_records(rows(), path, "line")


def _check_csv_header(header: list[str], path: str) -> None:
    if len(set(header)) != len(header):
        dup = next(c for c in header if header.count(c) > 1)
        raise TraceValidationError(
            "column appears twice in the header", path=path, line=1, field=dup
        )
    for req in _REQUIRED:
        if req not in header:
            raise TraceValidationError(
                "column is required in the header", path=path, line=1, field=req
            )


def _decode_csv_row(header: list[str], cells: list[str]) -> dict[str, Any]:
    """One CSV row as {column: value}; empty cells are left out (field absent)."""
    row: dict[str, Any] = {}
    for col, cell in zip(header, cells, strict=False):
        if cell == "" and col in ("id", "correct"):
            continue
        if col == "id":
            row["id"] = cell  # ids stay text even when they look numeric
        elif col == "correct":
            b = _BOOL_TEXT.get(cell.strip().lower())
            # Pass unknown text through so validation reports it verbatim.
            row["correct"] = cell if b is None else b
        else:
            v = _decode_cell(cell)
            if col in _QUERY_COLS and not isinstance(v, str) and v is not _MISSING:
                v = cell  # question/answer are text: keep "42" as written
            if v is not _MISSING:
                row[col] = v
    return row


def _write_csv(traces: TraceSet, path: str) -> None:
    cols, rows = _records_to_rows(traces.records)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for row in rows:
            w.writerow(
                [row["id"] if c == "id" else _encode_cell(row[c]) if c in row else "" for c in cols]
            )


# ---------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------
def _column_type(values: list[Any]) -> str:
    """'bool' | 'int' | 'float' | 'str' for a column of one scalar type, else 'json'."""
    kinds = set()
    for v in values:
        if v is _MISSING:
            continue
        if isinstance(v, bool):
            kinds.add("bool")
        elif isinstance(v, int):
            kinds.add("int")
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, str):
            kinds.add("str")
        else:
            kinds.add("json")
    if len(kinds) == 1 and "json" not in kinds:
        return kinds.pop()
    return "json" if kinds else "str"


def _write_parquet(traces: TraceSet, path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols, rows = _records_to_rows(traces.records)
    arrays = []
    json_cols = []
    for c in cols:
        vals = [row.get(c, _MISSING) for row in rows]
        kind = "int" if c == "tokens" else "bool" if c == "correct" else _column_type(vals)
        if kind == "json":
            json_cols.append(c)
            vals = [None if v is _MISSING else json.dumps(v, ensure_ascii=False) for v in vals]
            kind = "str"
        else:
            vals = [None if v is _MISSING else v for v in vals]
        typ = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}[
            kind
        ]
        arrays.append(pa.array(vals, type=typ))
    table = pa.Table.from_arrays(arrays, names=cols)
    table = table.replace_schema_metadata({_JSON_COLS_KEY: json.dumps(json_cols).encode()})
    pq.write_table(table, path)


def _to_py(v: Any) -> Any:
    """Numpy/arrow leftovers (from foreign files) to plain Python values."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return v.tolist()
    return v


def _read_parquet(path: str) -> TraceSet:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as e:  # not a Parquet file
        raise TraceValidationError(f"cannot read Parquet file: {e}", path=path) from None
    names = table.column_names
    for req in _REQUIRED:
        if req not in names:
            raise TraceValidationError("column is required", path=path, field=req)
    meta = table.schema.metadata or {}
    json_cols = set(json.loads(meta[_JSON_COLS_KEY])) if _JSON_COLS_KEY in meta else set()

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, r in enumerate(table.to_pylist(), start=1):
            row: dict[str, Any] = {}
            for c, v in r.items():
                if v is None:
                    continue
                row[c] = json.loads(v) if c in json_cols else _to_py(v)
            yield i, row

    return _rows_to_records(rows(), path, "row")


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
def read_traces(path: str | os.PathLike[str], *, format: str | None = None) -> TraceSet:
    """Read and validate a trace set.

    Parameters
    ----------
    path : path
        ``.jsonl``, ``.jsonl.gz`` (one record per query), ``.csv`` or ``.parquet`` (long
        form, one row per sample).
    format : str, optional
        Override the suffix-based choice: one of :data:`FORMATS`.

    Returns
    -------
    TraceSet

    Raises
    ------
    TraceValidationError
        With the file, 1-based line (row for Parquet) and field.
    FileNotFoundError
        When there is no such file.
    ValueError
        For an unknown format.
    """
    p = os.fspath(path)
    fmt = _infer_format(p, format)
    if not Path(p).is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    try:
        if fmt in ("jsonl", "jsonl.gz"):
            return _read_jsonl(p, gz=fmt == "jsonl.gz")
        if fmt == "csv":
            return _read_csv(p)
        return _read_parquet(p)
    except UnicodeDecodeError as exc:
        raise TraceValidationError(
            f"not UTF-8 text (byte {exc.start}: {exc.reason})", path=p
        ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceValidationError(f"not a valid gzip file ({exc})", path=p) from None


def write_traces(
    traces: TraceSet, path: str | os.PathLike[str], *, format: str | None = None
) -> None:
    """Write a trace set; the format follows the suffix (see :func:`read_traces`).

    Every field of every record is written, so ``read_traces(write_traces(t))`` gives
    back equal records (long form: a query-level ``None`` and an empty ``meta`` read back
    as absent).

    Parameters
    ----------
    traces : TraceSet
        The set to write.
    path : path
        File to write (overwritten).
    format : str, optional
        Override the suffix-based choice: one of :data:`FORMATS`.

    Raises
    ------
    ValueError
        For an unknown format.
    """
    p = os.fspath(path)
    fmt = _infer_format(p, format)
    if fmt in ("jsonl", "jsonl.gz"):
        _write_jsonl(traces, p, gz=fmt == "jsonl.gz")
    elif fmt == "csv":
        _write_csv(traces, p)
    else:
        _write_parquet(traces, p)
