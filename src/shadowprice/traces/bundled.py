"""Real data shipped inside the package (built by ``tools/build_data.py``).

See ``shadowprice/data/README.md`` for sources, licenses and derivations. Files are found
with :mod:`importlib.resources`, so this works from a wheel or a source checkout alike.
"""

from __future__ import annotations

import csv
import gzip
import json
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import pandas as pd

from .schema import TraceSet, TraceValidationError, _check_unique, validate_record

__all__ = [
    "PROBLEM_COLUMNS",
    "REAL_TRACE_SET",
    "list_bundled",
    "load_paper_results",
    "load_problems",
    "load_traces",
]

PROBLEM_COLUMNS = ("id", "question", "answer", "solution_tokens", "level", "subject", "source")


#: The bundled real trace set (100 MATH problems x 8 Qwen2.5-Math-Instruct samples): the
#: default data of the demo, the bench and the threshold predictor's calibration.
REAL_TRACE_SET = "qwen25-math-math100"


def _data_dir() -> Traversable:
    return files("shadowprice") / "data"


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    with (_data_dir() / "manifest.json").open("r", encoding="utf-8") as fh:
        return json.load(fh)


def _canon(name: str) -> str:
    # Accept "gsm8k_train" for "gsm8k-train" and any case.
    return name.strip().lower().replace("_", "-")


def _lookup(kind: str, name: str) -> dict[str, Any]:
    table: dict[str, Any] = _manifest()[kind]
    key = _canon(name)
    if key == "minerva-math":
        key = "minerva"
    if key not in table:
        raise KeyError(f"no bundled {kind[:-1]} set {name!r}; available: {sorted(table)}")
    return table[key]


def _read_lines(rel: str) -> list[tuple[int, Any]]:
    with (_data_dir() / rel).open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        return [(ln, json.loads(t)) for ln, t in enumerate(fh, start=1) if t.strip()]


def list_bundled() -> dict[str, str]:
    """What data ship with the package.

    Returns
    -------
    dict of str -> str
        Bundled set name -> one-line description (trace sets first, then problem sets).
    """
    m = _manifest()
    out = {name: "trace set: " + info["description"] for name, info in m["traces"].items()}
    out.update(
        {name: "problem set: " + info["description"] for name, info in m["problems"].items()}
    )
    return out


def load_traces(name: str) -> TraceSet:
    """Load a bundled trace set, e.g. ``"qwen25-math-math100"`` (100 queries x 8 samples).

    ``tokens`` are response lengths in DeepSeek-BPE tokens (a proxy for the generating
    model's tokenizer); per-sample extras ``pred`` and ``pred_score`` and per-query
    ``meta`` (``level``, ``source``, ``solution_tokens``) are kept.

    Parameters
    ----------
    name : str
        A bundled trace set (see :func:`list_bundled`), e.g. :data:`REAL_TRACE_SET`.

    Returns
    -------
    TraceSet

    Raises
    ------
    KeyError
        For a set that is not bundled, naming those that are.
    """
    info = _lookup("traces", name)
    rel = info["file"]
    path = f"shadowprice/data/{rel}"
    rows = _read_lines(rel)
    records = [validate_record(obj, line=ln, path=path) for ln, obj in rows]
    if not records:
        raise TraceValidationError("bundled file holds no records", path=path)
    _check_unique(records, [ln for ln, _ in rows], path)
    return TraceSet._trusted(records)


def load_problems(name: str) -> pd.DataFrame:
    """Load a bundled problem set as a DataFrame with one row per problem.

    Parameters
    ----------
    name : str
        ``math500``, ``gsm8k``, ``gsm8k-train``, ``aime24``, ``amc23``, ``minerva`` or
        ``olympiadbench`` (case and ``_``/``-`` do not matter).

    Returns
    -------
    DataFrame
        Columns (:data:`PROBLEM_COLUMNS`): ``id`` (string, unique), ``question`` (string),
        ``answer`` (string, gold), ``solution_tokens`` (Int64, DeepSeek-BPE tokens of the
        reference solution; <NA> where none), ``level`` (Int64, MATH difficulty 1-5; <NA>
        elsewhere), ``subject`` (string; <NA> where none), ``source`` (string, benchmark).
        Text columns use pandas' nullable ``string`` dtype.

    Raises
    ------
    KeyError
        For a set that is not bundled, naming those that are.
    """
    info = _lookup("problems", name)
    rows = [obj for _, obj in _read_lines(info["file"])]
    df = pd.DataFrame.from_records(rows, columns=list(PROBLEM_COLUMNS))
    # Fixed nullable dtypes, so a column's dtype does not depend on whether it has values.
    for col in ("solution_tokens", "level"):
        df[col] = df[col].astype("Int64")
    for col in ("id", "question", "answer", "subject", "source"):
        df[col] = df[col].astype("string")
    return df


def load_paper_results() -> pd.DataFrame:
    """The CLEAR paper's published results figure, digitised (``data/paper/README.md``).

    Figures read off the paper's 4-panel results figure by eye (about +-0.5 point;
    Qwen2.5-Math-7B on the paper's own 500-query streams): facts about a published figure,
    not measurements of this project.

    Returns
    -------
    DataFrame
        60 rows, one per (stream, budget). Columns: ``stream`` (Balanced, MostlyEasy,
        MostlyHard, UShaped), ``budget`` (tokens per query, float), ``clear`` and ``uniform``
        (accuracy, %), ``abandoned`` (CLEAR's abandonment rate, %).
    """
    with (_data_dir() / "paper" / "clear_results_digitized.csv").open("r", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return pd.DataFrame(
        {
            "stream": [r["stream"] for r in rows],
            "budget": [float(r["budget_per_sample"]) for r in rows],
            "clear": [float(r["daba_lambert_acc_pct"]) for r in rows],
            "uniform": [float(r["uniform_acc_pct"]) for r in rows],
            "abandoned": [float(r["abandonment_rate_pct"]) for r in rows],
        }
    )
