"""Trace-set schema: one record per query, each with a list of sampled responses.

A *trace set* is what the curve fitters and simulators consume: for each query, several
independent samples from one model, each with its length in tokens and whether it was
correct. On disk (see :mod:`shadowprice.traces.io`) the canonical form is JSONL, one object
per query::

    {"id": "math-7", "question": "...", "answer": "42",
     "samples": [{"tokens": 311, "correct": true, "pred": "42"}, ...],
     "meta": {"level": 3}}

``id`` and ``samples`` (each with ``tokens`` and ``correct``) are required; ``question``,
``answer`` and ``meta`` are optional; any other field, at the top level or inside a sample,
is kept unchanged so that files round-trip without loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..limits import MAX_BUDGET

__all__ = ["TraceSet", "TraceValidationError", "validate_record"]


class TraceValidationError(ValueError):
    """A trace record (or file) breaks the schema.

    The message reads ``"<path> <unit> <line>: <field> <message>"``, leaving out what is
    unknown.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it (stored as :attr:`reason`).
    path : str, optional
        The file it came from, or ``None`` for in-memory data.
    line : int, optional
        1-based line (JSONL/CSV) or row (Parquet) number, or ``None`` when the problem is
        not tied to one line (e.g. an empty file).
    field : str, optional
        The offending field, e.g. ``"samples[2].tokens"``.
    unit : str
        ``"line"`` or ``"row"``: the word before the line number.

    Attributes
    ----------
    path, line, field : str, int, str or None
        As given.
    reason : str
        The message without the location.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"{unit} {line}")
        prefix = " ".join(where)
        body = f"{field} {message}" if field else message
        super().__init__(f"{prefix}: {body}" if prefix else body)


