"""Read a query file (JSONL or CSV) into ids, a utility curve and per-query limits.

One query per JSONL line (or CSV row after the header) with an ``id`` and the parameters of
the chosen curve family:

============  =====================================  ==========================
family        required                               optional (default)
============  =====================================  ==========================
``surge``     ``tau``                                ``alpha``, ``beta`` (CLI)
``gamma``     ``tau``                                ``beta`` (CLI), ``p`` (1)
``logistic``  ``mu``, ``scale``                      ``p`` (1)
============  =====================================  ==========================

plus optional ``floor``, ``min_tokens``, ``max_tokens`` (tokens). Other fields are ignored,
so a file can carry questions, answers or metadata too. Every problem raises
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
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .curves import GammaSCurve, LogisticCurve, ShiftedSurge, UtilityCurve

__all__ = ["FAMILIES", "LIMIT_FIELDS", "QueryFileError", "read_queries", "read_query_rows"]

#: Per-query budget limits a file may carry (tokens, non-negative).
LIMIT_FIELDS: tuple[str, ...] = ("floor", "min_tokens", "max_tokens")


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


# Parameter checks: (predicate, wording used in "must be a finite ... number").
_NONNEG = (lambda v: v >= 0, "finite non-negative number")
_POS = (lambda v: v > 0, "finite positive number")
_UNIT = (lambda v: 0 <= v <= 1, "number in [0, 1]")

#: family -> (required fields, optional fields); optional ones default to --alpha/--beta or p=1.
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "surge": (("tau",), ("alpha", "beta")),
    "gamma": (("tau",), ("beta", "p")),
    "logistic": (("mu", "scale"), ("p",)),
}

_CHECKS: dict[str, tuple[Callable[[float], bool], str]] = {
    "tau": _NONNEG,
    "mu": _NONNEG,
    "alpha": _POS,
    "beta": _POS,
    "scale": _POS,
    "p": _UNIT,
    "floor": _NONNEG,
    "min_tokens": _NONNEG,
    "max_tokens": _NONNEG,
}


def _display(v: Any) -> str:
    """How an offending value is quoted in messages: numbers bare, strings JSON-quoted."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return json.dumps(v) if isinstance(v, (bool, type(None), list, dict)) else str(v)


def _number(path: str, line: int, name: str, raw: Any, csv_mode: bool) -> float:
    """Parse and check one numeric field; raise QueryFileError on anything else."""
    pred, need = _CHECKS[name]
    if csv_mode and isinstance(raw, str):
        try:
            v = float(raw.strip())
        except ValueError:
            raise QueryFileError(
                path, line, name, f"must be a {need}, got {_display(raw)}"
            ) from None
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        v = float(raw)
    else:
        raise QueryFileError(path, line, name, f"must be a {need}, got {_display(raw)}")
    if not math.isfinite(v) or not pred(v):
        shown = raw.strip() if isinstance(raw, str) else _display(raw)
        raise QueryFileError(path, line, name, f"must be a {need}, got {shown}")
    return v


def _open_text(path: str | Path) -> tuple[str, str]:
    """(display name, text) of ``path``; ``-`` reads standard input."""
    if str(path) == "-":
        return "<stdin>", sys.stdin.read()
    p = Path(path)
    try:
        return str(path), p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueryFileError(str(path), None, None, "no such file") from None
    except IsADirectoryError:
        raise QueryFileError(str(path), None, None, "is a directory, not a query file") from None
    except UnicodeDecodeError as exc:
        raise QueryFileError(str(path), None, None, f"not UTF-8 text ({exc.reason})") from None


