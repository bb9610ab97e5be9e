"""The default threshold predictor: how it is trained, where it ships, how any model is loaded.

The bundled model (``shadowprice/data/predictor``, written by ``tools/build_predictor.py``)
is :func:`fit_default`: text -> reference-solution length on all bundled problem sets
(:func:`fit_proxy`), then a calibration line to the traced thresholds of the bundled real
trace set. :func:`default_predictor` loads it (or retrains it when the file cannot be
loaded here, with a warning saying why) and :func:`load_predictor` loads it or any model a
user saved.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from ..traces import REAL_TRACE_SET, TraceSet
from .data import PROXY_SETS, normalize_text, proxy_problems, traced_thresholds
from .threshold import ThresholdPredictor

__all__ = ["default_predictor", "fit_default", "fit_proxy", "load_predictor"]

# What ThresholdPredictor.load raises for a file it cannot use: missing or
# incomplete (OSError, EOFError), another format version or type (ValueError, TypeError), or
# a pickle written by library versions this environment cannot unpickle.
_LOAD_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    pickle.UnpicklingError,
)


def fit_proxy(
    exclude: Iterable[str] = (),
    sets: Sequence[str] = PROXY_SETS,
    target: Literal["solution_tokens", "level"] = "solution_tokens",
    **params: Any,
) -> ThresholdPredictor:
    """Text -> proxy target on the bundled problem sets.

    Parameters
    ----------
    exclude : iterable of str
        Question texts to leave out of training (see :func:`proxy_problems`).
    sets : sequence of str
        Bundled problem sets to train on.
    target : 'solution_tokens' or 'level'
        Reference-solution length in tokens, or the MATH level (problems without one are
        dropped).
    **params
        Hyper-parameters of :class:`ThresholdPredictor`.

    Returns
    -------
    ThresholdPredictor
        Fitted, uncalibrated: its output is on the proxy's scale.
    """
    d = proxy_problems(sets, exclude)
    if target == "level":
        d = d[d["level"].notna()]
    y = d[target].astype(float).to_numpy()
    return ThresholdPredictor(**params).fit(
        d["question"].tolist(),
        y,
        description={
            "target": target,
            "sets": list(sets),
            "n": len(d),
            "excluded_texts": len(set(map(normalize_text, exclude))),
        },
    )


def fit_default(
    traces: TraceSet | str = REAL_TRACE_SET, exclude: Iterable[str] = (), **params: Any
) -> ThresholdPredictor:
    """The default predictor: proxy fit on all problem sets, calibrated on traced thresholds.

    Parameters
    ----------
    traces : TraceSet or str
        Traces whose solved queries give the calibration thresholds (default: the bundled
        real set).
    exclude : iterable of str
        Further question texts to keep out of both proxy training and calibration.
    **params
        Hyper-parameters of :class:`ThresholdPredictor`.

    Returns
    -------
    ThresholdPredictor
        Fitted and calibrated; its predictions are thresholds in tokens. Problems whose text
        matches a traced query or ``exclude`` are left out of proxy training. Takes ~10 s.
    """
    tr = traced_thresholds(traces)
    ex = {normalize_text(t) for t in exclude}
    model = fit_proxy(list(tr["question"]) + list(exclude), **params)
    keep = tr["solved"] & ~tr["question"].map(normalize_text).isin(ex)
    return model.calibrate(
        tr.loc[keep, "question"].tolist(),
        tr.loc[keep, "tau"].to_numpy(),
        description={
            "traces": str(traces) if isinstance(traces, str) else "TraceSet",
            "n": int(keep.sum()),
            "threshold": "shortest correct sample (SurgeFitter)",
        },
    )


def default_predictor() -> ThresholdPredictor:
    """The bundled default model.

    Returns
    -------
    ThresholdPredictor
        Loaded from ``shadowprice/data/predictor`` (built by ``tools/build_predictor.py``).
        If that file cannot be loaded here (missing, another format version, or pickled by
        library versions this environment cannot read), a ``RuntimeWarning`` says why and
        :func:`fit_default` trains the same model now (~10 s).
    """
    from importlib.resources import as_file, files

    res = files("shadowprice") / "data" / "predictor"
    try:
        with as_file(res) as d:
            return ThresholdPredictor.load(d)
    except _LOAD_ERRORS as exc:
        warnings.warn(
            f"the bundled threshold predictor cannot be loaded here "
            f"({type(exc).__name__}: {exc}); training it from bundled data instead (~10 s). "
            f"Rebuild it with tools/build_predictor.py to skip this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return fit_default()


def load_predictor(path: str | Path) -> ThresholdPredictor:
    """Load a saved threshold predictor, or the bundled default.

    Parameters
    ----------
    path : str or Path
        A directory written by :meth:`ThresholdPredictor.save` (``shadowprice predictor
        fit``), or ``"default"`` for :func:`default_predictor`.

    Returns
    -------
    ThresholdPredictor

    Raises
    ------
    FileNotFoundError
        If ``path`` is neither ``"default"`` nor a directory.
    ValueError, TypeError
        If the directory holds another format version or another type of object.
    """
    if str(path) == "default":
        return default_predictor()
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"{path}: no such predictor directory (train one with "
            f"`shadowprice predictor fit`, or use 'default')"
        )
    return ThresholdPredictor.load(path)
