"""Query files, read the same way by every command that takes them.

One query per JSONL line (or CSV row after the header) with an ``id`` and whatever the
command needs: a curve family's parameters (``allocate``), the prompt text (``question``,
``text`` or ``prompt``; ``allocate`` with a predictor, ``predictor predict``, ``run``,
``collect``), a gold ``answer``:

============  =====================================  ==========================
family        required                               optional (default)
============  =====================================  ==========================
``surge``     ``tau``                                ``alpha``, ``beta`` (CLI)
``gamma``     ``tau``                                ``beta`` (CLI), ``p`` (1)
``logistic``  ``mu``, ``scale``                      ``p`` (1)
============  =====================================  ==========================

plus optional per-query limits ``floor``, ``min_tokens``, ``max_tokens`` (tokens). Other fields
are ignored, so a file can carry metadata too. Files are UTF-8 (a byte-order mark is
allowed); ``-`` reads JSONL from standard input (once). Every problem raises
:class:`QueryFileError` naming the file, the 1-based line (CSV: the header is line 1) and the
field, e.g. ``queries.jsonl line 3: field "tau" must be a finite non-negative number, got -5``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..curves import GammaSCurve, LogisticCurve, ShiftedSurge, UtilityCurve
from ..limits import MAX_BUDGET

__all__ = [
    "FAMILIES",
    "LIMIT_FIELDS",
    "TEXT_FIELDS",
    "QueryFile",
    "QueryFileError",
    "read_query_file",
]

#: Per-query budget limits a file may carry (tokens, non-negative).
LIMIT_FIELDS: tuple[str, ...] = ("floor", "min_tokens", "max_tokens")

#: Fields that may hold a query's prompt text, in the order they are looked for.
TEXT_FIELDS: tuple[str, ...] = ("question", "text", "prompt")

#: family -> (required fields, optional fields); optional ones default to --alpha/--beta or p=1.
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "surge": (("tau",), ("alpha", "beta")),
    "gamma": (("tau",), ("beta", "p")),
    "logistic": (("mu", "scale"), ("p",)),
}


class QueryFileError(ValueError):
    """A query file is malformed.

    Attributes
    ----------
    path : str
        The file as named by the user (``<stdin>`` for ``-``).
    line : int or None
        1-based line; None when the problem is the whole file (e.g. empty).
    field : str or None
        The offending field, or None.
    """

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = path if line is None else f"{path} line {line}"
        body = f'field "{field}" {message}' if field else message
        super().__init__(f"{where}: {body}")


# Parameter checks: (predicate, wording used in "must be a ...").
_NONNEG = (lambda v: v >= 0, "finite non-negative number")
_POS = (lambda v: v > 0, "finite positive number")
_UNIT = (lambda v: 0 <= v <= 1, "number in [0, 1]")
_TOKENS = (lambda v: 0 <= v <= MAX_BUDGET, f"number of tokens from 0 to {MAX_BUDGET:.0e}")

_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "tau": _NONNEG, "mu": _NONNEG, "alpha": _POS, "beta": _POS, "scale": _POS, "p": _UNIT,
    "floor": _TOKENS, "min_tokens": _TOKENS, "max_tokens": _TOKENS,
}  # fmt: skip


def _display(v: Any) -> str:
    """How an offending value is quoted in messages: numbers bare, strings JSON-quoted."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, bool | type(None) | list | dict):
        return json.dumps(v)[:60]
    return str(v)