def read_query_rows(path: str | Path) -> tuple[str, list[tuple[int, dict[str, Any]]], bool]:
    """Parse a query file into raw rows, without checking fields.

    Returns
    -------
    name : str
        Display name of the file (``<stdin>`` for ``-``).
    rows : list of (line, dict)
        Each query with its 1-based line number; blank JSONL lines are skipped.
    csv_mode : bool
        True for CSV (all values are strings; empty cells mean "not given").
    """
    name, text = _open_text(path)
    csv_mode = str(path) != "-" and Path(path).suffix.lower() == ".csv"
    rows: list[tuple[int, dict[str, Any]]] = []
    if csv_mode:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for rec in reader:
                if None in rec:  # more cells than header columns
                    raise QueryFileError(
                        name,
                        reader.line_num,
                        None,
                        f"row has {len(reader.fieldnames or []) + len(rec[None])}"
                        f" cells but the header has "
                        f"{len(reader.fieldnames or [])} columns",
                    )
                if all(v in (None, "") for v in rec.values()):
                    continue
                # line_num counts physical lines read so far: the row's last line.
                rows.append((reader.line_num, {k.strip(): v for k, v in rec.items()}))
        except csv.Error as exc:
            raise QueryFileError(name, reader.line_num, None, f"not valid CSV ({exc})") from None
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QueryFileError(
                    name, i, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise QueryFileError(
                    name, i, None, f"expected a JSON object, got {type(obj).__name__}"
                )
            rows.append((i, obj))
    if not rows:
        raise QueryFileError(name, None, None, "no queries (the file is empty)")
    return name, rows, csv_mode


def _given(v: Any, csv_mode: bool) -> bool:
    return v is not None and not (csv_mode and isinstance(v, str) and v.strip() == "")


def read_queries(
    path: str | Path, family: str = "surge", *, alpha: float = 1.5, beta: float = 0.005
) -> tuple[list[str], UtilityCurve, dict[str, NDArray[np.float64]]]:
    """Read a query file and build the family's curves.

    Parameters
    ----------
    path : str or Path
        JSONL (any suffix but ``.csv``), CSV, or ``-`` for JSONL on standard input.
    family : {"surge", "gamma", "logistic"}
        Curve family (:class:`ShiftedSurge`, :class:`GammaSCurve`, :class:`LogisticCurve`).
    alpha, beta : float
        Defaults for queries without ``alpha`` / ``beta`` fields (surge: gain and decay;
        gamma: ``beta`` is the rate in 1/tokens).

    Returns
    -------
    ids : list of str, length N
    curve : UtilityCurve of N queries
    limits : dict
        ``floor``, ``min_tokens``, ``max_tokens`` -> float array (N,) for each of those fields
        present in at least one row; NaN where a row does not give it (the caller's default).

    Raises
    ------
    QueryFileError
        On any malformed row, naming the file, line and field.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    name, rows, csv_mode = read_query_rows(path)
    required, optional = FAMILIES[family]
    defaults = {"alpha": alpha, "beta": beta, "p": 1.0}
    for key, val in (("alpha", alpha), ("beta", beta)):
        if not (math.isfinite(val) and val > 0):
            raise ValueError(f"--{key} must be a finite positive number, got {val}")
    params: dict[str, list[float]] = {k: [] for k in required + optional}
    ids = _ids(name, rows, csv_mode)
    for line, row in rows:
        for key in required:
            if not _given(row.get(key), csv_mode):
                raise QueryFileError(
                    name, line, key, f"is missing (the {family} family needs {', '.join(required)})"
                )
            params[key].append(_number(name, line, key, row[key], csv_mode))
        for key in optional:
            v = row.get(key)
            params[key].append(
                _number(name, line, key, v, csv_mode) if _given(v, csv_mode) else defaults[key]
            )
    arr = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    curve: UtilityCurve
    if family == "surge":
        curve = ShiftedSurge(arr["tau"], _shared(arr["alpha"]), _shared(arr["beta"]))
    elif family == "gamma":
        curve = GammaSCurve(arr["tau"], arr["beta"], arr["p"])
    else:
        curve = LogisticCurve(arr["mu"], arr["scale"], arr["p"])
    return ids, curve, _limits(name, rows, csv_mode)


def read_query_texts(
    path: str | Path,
) -> tuple[list[str], list[str], dict[str, NDArray[np.float64]]]:
    """Read a query file that carries only ``id`` and the prompt text (``question`` or
    ``text``), for allocation with a text predictor.

    Returns ids (N,), texts (N,) and the same ``limits`` as :func:`read_queries`.
    """
    name, rows, csv_mode = read_query_rows(path)
    ids = _ids(name, rows, csv_mode)
    texts: list[str] = []
    for line, row in rows:
        key = "question" if "question" in row else "text"
        v = row.get(key)
        if not _given(v, csv_mode) or not isinstance(v, str) or not v.strip():
            raise QueryFileError(
                name,
                line,
                key,
                "is missing (with --predictor each query needs its prompt "
                "text in a 'question' or 'text' field)",
            )
        texts.append(v)
    return ids, texts, _limits(name, rows, csv_mode)


def read_run_queries(
    path: str | Path, *, need_tau: bool
) -> tuple[list[str], list[str], list[str | None], NDArray[np.float64] | None]:
    """Read queries to execute: ``id``, prompt (``question`` or ``text``), optional gold
    ``answer`` and, when ``need_tau``, the threshold ``tau`` in tokens.

    Returns ids (N,), texts (N,), answers (N,; None where absent) and tau (N,) or None.
    """
    name, rows, csv_mode = read_query_rows(path)
    ids, texts, _ = read_query_texts(path)
    answers = [str(r["answer"]) if _given(r.get("answer"), csv_mode) else None for _, r in rows]
    if not need_tau:
        return ids, texts, answers, None
    tau = []
    for line, row in rows:
        if not _given(row.get("tau"), csv_mode):
            raise QueryFileError(
                name, line, "tau", "is missing (give each query a threshold, or pass --predictor)"
            )
        tau.append(_number(name, line, "tau", row["tau"], csv_mode))
    return ids, texts, answers, np.asarray(tau, dtype=float)


def _ids(name: str, rows: list[tuple[int, dict[str, Any]]], csv_mode: bool) -> list[str]:
    """Each row's id, checked: present, a string or integer, unique."""
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        rid = row.get("id")
        if not _given(rid, csv_mode) or rid == "":
            raise QueryFileError(name, line, "id", "is missing")
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise QueryFileError(
                name, line, "id", f"must be a string or an integer, got {_display(rid)}"
            )
        qid = str(rid).strip() if csv_mode else str(rid)
        if qid in first_line:
            raise QueryFileError(
                name, line, "id", f"duplicates id {_display(qid)} of line {first_line[qid]}"
            )
        first_line[qid] = line
        ids.append(qid)
    return ids


def _limits(
    name: str, rows: list[tuple[int, dict[str, Any]]], csv_mode: bool
) -> dict[str, NDArray[np.float64]]:
    """Per-query limit columns present in at least one row; NaN where a row omits them."""
    out: dict[str, NDArray[np.float64]] = {}
    for key in LIMIT_FIELDS:
        col = [
            _number(name, line, key, row.get(key), csv_mode)
            if _given(row.get(key), csv_mode)
            else math.nan
            for line, row in rows
        ]
        arr = np.asarray(col, dtype=float)
        if not np.isnan(arr).all():
            out[key] = arr
    return out


def _shared(values: NDArray[np.float64]) -> NDArray[np.float64] | float:
    """A scalar when every query has the same value: keeps the surge's sorted O(log N) path."""
    return float(values[0]) if values.size and bool((values == values[0]).all()) else values
