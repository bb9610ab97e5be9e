"""Experiments that evaluate the threshold predictor on the bundled real traces, cross-fitted.

Everything here scores a traced query only with models that never saw it: the proxy model is
trained without any traced question, and calibration lines, intervals and curve shapes come
from the other folds (k-fold over queries).

- :func:`compare_signals`: how well each candidate signal ranks the traced thresholds;
- :func:`crossfit_predictions` and :func:`interval_quality`: the default recipe's
  out-of-fold predictions and how good their medians and intervals are;
- :func:`crossfit_allocation`: CLEAR with predicted vs traced thresholds vs uniform;
- :func:`text_curve_predictor`: the ``predictor=`` adapter that
  :func:`shadowprice.evaluate.evaluate` uses with ``split="queries"``.

``tools/prediction_study.py`` prints the tables of ``docs/results.md`` ("Prediction from
text") from these functions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from ..allocate import allocate
from ..curves import GammaSCurve, ShiftedSurge, TabulatedCurve, UtilityCurve
from ..fit import SurgeFitter
from ..predict import ThresholdPredictor, expected_curves
from ..predict.data import PROXY_SETS, normalize_text, traced_thresholds
from ..predict.default import default_predictor, fit_proxy
from ..traces import REAL_TRACE_SET, TraceSet, load_traces
from .replay import bootstrap_ci, replay

__all__ = [
    "ALLOCATION_POLICIES",
    "compare_signals",
    "crossfit_allocation",
    "crossfit_predictions",
    "interval_quality",
    "text_curve_predictor",
]

IntArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]

#: Policies of :func:`crossfit_allocation`, in report order.
ALLOCATION_POLICIES: tuple[str, ...] = (
    "uniform",
    "clear-oracle",
    "clear-predicted",
    "clear-expected",
    "clear-no-text",
    "proportional",
)
# The allocate() policy behind each study policy (CLEAR variants not listed use "clear").
# Identical curves make closed-form CLEAR's abandonment all-or-nothing (every tau crosses
# T(price) at once), so the no-text baseline uses the market solver, which funds a subset.
_SOLVER = {"uniform": "uniform", "proportional": "proportional", "clear-no-text": "market"}


def _folds(n: int, k: int, seed: int) -> list[IntArray]:
    """``k`` sorted, disjoint index arrays covering ``range(n)`` (a seeded permutation)."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


def _calibrated_copy(
    model: ThresholdPredictor, texts: list[str], tau: FloatArray
) -> ThresholdPredictor:
    """A shallow copy of a fitted proxy model, calibrated on ``texts`` (the original is kept)."""
    m = copy.copy(model)
    m.metadata_ = dict(model.metadata_)
    return m.calibrate(texts, tau)


def crossfit_predictions(
    traces: TraceSet | str = REAL_TRACE_SET,
    folds: int = 5,
    seed: int = 0,
    coverage: float = 0.8,
    proxy: ThresholdPredictor | None = None,
) -> pd.DataFrame:
    """Out-of-fold predictions of the default recipe for every traced query.

    Parameters
    ----------
    traces : TraceSet or str
        Traces with question texts (default: the bundled real set).
    folds : int
        Folds over queries; each fold is predicted by a model calibrated on the others.
    seed : int
        Seeds the fold assignment.
    coverage : float
        Nominal coverage of the reported interval, in (0, 1).
    proxy : ThresholdPredictor, optional
        A fitted proxy model to calibrate per fold; default :func:`fit_proxy` trained without
        any traced question (~10 s).

    Returns
    -------
    DataFrame, one row per traced query (N rows)
        The :func:`~shadowprice.predict.data.traced_thresholds` columns plus ``median``,
        ``lower``, ``upper`` (tokens), ``sigma`` (log scale) and ``fold``. The calibration
        line and interval of each fold come from the other folds' solved queries only.
    """
    tr = traced_thresholds(traces)
    model = proxy if proxy is not None else fit_proxy(tr["question"].tolist())
    out = tr.copy()
    for col in ("median", "lower", "upper", "sigma"):
        out[col] = np.nan
    out["fold"] = -1
    for k, score in enumerate(_folds(len(tr), folds, seed)):
        fit = np.setdiff1d(np.arange(len(tr)), score)
        fit = fit[tr["solved"].to_numpy()[fit]]
        m = _calibrated_copy(model, tr["question"].iloc[fit].tolist(), tr["tau"].to_numpy()[fit])
        p = m.predict_distribution(tr["question"].iloc[score].tolist(), coverage=coverage)
        out.loc[score, ["median", "lower", "upper", "sigma"]] = np.c_[
            p.median, p.lower, p.upper, p.sigma
        ]
        out.loc[score, "fold"] = k
    return out


