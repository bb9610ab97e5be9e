"""Training data for the threshold predictor, the signal comparison, cross-fitted evaluation.

Two kinds of real signal are bundled:

- **Traced thresholds** (few, exact): the 100 MATH problems of ``qwen25-math-math100`` with 8
  samples each; tau = the shortest correct length (:class:`~shadowprice.fit.SurgeFitter`).
- **Proxy targets** (plentiful): ~10^4 problems with a reference solution (GSM8K train/test,
  MATH500, OlympiadBench, Minerva, AIME24): the solution's token length, and MATH500's level.

:func:`compare_signals` measures, cross-fitted, how well each signal ranks the traced
thresholds; :func:`fit_default` trains on what works (text -> reference-solution length on
all problem sets, then a calibration line to traced thresholds). No peeking: every problem
whose text matches a scored traced query is dropped from proxy training, and calibration /
direct training use only the other folds.

Run ``python -m shadowprice.predict.training`` for the tables in ``docs/results_predict.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from ..allocate import allocate
from ..curves import GammaSCurve, ShiftedSurge, UtilityCurve
from ..fit import SurgeFitter
from ..traces import TraceSet, load_problems, load_traces
from .threshold import ThresholdPredictor, expected_curves

__all__ = [
    "DEFAULT_TRACES",
    "PROXY_SETS",
    "compare_signals",
    "crossfit_allocation",
    "crossfit_predictions",
    "default_predictor",
    "fit_default",
    "fit_proxy",
    "normalize_text",
    "proxy_problems",
    "text_curve_predictor",
    "traced_thresholds",
]

DEFAULT_TRACES = "qwen25-math-math100"
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
    """Key for matching the same problem across data sets: whitespace collapsed, lower case."""
    return _WS.sub(" ", text).strip().lower()


def traced_thresholds(traces: TraceSet | str = DEFAULT_TRACES) -> pd.DataFrame:
    """Per traced query: id, question, tau (tokens), solved, level, solution_tokens.

    tau is the shortest correct sample (the paper's emergence point); unsolved queries get
    SurgeFitter's stand-in (``UNREACHABLE_TAU``) and ``solved = False``: they are scored but
    never used as training targets (their tau is not a measurement).
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
    """Bundled problems with a reference solution length, minus ``exclude``d question texts.

    Returns columns question, solution_tokens (float), level (Float64, MATH500 only), set.
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


def fit_proxy(
    exclude: Iterable[str] = (),
    sets: Sequence[str] = PROXY_SETS,
    target: Literal["solution_tokens", "level"] = "solution_tokens",
    **params: object,
) -> ThresholdPredictor:
    """Text -> proxy target (reference solution tokens, or MATH level) on bundled problems."""
    d = proxy_problems(sets, exclude)
    if target == "level":
        d = d[d["level"].notna()]
    y = d[target].astype(float).to_numpy()
    return ThresholdPredictor(**params).fit(  # type: ignore[arg-type]
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
    traces: TraceSet | str = DEFAULT_TRACES, exclude: Iterable[str] = (), **params: object
) -> ThresholdPredictor:
    """The default predictor: proxy fit on all problem sets, calibrated on traced thresholds.

    Problems whose text matches a traced query or ``exclude`` are left out of proxy training;
    calibration uses the solved traced queries (minus ``exclude``). Takes ~10 s.
    """
    tr = traced_thresholds(traces)
    ex = {normalize_text(t) for t in exclude}
    model = fit_proxy(list(tr["question"]) + list(exclude), **params)  # type: ignore[arg-type]
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
    """The bundled default model (``shadowprice/data/predictor``, built by
    ``tools/build_predictor.py``), or :func:`fit_default` trained now (~10 s) if it is
    missing or was saved by an incompatible version."""
    from importlib.resources import as_file, files

    res = files("shadowprice") / "data" / "predictor"
    try:
        with as_file(res) as d:
            return ThresholdPredictor.load(d)
    except Exception:
        return fit_default()


# -- cross-fitted predictions and signal comparison ---------------------------------------------
def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


def crossfit_predictions(
    traces: TraceSet | str = DEFAULT_TRACES,
    folds: int = 5,
    seed: int = 0,
    coverage: float = 0.8,
    proxy: ThresholdPredictor | None = None,
) -> pd.DataFrame:
    """Out-of-fold predictions of the default predictor for every traced query.

    The proxy model never sees a traced question (all are excluded from its training); the
    calibration line and interval are fitted on the other folds' solved queries only.

    Returns the :func:`traced_thresholds` frame plus median, lower, upper, sigma, fold.
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
        m = _clone_calibrated(model, tr["question"].iloc[fit].tolist(), tr["tau"].to_numpy()[fit])
        p = m.predict(tr["question"].iloc[score].tolist(), coverage=coverage)
        out.loc[score, ["median", "lower", "upper", "sigma"]] = np.c_[
            p.median, p.lower, p.upper, p.sigma
        ]
        out.loc[score, "fold"] = k
    return out


def _clone_calibrated(
    model: ThresholdPredictor, texts: list[str], tau: np.ndarray
) -> ThresholdPredictor:
    import copy

    m = copy.copy(model)
    m.metadata_ = dict(model.metadata_)
    return m.calibrate(texts, tau)


def compare_signals(
    traces: TraceSet | str = DEFAULT_TRACES, folds: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Spearman rank correlation of each candidate signal with the traced thresholds.

    Scored over the solved traced queries, cross-fitted (k-fold over queries) wherever the
    signal is learnt. Columns: signal, spearman, n, from_text (usable at serving time).
    """
    tr = traced_thresholds(traces)
    ok = tr["solved"].to_numpy()
    tau = tr["tau"].to_numpy()
    qs = tr["question"].tolist()
    rows: list[dict[str, object]] = []

    def add(name: str, score: np.ndarray, from_text: bool) -> None:
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
        m = ThresholdPredictor(cv=min(5, fit.size)).fit([qs[i] for i in fit], tau[fit])
        direct[score] = m.predict_log([qs[i] for i in score])
    add("text -> traced tau (k-fold over traced queries)", direct, True)
    sol_all = fit_proxy(qs)
    p_all = sol_all.predict_log(qs)
    add("text -> solution tokens, all problem sets (traced texts excluded)", p_all, True)
    p_math = fit_proxy(qs, sets=("math500",)).predict_log(qs)
    add("text -> solution tokens, MATH500 only (traced texts excluded)", p_math, True)
    p_lvl = fit_proxy(qs, sets=("math500",), target="level").predict_log(qs)
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
    """Spearman, coverage of [lower, upper] and median |log error| on solved queries."""
    s = pred[pred["solved"]]
    tau = s["tau"].to_numpy()
    return {
        "spearman": float(stats.spearmanr(s["median"], tau)[0]),
        "coverage": float(np.mean((tau >= s["lower"]) & (tau <= s["upper"]))),
        "median_abs_log_error": float(np.median(np.abs(np.log(tau / s["median"])))),
        "sigma": float(s["sigma"].median()),
        "n": len(s),
    }


# -- allocation with predicted thresholds ------------------------------------------------------
def crossfit_allocation(
    budgets: Sequence[float] = (100, 200, 300, 500, 700, 1000, 1500),
    traces: TraceSet | str = DEFAULT_TRACES,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    family: Literal["gamma", "surge"] = "gamma",
) -> pd.DataFrame:
    """Accuracy of CLEAR with predicted vs oracle thresholds vs uniform, cross-fitted.

    Each fold's queries get ``budget x fold size`` tokens. ``family="gamma"`` (default) prices
    success probabilities GammaSCurve(tau, beta, p) -- the surge fit's own length shape as a
    CDF (:meth:`SurgeFitter.as_probability`) with the pooled solve rate; ``"surge"`` prices the
    paper's latent utility, which falls past its peak tau + 1/beta (with the fitted beta,
    1/beta is ~16 tokens on these traces) and allocates worse on them. Policies:

    - ``uniform``: B / N each;
    - ``clear-oracle``: CLEAR with every query's own traced tau (hindsight: the ceiling for
      tau prediction), shape fitted on all traces;
    - ``clear-predicted``: CLEAR at the predicted median tau (shape fitted on the other folds);
    - ``clear-expected``: CLEAR on the expected curve under the predictive distribution;
    - ``clear-no-text``: CLEAR with every query at the pool's median tau (no per-query
      information: what CLEAR gains from scarcity alone, by funding fewer queries fully);
    - ``proportional``: caps proportional to the predicted tau.

    Scored by replay (pass@1 within the cap) on the traced samples. Returns budget, policy,
    accuracy with a 95 % bootstrap interval, vs_uniform with a paired interval, abandoned,
    and gain_kept = (policy - uniform) / (oracle - uniform).
    """
    from ..evaluate.replay import bootstrap_ci, replay

    ts = load_traces(traces) if isinstance(traces, str) else traces
    pred = crossfit_predictions(ts, folds, seed)
    oracle_fit = SurgeFitter().fit(ts)
    fold_ids = [np.flatnonzero(pred["fold"].to_numpy() == k) for k in range(folds)]
    policies = (
        "uniform",
        "clear-oracle",
        "clear-predicted",
        "clear-expected",
        "clear-no-text",
        "proportional",
    )
    acc = {(p, b): np.zeros(ts.n) for p in policies for b in budgets}
    aband = {(p, b): 0.0 for p in policies for b in budgets}
    for idx in fold_ids:
        fit_idx = np.setdiff1d(np.arange(ts.n), idx)
        sf = SurgeFitter().fit(ts.subset(fit_idx))
        score = ts.subset(idx)
        med = pred["median"].to_numpy()[idx]
        sig = pred["sigma"].to_numpy()[idx]
        # The solve rate is pooled (fit folds) for every policy, so the only per-query
        # information that differs between oracle and predicted is tau.
        p_pool = float(np.mean(sf.p_))

        def point(tau: np.ndarray, f: SurgeFitter = sf, pp: float = p_pool) -> UtilityCurve:
            if family == "surge":
                return ShiftedSurge(tau, f.alpha_, f.beta_)
            return GammaSCurve(tau, f.beta_, pp)

        curves: dict[str, UtilityCurve] = {
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
        for b in budgets:
            total = max(1, round(b * idx.size))
            for p in policies:
                c = curves[p]
                # Identical curves make closed-form CLEAR's abandonment all-or-nothing (every
                # tau crosses T(price) at once), so the no-text baseline uses the market
                # solver, which funds a subset.
                pol = {
                    "uniform": "uniform",
                    "proportional": "proportional",
                    "clear-no-text": "market",
                }.get(p, "clear")
                grid = getattr(c, "grid", None)
                al = (
                    allocate(c, total, pol, grid=grid)
                    if grid is not None
                    else allocate(c, total, pol)
                )
                r = replay(al, score, n_boot=0)
                acc[(p, b)][idx] = r.per_query
                aband[(p, b)] += r.abandoned * idx.size / ts.n
    rows = []
    for b in budgets:
        base = acc[("uniform", b)]
        gain_or = acc[("clear-oracle", b)].mean() - base.mean()
        for p in policies:
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
    return pd.DataFrame(rows)


# -- adapter for shadowprice.evaluate (split="queries") -------------------------------------------
def text_curve_predictor(
    uncertainty: bool = True, nodes: int = 32, proxy_sets: Sequence[str] = PROXY_SETS
) -> Callable[[TraceSet, TraceSet], UtilityCurve]:
    """A ``predictor=`` for :func:`shadowprice.evaluate.evaluate` with ``split="queries"``.

    Given (fit traces, score traces) it trains the text model on the proxy sets minus every
    problem whose text matches a scored or fitted query, calibrates it on the fit traces'
    thresholds, and returns probability curves for the scored queries: GammaSCurve (the
    surge's own length shape) at the predicted tau with beta and the solve rate fitted on the
    fit traces; with ``uncertainty`` the expected curve under the predictive distribution
    (a TabulatedCurve).
    """

    def predict(fit: TraceSet, score: TraceSet) -> UtilityCurve:
        tr = traced_thresholds(fit)
        sq = [str(q) for q in score.questions()]
        model = fit_proxy(list(tr["question"]) + sq, sets=proxy_sets)
        ok = tr["solved"].to_numpy()
        model.calibrate(tr.loc[ok, "question"].tolist(), tr.loc[ok, "tau"].to_numpy())
        sf = SurgeFitter().fit(fit)
        p = float(np.clip(np.mean(sf.p_), 0.0, 1.0))
        pr = model.predict(sq)
        if not uncertainty:
            return GammaSCurve(pr.median, sf.beta_, p)
        return expected_curves(pr.median, pr.sigma, "gamma", beta=sf.beta_, p=p, nodes=nodes)

    return predict


def main() -> None:  # pragma: no cover - report generator
    pd.set_option("display.width", 160)
    print("## signals (Spearman with traced tau, solved queries, cross-fitted)")
    print(compare_signals().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    pred = crossfit_predictions()
    print("\n## default predictor, cross-fitted on traced queries")
    for k, v in interval_quality(pred).items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    print("\n## allocation, cross-fitted")
    print(crossfit_allocation().to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":  # pragma: no cover
    main()