def _read_text(path: str | Path) -> tuple[str, str]:
    """(display name, text) of ``path``; ``-`` reads standard input."""
    if str(path) == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        name = "<stdin>"
    else:
        name = str(path)
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise QueryFileError(name, None, None, "no such file") from None
        except IsADirectoryError:
            raise QueryFileError(name, None, None, "is a directory, not a query file") from None
        except PermissionError:
            raise QueryFileError(name, None, None, "cannot be read (permission denied)") from None
    if isinstance(data, str):
        return name, data.removeprefix("\ufeff")
    try:
        return name, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QueryFileError(
            name, None, None, f"is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from None


def _csv_rows(name: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
        if any(h is None or not str(h).strip() for h in header):
            raise QueryFileError(name, 1, None, "the header has an empty column name")
        for rec in reader:
            if None in rec:  # more cells than header columns
                raise QueryFileError(
                    name,
                    reader.line_num,
                    None,
                    f"row has {len(header) + len(rec[None])} cells but the header has "
                    f"{len(header)} columns",
                )
            if all(v in (None, "") for v in rec.values()):
                continue
            # line_num counts physical lines read so far: the row's last line.
            rows.append((reader.line_num, {k.strip(): v for k, v in rec.items()}))
    except csv.Error as exc:
        raise QueryFileError(name, reader.line_num, None, f"not valid CSV ({exc})") from None
    return rows


def _jsonl_rows(name: str, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for i, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = (
                f"{exc.msg} at column {exc.colno}"
                if isinstance(exc, ValueError)
                else "nested too deep"
            )
            raise QueryFileError(name, i, None, f"not valid JSON ({detail})") from None
        if not isinstance(obj, dict):
            raise QueryFileError(name, i, None, f"expected a JSON object, got {type(obj).__name__}")
        rows.append((i, obj))
    return rows


@dataclass(frozen=True)
class QueryFile:
    """The rows of a query file, with their lines, and typed access to their fields.

    Attributes
    ----------
    name : str
        The file as named by the user (``<stdin>`` for ``-``).
    rows : list of (int, dict)
        Each query with its 1-based line.
    csv_mode : bool
        True for CSV (values are strings; an empty cell means "not given").
    """

    name: str
    rows: list[tuple[int, dict[str, Any]]]
    csv_mode: bool

    @property
    def n(self) -> int:
        """Number of queries."""
        return len(self.rows)

    def given(self, v: Any) -> bool:
        """Whether a cell holds a value (CSV: a non-blank string)."""
        return v is not None and not (self.csv_mode and isinstance(v, str) and not v.strip())

    def has(self, field: str) -> bool:
        """Whether any row gives ``field``."""
        return any(self.given(row.get(field)) for _, row in self.rows)

    def ids(self) -> list[str]:
        """Each row's id, checked: present, a string or integer, unique."""
        ids: list[str] = []
        first_line: dict[str, int] = {}
        for line, row in self.rows:
            rid = row.get("id")
            if not self.given(rid) or (isinstance(rid, str) and not rid.strip()):
                raise QueryFileError(self.name, line, "id", "is missing")
            if isinstance(rid, bool) or not isinstance(rid, str | int):
                raise QueryFileError(
                    self.name, line, "id", f"must be a string or an integer, got {_display(rid)}"
                )
            qid = str(rid).strip() if self.csv_mode else str(rid)
            if qid in first_line:
                raise QueryFileError(
                    self.name,
                    line,
                    "id",
                    f"duplicates id {_display(qid)} of line {first_line[qid]}",
                )
            first_line[qid] = line
            ids.append(qid)
        return ids

    def number(self, line: int, name: str, raw: Any) -> float:
        """Parse and check one numeric field; raise :class:`QueryFileError` otherwise."""
        pred, need = _CHECKS[name]
        if self.csv_mode and isinstance(raw, str):
            try:
                v = float(raw.strip())
            except ValueError:
                raise QueryFileError(
                    self.name, line, name, f"must be a {need}, got {_display(raw)}"
                ) from None
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            try:
                v = float(raw)
            except OverflowError:
                v = math.inf
        else:
            raise QueryFileError(self.name, line, name, f"must be a {need}, got {_display(raw)}")
        if not math.isfinite(v) or not pred(v):
            shown = raw.strip() if isinstance(raw, str) else _display(raw)
            raise QueryFileError(self.name, line, name, f"must be a {need}, got {shown}")
        return v

    def column(self, name: str, default: float = math.nan) -> NDArray[np.float64]:
        """A numeric field of every row, checked; ``default`` where a row omits it."""
        return np.asarray(
            [
                self.number(line, name, row[name]) if self.given(row.get(name)) else default
                for line, row in self.rows
            ],
            dtype=float,
        )

    def positive(self, field: str, why: str) -> NDArray[np.float64]:
        """A required field holding a positive, finite number of tokens in every row."""
        out = []
        for line, row in self.rows:
            raw = row.get(field)
            if not self.given(raw):
                raise QueryFileError(self.name, line, field, f"is missing ({why})")
            v = math.nan
            if isinstance(raw, str) and self.csv_mode:
                v = _to_float(raw.strip())
            elif isinstance(raw, int | float) and not isinstance(raw, bool):
                v = _to_float(raw)
            ok = math.isfinite(v) and 0 < v <= MAX_BUDGET
            if not ok:
                raise QueryFileError(
                    self.name,
                    line,
                    field,
                    f"must be a positive number of tokens, got {_display(raw)}",
                )
            out.append(v)
        return np.asarray(out, dtype=float)

    def require(self, fields: tuple[str, ...], why: str) -> None:
        """Raise naming the first row that lacks one of ``fields``."""
        for line, row in self.rows:
            for key in fields:
                if not self.given(row.get(key)):
                    raise QueryFileError(self.name, line, key, f"is missing ({why})")

    def texts(self, why: str = "each query needs its prompt") -> list[str]:
        """Each row's prompt: the first of ``question``, ``text``, ``prompt`` it gives."""
        out = []
        for line, row in self.rows:
            key = next((k for k in TEXT_FIELDS if self.given(row.get(k))), None)
            if key is None:
                raise QueryFileError(self.name, line, "question", f"is missing ({why})")
            v = row[key]
            if not isinstance(v, str) or not v.strip():
                raise QueryFileError(
                    self.name, line, key, f"must be non-empty text, got {_display(v)}"
                )
            out.append(v)
        return out

    def has_texts(self) -> bool:
        """Whether every row carries a prompt."""
        return all(any(self.given(row.get(k)) for k in TEXT_FIELDS) for _, row in self.rows)

    def answers(self) -> list[str | None]:
        """Each row's gold ``answer`` as text (None where absent)."""
        return [
            str(row["answer"]) if self.given(row.get("answer")) else None for _, row in self.rows
        ]

    def limits(self) -> dict[str, NDArray[np.float64]]:
        """Per-query limit columns present in at least one row; NaN where a row omits them.

        Rows whose own limits contradict each other (``min_tokens`` or ``floor`` above
        ``max_tokens``) are refused here, naming the line.
        """
        out: dict[str, NDArray[np.float64]] = {}
        for key in LIMIT_FIELDS:
            col = self.column(key)
            if not np.isnan(col).all():
                out[key] = col
        hi = out.get("max_tokens")
        for key in ("min_tokens", "floor"):
            lo = out.get(key)
            if lo is None or hi is None:
                continue
            bad = np.flatnonzero(lo > hi)  # NaN compares False: only rows giving both
            if bad.size:
                line = self.rows[int(bad[0])][0]
                raise QueryFileError(
                    self.name,
                    line,
                    key,
                    f"{_display(lo[bad[0]])} exceeds this row's "
                    f"max_tokens {_display(hi[bad[0]])}: the query could never be funded",
                )
        return out

    def curves(self, family: str, *, alpha: float = 1.5, beta: float = 0.005) -> UtilityCurve:
        """The curve family's parameters of every row as one :class:`UtilityCurve`.

        ``alpha`` and ``beta`` are the defaults for rows that do not give them.
        """
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        required, optional = FAMILIES[family]
        self.require(required, f"the {family} family needs {', '.join(required)}")
        defaults = {"alpha": alpha, "beta": beta, "p": 1.0}
        arr = {k: self.column(k) for k in required}
        arr.update({k: self.column(k, default=defaults[k]) for k in optional})
        if family == "surge":
            return ShiftedSurge(arr["tau"], _shared(arr["alpha"]), _shared(arr["beta"]))
        if family == "gamma":
            return GammaSCurve(arr["tau"], arr["beta"], arr["p"])
        return LogisticCurve(arr["mu"], arr["scale"], arr["p"])


def read_query_file(path: str | Path) -> QueryFile:
    """Read a query file: JSONL (any suffix but ``.csv``), CSV, or ``-`` for JSONL on stdin.

    Raises
    ------
    QueryFileError
        When the file is missing, a directory, not UTF-8, not valid JSONL/CSV, or empty.
    """
    name, text = _read_text(path)
    csv_mode = str(path) != "-" and Path(path).suffix.lower() == ".csv"
    rows = _csv_rows(name, text) if csv_mode else _jsonl_rows(name, text)
    if not rows:
        raise QueryFileError(name, None, None, "no queries (the file is empty)")
    return QueryFile(name, rows, csv_mode)


def _to_float(raw: str | float) -> float:
    try:
        return float(raw)
    except (ValueError, OverflowError):
        return math.nan


def _shared(values: NDArray[np.float64]) -> NDArray[np.float64] | float:
    """A scalar when every query has the same value: keeps the surge's sorted O(log N) path."""
    return float(values[0]) if values.size and bool((values == values[0]).all()) else values


@dataclass(frozen=True)
class QueryCurves:
    """The curves a command allocates over, and where they came from.

    Attributes
    ----------
    curves : UtilityCurve
        One curve per query.
    source : str
        ``"file"`` (the family's parameters in the file), ``"predictor"`` (a given
        predictor), ``"default predictor"`` (the bundled one: the file had text only) or
        ``"none"`` (a policy that needs no curves, e.g. uniform).
    family : str
        The curve family.
    """

    curves: UtilityCurve
    source: str
    family: str


#: Policies that need no per-query information.
CURVE_FREE_POLICIES = frozenset({"uniform"})


def query_curves(
    qf: QueryFile,
    *,
    family: str = "surge",
    policy: str = "clear",
    predictor: str | None = None,
    point: bool = False,
    alpha: float = 1.5,
    beta: float = 0.005,
) -> QueryCurves:
    """Curves for the queries of ``qf``: from the file, a predictor, or none needed.

    With ``predictor`` the prompts are read and priced by it. Without, the family's
    parameters come from the file; a file with prompts but no parameters is priced by the
    bundled default predictor (and :attr:`QueryCurves.source` says so). A policy in
    :data:`CURVE_FREE_POLICIES` needs neither.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown --family {family!r}; choose one of {', '.join(FAMILIES)}")
    required = FAMILIES[family][0]
    has_params = all(qf.has(k) for k in required)
    if predictor is None and policy in CURVE_FREE_POLICIES and not has_params:
        return QueryCurves(ShiftedSurge(np.zeros(qf.n), alpha, beta), "none", family)
    if predictor is None and (has_params or not qf.has_texts()):
        why = (
            f"the {family} family needs {', '.join(required)}; or give each query its "
            f"question text to have the threshold predicted"
        )
        qf.require(required, why)
        return QueryCurves(qf.curves(family, alpha=alpha, beta=beta), "file", family)
    if family == "logistic":
        raise ValueError("a predictor predicts thresholds for the surge or gamma family only")
    from ..predict import load_predictor

    texts = qf.texts("a predictor prices each query from its question text")
    name = predictor or "default"
    try:
        model = load_predictor(name)
    except (OSError, TypeError) as exc:
        raise ValueError(f"--predictor {name}: cannot load ({exc})") from None
    curves = model.predict_curves(
        texts,
        family="gamma" if family == "gamma" else "surge",
        uncertainty=not point,
        alpha=alpha,
        beta=beta,
    )
    return QueryCurves(curves, "predictor" if predictor else "default predictor", family)
