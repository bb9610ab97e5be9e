"""Training sets for the threshold predictor, built from bundled data only.

Two kinds of real signal are bundled:

- **Traced thresholds** (few, exact): the 100 MATH problems of the bundled real trace set
  (:data:`shadowprice.traces.REAL_TRACE_SET`) with 8 samples each; tau = the shortest correct
  length (:class:`~shadowprice.fit.SurgeFitter`).
- **Proxy targets** (plentiful): ~10^4 problems with a reference solution (GSM8K train/test,
  MATH500, OlympiadBench, Minerva, AIME24): the solution's token length, and MATH500's level.

No peeking: callers pass the texts they will score as ``exclude``, and every proxy problem
whose normalised text (:func:`normalize_text`) matches one is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

from ..fit import SurgeFitter
from ..traces import REAL_TRACE_SET, TraceSet, load_problems, load_traces

__all__ = ["PROXY_SETS", "normalize_text", "proxy_problems", "traced_thresholds"]

#: Bundled problem sets with reference-solution lengths (amc23 has none).
PROXY_SETS: tuple[str, ...] = (
    "gsm8k-train",
    "gsm8k",
    "math500",
    "olympiadbench",
    "minerva",
    "aime24",
)
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Key for matching the same problem across data sets.

    Parameters
    ----------
    text : str
        A question.

    Returns
    -------
    str
        The text with whitespace runs collapsed to one space, stripped and lower-cased.
    """
    return _WS.sub(" ", text).strip().lower()


def traced_thresholds(traces: TraceSet | str = REAL_TRACE_SET) -> pd.DataFrame:
    """Per traced query: its question and its emergence threshold.

    Parameters
    ----------
    traces : TraceSet or str
        A trace set whose queries all have question texts, or the name of a bundled one.

    Returns
    -------
    DataFrame, one row per query (N rows)
        ``id``; ``question`` (str); ``tau`` (tokens: the shortest correct sample, the paper's
        emergence point); ``solved`` (bool); ``level`` and ``solution_tokens`` (Float64, from
        the traces' metadata, NA where absent). Unsolved queries get SurgeFitter's stand-in
        (``UNREACHABLE_TAU``) and ``solved = False``: they are scored but never used as
        training targets (their tau is not a measurement).

    Raises
    ------
    ValueError
        If a query has no question text.
    """
    ts = load_traces(traces) if isinstance(traces, str) else traces
    f = SurgeFitter().fit(ts)
    q = ts.questions()
    if any(x is None or not str(x).strip() for x in q):
        raise ValueError("every traced query needs its question text to train a text model")
    return pd.DataFrame(
        {
            "id": ts.ids,
            "question": [str(x) for x in q],
            "tau": f.tau_,
            "solved": f.p_ > 0,
            "level": pd.array(ts.meta("level"), dtype="Float64"),
            "solution_tokens": pd.array(ts.meta("solution_tokens"), dtype="Float64"),
        }
    )


def proxy_problems(sets: Sequence[str] = PROXY_SETS, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """Bundled problems with a reference solution length, minus the ``exclude``d texts.

    Parameters
    ----------
    sets : sequence of str
        Names of bundled problem sets (:func:`shadowprice.traces.load_problems`).
    exclude : iterable of str
        Question texts to leave out (matched after :func:`normalize_text`), typically every
        question that will be scored.

    Returns
    -------
    DataFrame, one row per kept problem
        ``question`` (str), ``solution_tokens`` (float, > 0), ``level`` (Float64, MATH500
        only), ``set`` (the problem set's name).
    """
    drop = {normalize_text(t) for t in exclude}
    parts = []
    for name in sets:
        d = load_problems(name)
        d = d[d["solution_tokens"].notna() & (d["solution_tokens"].astype(float) > 0)]
        parts.append(
            pd.DataFrame(
                {
                    "question": d["question"].astype(str),
                    "solution_tokens": d["solution_tokens"].astype(float),
                    "level": d["level"].astype("Float64"),
                    "set": name,
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    keep = ~out["question"].map(normalize_text).isin(drop)
    return out[keep].reset_index(drop=True)