def compare_signals(
    traces: TraceSet | str = REAL_TRACE_SET,
    folds: int = 5,
    seed: int = 0,
    proxy_sets: Sequence[str] = PROXY_SETS,
    **params: Any,
) -> pd.DataFrame:
    """Spearman rank correlation of each candidate signal with the traced thresholds.

    Parameters
    ----------
    traces : TraceSet or str
        Traces with question texts (default: the bundled real set).
    folds : int
        Folds over queries wherever a signal is learnt from the traces themselves.
    seed : int
        Seeds the fold assignment.
    proxy_sets : sequence of str
        Bundled problem sets of the "all problem sets" proxy signal.
    **params
        Hyper-parameters of every :class:`ThresholdPredictor` trained here.

    Returns
    -------
    DataFrame, one row per signal
        ``signal`` (description), ``spearman`` (rho over the solved traced queries where the
        signal is defined), ``n`` (queries scored), ``from_text`` (usable at serving time,
        i.e. computed from the question text alone).
    """
    tr = traced_thresholds(traces)
    ok = tr["solved"].to_numpy()
    tau = tr["tau"].to_numpy()
    qs = tr["question"].tolist()
    rows: list[dict[str, object]] = []

    def add(name: str, score: FloatArray, from_text: bool) -> None:
        s = np.asarray(score, dtype=float)
        m = ok & np.isfinite(s)
        rho = float(stats.spearmanr(s[m], tau[m])[0])
        rows.append({"signal": name, "spearman": rho, "n": int(m.sum()), "from_text": from_text})

    add(
        "reference solution tokens (known only for benchmark problems)",
        tr["solution_tokens"].to_numpy(dtype=float, na_value=np.nan),
        False,
    )
    add(
        "MATH level (known only for benchmark problems)",
        tr["level"].to_numpy(dtype=float, na_value=np.nan),
        False,
    )
    add("question length in characters", np.array([len(q) for q in qs], float), True)
    # Direct: text -> traced tau, trained on the other folds (~75 texts).
    direct = np.full(len(tr), np.nan)
    for score in _folds(len(tr), folds, seed):
        fit = np.setdiff1d(np.arange(len(tr)), score)
        fit = fit[ok[fit]]
        m = ThresholdPredictor(**{"cv": min(5, fit.size), **params})
        m.fit([qs[i] for i in fit], tau[fit])
        direct[score] = m.predict_log([qs[i] for i in score])
    add("text -> traced tau (k-fold over traced queries)", direct, True)
    p_all = fit_proxy(qs, sets=proxy_sets, **params).predict_log(qs)
    add("text -> solution tokens, all problem sets (traced texts excluded)", p_all, True)
    p_math = fit_proxy(qs, sets=("math500",), **params).predict_log(qs)
    add("text -> solution tokens, MATH500 only (traced texts excluded)", p_math, True)
    p_lvl = fit_proxy(qs, sets=("math500",), target="level", **params).predict_log(qs)
    add("text -> MATH level, MATH500 (traced texts excluded)", p_lvl, True)
    # Stack the two proxy predictions with a line fitted on the other folds.
    stack = np.full(len(tr), np.nan)
    X = np.c_[np.ones(len(tr)), p_all, p_lvl]
    for score in _folds(len(tr), folds, seed):
        fit = np.setdiff1d(np.arange(len(tr)), score)
        fit = fit[ok[fit]]
        coef = np.linalg.lstsq(X[fit], np.log(tau[fit]), rcond=None)[0]
        stack[score] = X[score] @ coef
    add("stacked: text -> solution tokens + text -> level (line on other folds)", stack, True)
    return pd.DataFrame(rows)


def interval_quality(pred: pd.DataFrame) -> dict[str, float]:
    """How good cross-fitted predictions are on the solved queries.

    Parameters
    ----------
    pred : DataFrame
        Output of :func:`crossfit_predictions` (columns ``solved``, ``tau``, ``median``,
        ``lower``, ``upper``, ``sigma``).

    Returns
    -------
    dict
        ``spearman`` (predicted median vs tau), ``coverage`` (share of tau inside
        [lower, upper]), ``median_abs_log_error`` (natural log), ``sigma`` (median predictive
        log-sigma) and ``n`` (solved queries scored).
    """
    s = pred[pred["solved"]]
    tau = s["tau"].to_numpy()
    return {
        "spearman": float(stats.spearmanr(s["median"], tau)[0]),
        "coverage": float(np.mean((tau >= s["lower"]) & (tau <= s["upper"]))),
        "median_abs_log_error": float(np.median(np.abs(np.log(tau / s["median"])))),
        "sigma": float(s["sigma"].median()),
        "n": len(s),
    }