def _is_int_like(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_tokens(v: Any) -> int | None:
    """Return ``v`` as an int in [0, MAX_BUDGET], or ``None`` if it is not one.

    Integral floats (``311.0``) are accepted because CSV/Parquet readers and numpy arrays
    produce them; NaN, inf, fractions, negatives, absurd counts (over
    :data:`~shadowprice.limits.MAX_BUDGET`), bools and strings are rejected.
    """
    if _is_int_like(v):
        iv = int(v)
    elif isinstance(v, (float, np.floating)):
        if not math.isfinite(v) or not float(v).is_integer():
            return None
        iv = int(v)
    else:
        return None
    return iv if 0 <= iv <= MAX_BUDGET else None


def validate_record(
    obj: Any,
    *,
    line: int | None = None,
    path: str | None = None,
    unit: str = "line",
) -> dict[str, Any]:
    """Check one query record against the schema and return a normalised copy.

    Normalisation only converts types (numpy scalars and integral floats in ``tokens`` to
    ``int``, numpy bools in ``correct`` to ``bool``); every field, known or not, is kept in
    its original order.

    Parameters
    ----------
    obj : Any
        The decoded record (normally a dict from one JSONL line).
    line : int, optional
        1-based line number for error messages.
    path : str, optional
        File name for error messages.
    unit : str
        ``"line"`` or ``"row"``, the word used before ``line`` in messages.

    Returns
    -------
    dict
        A copy of ``obj`` with normalised samples.

    Raises
    ------
    TraceValidationError
        Naming ``path``, ``line`` and the offending field.
    """

    def fail(fld: str | None, msg: str) -> TraceValidationError:
        return TraceValidationError(msg, path=path, line=line, field=fld, unit=unit)

    samples = _check_query_fields(obj, fail)
    out = dict(obj)
    out["samples"] = [_check_sample(s, j, fail) for j, s in enumerate(samples)]
    return out


_Fail = Callable[[str | None, str], TraceValidationError]


def _check_query_fields(obj: Any, fail: _Fail) -> list[Any] | tuple[Any, ...]:
    """Check everything but the samples' contents; return the samples."""
    if not isinstance(obj, dict):
        raise fail(None, f"record must be a JSON object, got {type(obj).__name__}")
    if "id" not in obj:
        raise fail("id", "is required")
    rid = obj["id"]
    if not isinstance(rid, str) or not rid:
        raise fail("id", f"must be a non-empty string, got {rid!r}")
    for key in ("question", "answer"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise fail(key, f"must be a string, got {type(obj[key]).__name__}")
    if obj.get("meta") is not None and not isinstance(obj["meta"], dict):
        raise fail("meta", f"must be an object, got {type(obj['meta']).__name__}")
    if "samples" not in obj:
        raise fail("samples", "is required")
    samples = obj["samples"]
    if not isinstance(samples, (list, tuple)):
        raise fail("samples", f"must be a list, got {type(samples).__name__}")
    if len(samples) == 0:
        raise fail("samples", f"must hold at least one sample (query {rid!r} has none)")
    return samples


def _check_sample(s: Any, j: int, fail: _Fail) -> dict[str, Any]:
    """Sample ``j`` checked and normalised (``tokens`` an int, ``correct`` a bool)."""
    if not isinstance(s, dict):
        raise fail(f"samples[{j}]", f"must be an object, got {type(s).__name__}")
    if "tokens" not in s:
        raise fail(f"samples[{j}].tokens", "is required")
    tok = _check_tokens(s["tokens"])
    if tok is None:
        big = isinstance(s["tokens"], int | float) and s["tokens"] > MAX_BUDGET
        need = (
            f"must be at most {MAX_BUDGET:.0e} tokens" if big else "must be a non-negative integer"
        )
        raise fail(f"samples[{j}].tokens", f"{need}, got {s['tokens']!r}")
    if "correct" not in s:
        raise fail(f"samples[{j}].correct", "is required")
    cor = s["correct"]
    if not isinstance(cor, (bool, np.bool_)):
        raise fail(f"samples[{j}].correct", f"must be a boolean (true/false), got {cor!r}")
    ns = dict(s)
    ns["tokens"] = tok
    ns["correct"] = bool(cor)
    return ns


def _check_unique(
    records: Sequence[dict[str, Any]],
    lines: Sequence[int | None] | None,
    path: str | None,
    unit: str = "line",
) -> None:
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        rid = r["id"]
        if rid in seen:
            first = seen[rid]
            ln = lines[i] if lines is not None else None
            first_ln = lines[first] if lines is not None else first
            raise TraceValidationError(
                f"duplicate id {rid!r} (first seen at {unit} {first_ln})"
                if lines is not None
                else f"duplicate id {rid!r} (records {first} and {i})",
                path=path,
                line=ln,
                field="id",
                unit=unit,
            )
        seen[rid] = i


IndexLike = slice | Sequence[int] | Sequence[bool] | npt.NDArray[np.integer] | npt.NDArray[np.bool_]


@dataclass
class TraceSet:
    """A validated set of query records (see module docstring for the record layout).

    Treat a TraceSet as immutable: the arrays below are computed once, on first use, from
    ``records``; mutating ``records`` afterwards is not detected. Derive new sets with
    :meth:`subset` and :meth:`map_samples` instead.

    Parameters
    ----------
    records : list of dict
        One record per query; each is validated (:func:`validate_record`) and ids must be
        unique.

    Attributes
    ----------
    records : list of dict
        One dict per query, in file order, every field preserved (normalised types).
    ids : list of str
        ``records[i]["id"]``, unique.

    Raises
    ------
    TraceValidationError
        Naming the record (``records[i]``) and the field.
    """

    records: list[dict[str, Any]]
    ids: list[str] = field(init=False)
    _cache: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checked = []
        for i, r in enumerate(self.records):
            try:
                checked.append(validate_record(r))
            except TraceValidationError as e:
                # In-memory records have no line; name the record's index instead.
                fld = f"records[{i}].{e.field}" if e.field else f"records[{i}]"
                raise TraceValidationError(e.reason, field=fld) from None
        self.records = checked
        _check_unique(self.records, None, None)
        self._finish()

    def _finish(self) -> None:
        self.ids = [r["id"] for r in self.records]
        self._cache = {}

    @classmethod
    def _trusted(cls, records: list[dict[str, Any]]) -> TraceSet:
        """Build from records already validated (skip the O(N·S) Python checks)."""
        ts = cls.__new__(cls)
        ts.records = records
        ts._finish()
        return ts

    # -- sizes -------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of queries N."""
        return len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    # -- dense views -------------------------------------------------------------------
    def _dense(self) -> None:
        counts = np.fromiter((len(r["samples"]) for r in self.records), np.int64, self.n)
        s_max = int(counts.max()) if self.n else 0
        # Flatten once, then scatter into the padded matrices with one fancy-index write.
        flat_t = np.fromiter((s["tokens"] for r in self.records for s in r["samples"]), np.float64)
        flat_c = np.fromiter((s["correct"] for r in self.records for s in r["samples"]), np.bool_)
        rows = np.repeat(np.arange(self.n), counts)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        cols = np.arange(flat_t.size) - starts
        tok = np.full((self.n, s_max), np.nan)
        cor = np.zeros((self.n, s_max), dtype=bool)
        tok[rows, cols] = flat_t
        cor[rows, cols] = flat_c
        self._cache.update(tokens=tok, correct=cor, n_samples=counts)

    def tokens(self) -> npt.NDArray[np.float64]:
        """Response lengths in tokens.

        Returns
        -------
        ndarray of float64, shape (N, S_max)
            Row ``i`` holds query ``i``'s samples in order; entries past ``n_samples()[i]``
            are NaN. A copy.
        """
        if "tokens" not in self._cache:
            self._dense()
        return self._cache["tokens"].copy()

    def correct(self) -> npt.NDArray[np.bool_]:
        """Correctness per sample.

        Returns
        -------
        ndarray of bool, shape (N, S_max)
            False-padded past each query's samples. A copy.
        """
        if "correct" not in self._cache:
            self._dense()
        return self._cache["correct"].copy()

    def n_samples(self) -> npt.NDArray[np.int64]:
        """Number of samples per query.

        Returns
        -------
        ndarray of int64, shape (N,)
            A copy.
        """
        if "n_samples" not in self._cache:
            self._dense()
        return self._cache["n_samples"].copy()

    # -- per-query fields --------------------------------------------------------------
    def questions(self) -> list[str | None]:
        """Question text per query.

        Returns
        -------
        list of str or None
            Length N; ``None`` where absent.
        """
        return [r.get("question") for r in self.records]

    def answers(self) -> list[str | None]:
        """Gold answer per query.

        Returns
        -------
        list of str or None
            Length N; ``None`` where absent.
        """
        return [r.get("answer") for r in self.records]

    def meta(self, key: str, default: Any = None) -> list[Any]:
        """One ``meta`` field per query.

        Parameters
        ----------
        key : str
            The field, e.g. ``"level"``.
        default : Any
            Value where a query has no such field.

        Returns
        -------
        list
            ``records[i]["meta"][key]`` per query, length N.
        """
        return [(r.get("meta") or {}).get(key, default) for r in self.records]

    # -- derived sets ------------------------------------------------------------------
    def subset(self, index: IndexLike) -> TraceSet:
        """Queries selected by a bool mask (length N), integer indices or a slice.

        Parameters
        ----------
        index : bool mask, int indices or slice
            Which queries, in that order; indices may not repeat a query.

        Returns
        -------
        TraceSet
            Sharing its records with this set (not copied).

        Raises
        ------
        ValueError, TypeError
            For a mask of the wrong length, repeated indices or another index type.
        """
        if isinstance(index, slice):
            return TraceSet._trusted(self.records[index])
        idx = np.asarray(index)
        if idx.dtype == np.bool_:
            if idx.shape != (self.n,):
                raise ValueError(f"bool mask must have shape ({self.n},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"index must be bool, integer or slice, got dtype {idx.dtype}")
        picked = [self.records[int(i)] for i in idx.ravel()]
        ids = [r["id"] for r in picked]
        if len(set(ids)) != len(ids):
            raise ValueError("subset indices repeat a query; ids must stay unique")
        return TraceSet._trusted(picked)

    def select_samples(self, keep: npt.ArrayLike) -> TraceSet:
        """New set with only the samples where ``keep`` is True (sample order kept).

        Parameters
        ----------
        keep : array of bool, shape (N, S_max)
            Which of each query's samples to keep (entries past a query's samples ignored).

        Returns
        -------
        TraceSet
            The same N queries. The kept samples were valid already, so nothing is checked
            again: this is the fast path of sample splits on large sets.

        Raises
        ------
        ValueError
            If ``keep`` has the wrong shape or leaves a query without samples.
        """
        mask = np.asarray(keep, dtype=bool)
        n_samples = self.n_samples()
        width = int(n_samples.max()) if self.n else 0
        if mask.shape != (self.n, width):
            raise ValueError(f"keep must have shape ({self.n}, {width}), got {mask.shape}")
        mask = mask & (np.arange(width)[None, :] < n_samples[:, None])
        counts = mask.sum(axis=1)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(
                f"{empty.size} queries would keep no sample (first: "
                f"{self.records[int(empty[0])]['id']!r})"
            )
        rows = mask.tolist()
        out = []
        for r, row in zip(self.records, rows, strict=True):
            nr = dict(r)
            nr["samples"] = [smp for smp, k in zip(r["samples"], row, strict=False) if k]
            out.append(nr)
        ts = TraceSet._trusted(out)
        # The dense views follow from this set's: left-pack each row's kept samples.
        order = np.argsort(~mask, axis=1, kind="stable")
        width_out = int(counts.max())
        take = order[:, :width_out]
        present = np.arange(width_out)[None, :] < counts[:, None]
        tok = np.take_along_axis(self.tokens(), take, axis=1)
        cor = np.take_along_axis(self.correct(), take, axis=1)
        ts._cache.update(
            tokens=np.where(present, tok, np.nan),
            correct=cor & present,
            n_samples=counts.astype(np.int64),
        )
        return ts

    def map_samples(
        self, fn: Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]]
    ) -> TraceSet:
        """New set whose records have ``samples`` replaced by ``fn(record["samples"])``.

        Used for sample splits (e.g. fit on the first half of each query's samples,
        evaluate on the rest).

        Parameters
        ----------
        fn : callable
            A query's list of samples -> the samples to keep (or new ones).

        Returns
        -------
        TraceSet
            Validated: ``fn`` must leave every query at least one well-formed sample.

        Raises
        ------
        TraceValidationError
            Naming the query whose samples ``fn`` broke.
        """
        out = []
        for i, r in enumerate(self.records):
            nr = dict(r)
            nr["samples"] = list(fn(list(r["samples"])))
            try:
                out.append(validate_record(nr))
            except TraceValidationError as e:
                raise TraceValidationError(
                    f"after map_samples, query {r['id']!r} (index {i}): {e.reason}",
                    field=e.field,
                ) from None
        return TraceSet._trusted(out)

    # -- construction from arrays ------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        ids: Sequence[str],
        tokens: npt.ArrayLike,
        correct: npt.ArrayLike,
        questions: Sequence[str | None] | None = None,
        meta: Sequence[dict[str, Any] | None] | None = None,
    ) -> TraceSet:
        """Build a set from dense arrays (e.g. simulated traces).

        Parameters
        ----------
        ids : sequence of str
            N unique query ids.
        tokens : array_like, shape (N, S)
            Token counts; NaN marks a missing sample. Values must be non-negative integers
            (round simulated lengths first).
        correct : array_like of bool, shape (N, S)
            Ignored where ``tokens`` is NaN.
        questions : sequence of str or None, optional
            N question texts.
        meta : sequence of dict or None, optional
            N meta dicts.

        Returns
        -------
        TraceSet

        Raises
        ------
        ValueError, TypeError
            For shapes that do not match or a non-bool ``correct``.
        TraceValidationError
            For a bad value (e.g. a fractional token count), naming the record and field.
        """
        tok = np.asarray(tokens, dtype=np.float64)
        cor = np.asarray(correct)
        n = len(ids)
        if tok.ndim != 2 or tok.shape[0] != n:
            raise ValueError(f"tokens must have shape (N={n}, S), got {tok.shape}")
        if cor.shape != tok.shape:
            raise ValueError(f"correct must have shape {tok.shape}, got {cor.shape}")
        if cor.dtype != np.bool_:
            raise TypeError(f"correct must be a bool array, got dtype {cor.dtype}")
        if questions is not None and len(questions) != n:
            raise ValueError(f"questions must have length {n}, got {len(questions)}")
        if meta is not None and len(meta) != n:
            raise ValueError(f"meta must have length {n}, got {len(meta)}")
        present = ~np.isnan(tok)
        records: list[dict[str, Any]] = []
        for i in range(n):
            cols = np.flatnonzero(present[i])
            rec: dict[str, Any] = {"id": ids[i]}
            if questions is not None and questions[i] is not None:
                rec["question"] = questions[i]
            # Leave tokens as floats here so validate_record rejects fractions/inf clearly.
            rec["samples"] = [
                {"tokens": float(tok[i, j]), "correct": bool(cor[i, j])} for j in cols
            ]
            if meta is not None and meta[i] is not None:
                rec["meta"] = dict(meta[i])  # type: ignore[arg-type]
            records.append(rec)
        return cls(records)