def _fold_curves(
    ts: TraceSet,
    idx: IntArray,
    pred: pd.DataFrame,
    oracle_fit: SurgeFitter,
    family: Literal["gamma", "surge"],
) -> dict[str, UtilityCurve]:
    """The curves each study policy prices for the scored fold ``idx`` (shape from the rest)."""
    sf = SurgeFitter().fit(ts.subset(np.setdiff1d(np.arange(ts.n), idx)))
    med = pred["median"].to_numpy()[idx]
    sig = pred["sigma"].to_numpy()[idx]
    # The solve rate is pooled (fit folds) for every policy, so the only per-query
    # information that differs between oracle and predicted is tau.
    p_pool = float(np.mean(sf.p_))

    def point(tau: FloatArray, f: SurgeFitter = sf, pp: float = p_pool) -> UtilityCurve:
        if family == "surge":
            return ShiftedSurge(tau, f.alpha_, f.beta_)
        return GammaSCurve(tau, f.beta_, pp)

    return {
        "uniform": point(med),
        "clear-oracle": point(oracle_fit.tau_[idx], oracle_fit, float(np.mean(oracle_fit.p_))),
        "clear-predicted": point(med),
        "clear-expected": expected_curves(
            med, sig, family, alpha=sf.alpha_, beta=sf.beta_, p=p_pool
        ),
        "proportional": point(med),
        # No per-query information: every query at the fit folds' median solved tau.
        "clear-no-text": point(np.full(idx.size, float(np.median(sf.tau_[sf.p_ > 0])))),
    }


def _allocation_rows(
    budgets: Sequence[float],
    acc: dict[tuple[str, float], FloatArray],
    aband: dict[tuple[str, float], float],
    n_boot: int,
    seed: int,
) -> list[dict[str, object]]:
    """One summary row per (budget, policy): accuracy, paired gain over uniform, gain kept."""
    rows: list[dict[str, object]] = []
    for b in budgets:
        base = acc[("uniform", b)]
        gain_or = acc[("clear-oracle", b)].mean() - base.mean()
        for p in ALLOCATION_POLICIES:
            a = acc[(p, b)]
            lo, hi = bootstrap_ci(a, n_boot, seed)
            dlo, dhi = bootstrap_ci(a - base, n_boot, seed)
            rows.append(
                {
                    "budget": b,
                    "policy": p,
                    "accuracy": float(a.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "vs_uniform": float((a - base).mean()),
                    "vs_uniform_ci_low": dlo,
                    "vs_uniform_ci_high": dhi,
                    "abandoned": aband[(p, b)],
                    "gain_kept": float((a.mean() - base.mean()) / gain_or)
                    if gain_or > 1e-9
                    else np.nan,
                }
            )
    return rows


def crossfit_allocation(
    budgets: Sequence[float] = (100, 200, 300, 500, 700, 1000, 1500),
    traces: TraceSet | str = REAL_TRACE_SET,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    family: Literal["gamma", "surge"] = "gamma",
    predictions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Accuracy of CLEAR with predicted vs traced thresholds vs uniform, cross-fitted.

    Each fold's queries get ``budget x fold size`` tokens. ``family="gamma"`` prices success
    probabilities GammaSCurve(tau, beta, p) -- the surge fit's own length shape as a CDF
    (:meth:`SurgeFitter.as_probability`) with the pooled solve rate; ``"surge"`` prices the
    paper's latent utility, which falls past its peak tau + 1/beta (with the fitted beta,
    1/beta is ~16 tokens on the bundled traces) and allocates worse on them. Policies
    (:data:`ALLOCATION_POLICIES`):

    - ``uniform``: B / N each;
    - ``clear-oracle``: CLEAR with every query's own traced tau (hindsight: the ceiling for
      tau prediction), shape fitted on all traces;
    - ``clear-predicted``: CLEAR at the predicted median tau (shape fitted on the other folds);
    - ``clear-expected``: CLEAR on the expected curve under the predictive distribution;
    - ``clear-no-text``: CLEAR with every query at the pool's median tau (no per-query
      information: what CLEAR gains from scarcity alone, by funding fewer queries fully);
    - ``proportional``: caps proportional to the predicted tau.

    Parameters
    ----------
    budgets : sequence of float
        Average tokens per query.
    traces : TraceSet or str
        Traces with question texts (default: the bundled real set).
    folds, seed : int
        Folds over queries and their seed (as :func:`crossfit_predictions`).
    n_boot : int
        Bootstrap resamples over queries for the intervals.
    family : 'gamma' or 'surge'
        Curve family every CLEAR variant prices.
    predictions : DataFrame, optional
        Out-of-fold predictions with the columns of :func:`crossfit_predictions` and the same
        ``folds``; default: :func:`crossfit_predictions` with ``folds`` and ``seed``.

    Returns
    -------
    DataFrame, one row per (budget, policy)
        ``budget``, ``policy``, ``accuracy`` (pass@1 within the cap, by replay on the traced
        samples) with a 95 % bootstrap interval ``ci_low``/``ci_high``, ``vs_uniform`` with a
        paired interval, ``abandoned`` (share of queries given 0 tokens) and ``gain_kept`` =
        (policy - uniform) / (oracle - uniform), NaN where the oracle gains nothing.
    """
    ts = load_traces(traces) if isinstance(traces, str) else traces
    pred = crossfit_predictions(ts, folds, seed) if predictions is None else predictions
    oracle_fit = SurgeFitter().fit(ts)
    acc = {(p, b): np.zeros(ts.n) for p in ALLOCATION_POLICIES for b in budgets}
    aband = {(p, b): 0.0 for p in ALLOCATION_POLICIES for b in budgets}
    for k in range(folds):
        idx = np.flatnonzero(pred["fold"].to_numpy() == k)
        curves = _fold_curves(ts, idx, pred, oracle_fit, family)
        score = ts.subset(idx)
        for b in budgets:
            total = max(1, round(b * idx.size))
            for p in ALLOCATION_POLICIES:
                c = curves[p]
                pol = _SOLVER.get(p, "clear")
                al = (
                    allocate(c, total, pol, grid=c.grid)
                    if isinstance(c, TabulatedCurve)
                    else allocate(c, total, pol)
                )
                r = replay(al, score, n_boot=0)
                acc[(p, b)][idx] = r.per_query
                aband[(p, b)] += r.abandoned * idx.size / ts.n
    return pd.DataFrame(_allocation_rows(budgets, acc, aband, n_boot, seed))


def _proxy(
    excluded: frozenset[str], texts: list[str], proxy_sets: Sequence[str]
) -> ThresholdPredictor:
    """The text -> solution-length model trained without ``texts``.

    The bundled default predictor's regression was trained on exactly the default problem
    sets minus the bundled real set's questions; when those are the texts to leave out, it
    is that model (its calibration is replaced per fold), which saves a training.
    """
    if tuple(proxy_sets) == tuple(PROXY_SETS):
        bundled = frozenset(normalize_text(str(q)) for q in load_traces(REAL_TRACE_SET).questions())
        if excluded == bundled:
            return default_predictor()
    return fit_proxy(texts, sets=proxy_sets)


def text_curve_predictor(
    uncertainty: bool = True, nodes: int = 32, proxy_sets: Sequence[str] = PROXY_SETS
) -> Callable[[TraceSet, TraceSet], UtilityCurve]:
    """A ``predictor=`` for :func:`shadowprice.evaluate.evaluate` with ``split="queries"``.

    Parameters
    ----------
    uncertainty : bool
        Price the expected curve under the predictive distribution (a TabulatedCurve) rather
        than the curve at the predicted median.
    nodes : int
        Quadrature nodes of the expected curve.
    proxy_sets : sequence of str
        Bundled problem sets the text model is trained on.

    Returns
    -------
    callable (fit traces, score traces) -> UtilityCurve
        Trains the text model on ``proxy_sets`` minus every problem whose text matches a
        scored or fitted query, calibrates it on the fit traces' thresholds, and returns
        probability curves for the N scored queries: GammaSCurve (the surge's own length
        shape) at the predicted tau, with beta and the solve rate fitted on the fit traces.
    """

    # The proxy model leaves out every fitted and scored text. Across the folds of one trace
    # set that is the same set of texts, so it is trained once and calibrated per fold.
    proxies: dict[frozenset[str], ThresholdPredictor] = {}

    def predict(fit: TraceSet, score: TraceSet) -> UtilityCurve:
        tr = traced_thresholds(fit)
        sq = [str(q) for q in score.questions()]
        excluded = frozenset(normalize_text(t) for t in [*tr["question"], *sq])
        if excluded not in proxies:
            proxies[excluded] = _proxy(excluded, list(tr["question"]) + sq, proxy_sets)
        ok = tr["solved"].to_numpy()
        model = _calibrated_copy(
            proxies[excluded], tr.loc[ok, "question"].tolist(), tr.loc[ok, "tau"].to_numpy()
        )
        sf = SurgeFitter().fit(fit)
        p = float(np.clip(np.mean(sf.p_), 0.0, 1.0))
        pr = model.predict_distribution(sq)
        if not uncertainty:
            return GammaSCurve(pr.median, sf.beta_, p)
        return expected_curves(pr.median, pr.sigma, "gamma", beta=sf.beta_, p=p, nodes=nodes)

    return predict
