"""Predict each query's emergence threshold tau from its text, with calibrated uncertainty.

The model works on log tokens: thresholds vary multiplicatively (a 100-token and a 1000-token
problem are "one decade" apart), so errors are relative and the predictive distribution is
log-normal.

- :class:`ThresholdPredictor` is an estimator: ``fit(texts, targets)`` learns a Ridge
  regression of log targets on sparse text features (:func:`make_text_features`);
  ``calibrate(texts, thresholds)`` optionally maps its output to real thresholds with a
  two-parameter line in log space (train on a plentiful proxy target such as the reference
  solution's length, calibrate on the few queries whose thresholds were traced).
- Uncertainty is split-conformal in spirit: out-of-fold residuals (k-fold over the training or
  calibration texts) give the interval quantiles directly, so an 80 % interval covers about
  80 % of held-out queries from the same distribution; ``sigma`` is the log-normal width that
  reproduces that interval.
- :meth:`ThresholdPredictor.predict_curves` turns a prediction into utility curves: the point
  estimate's curve, or the *expected* curve E_tau[U(b; tau)] under the predictive distribution
  (:func:`expected_curves`), which is what the allocator should price when tau is uncertain.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse, stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from ..curves import GammaSCurve, ShiftedSurge, TabulatedCurve, UtilityCurve
from .encoders import Encoder, EncoderFeatures
from .features import check_texts, make_text_features

FloatArray = NDArray[np.float64]

__all__ = [
    "FORMAT_VERSION",
    "Prediction",
    "ThresholdPredictor",
    "default_curve_grid",
    "expected_curves",
]

#: Bumped when the saved layout changes; :meth:`ThresholdPredictor.load` refuses others.
FORMAT_VERSION = 1
_MODEL_FILE = "model.joblib"
_META_FILE = "metadata.json"

Family = Literal["surge", "gamma"]


@dataclass(frozen=True)
class Prediction:
    """Predictive distribution of N thresholds (tokens): log tau ~ Normal(log median, sigma).

    Attributes
    ----------
    median : ndarray (N,)
        Point estimate in tokens (the predictive median).
    lower, upper : ndarray (N,)
        Central ``coverage`` interval in tokens (from out-of-fold residual quantiles).
    sigma : ndarray (N,)
        Standard deviation of log tau (natural log); the log-normal width matching the interval.
    coverage : float
        Nominal coverage of [lower, upper], e.g. 0.8.
    """

    median: FloatArray
    lower: FloatArray
    upper: FloatArray
    sigma: FloatArray
    coverage: float

    @property
    def n(self) -> int:
        return int(self.median.size)

    def quantile(self, q: float | ArrayLike) -> FloatArray:
        """Log-normal quantiles in tokens: shape (N,) for a scalar q, (N, Q) for an array."""
        z = stats.norm.ppf(np.asarray(q, dtype=float))
        if np.ndim(z) == 0:
            return self.median * np.exp(self.sigma * float(z))
        return self.median[:, None] * np.exp(self.sigma[:, None] * np.asarray(z)[None, :])


class ThresholdPredictor:
    """Text -> emergence threshold (tokens), with a calibrated predictive interval.

    Parameters
    ----------
    alpha : float
        Ridge penalty on the sparse text features.
    coverage : float
        Default nominal coverage of the reported interval, in (0, 1).
    cv : int
        Folds for the out-of-fold residuals that calibrate the intervals (>= 2).
    word_features, char_features : int
        Vocabulary caps of the word and character TF-IDF blocks (0 drops a block).
    random_state : int
        Seeds the folds.
    encoder : Encoder, optional
        Replace the TF-IDF features by a local embedding model's output
        (:mod:`shadowprice.predict.encoders`, optional extra); the Ridge head stays.

    Attributes (after :meth:`fit`)
    ------------------------------
    residuals_ : ndarray (M,)
        Out-of-fold residuals log(target) - log(prediction) of the data the intervals come
        from (the fit set, or the calibration set after :meth:`calibrate`).
    oof_ : ndarray (M,)
        Out-of-fold log predictions for those texts (for honest scoring).
    calibration_ : (float, float)
        (a, b) of log tau = a + b * z, z the regression's log output; (0, 1) if uncalibrated.
    metadata_ : dict
        What the model was trained on, sizes, scores and versions; saved beside the model.
    """

    def __init__(
        self,
        alpha: float = 3.0,
        coverage: float = 0.8,
        cv: int = 5,
        word_features: int = 50_000,
        char_features: int = 50_000,
        random_state: int = 0,
        encoder: Encoder | None = None,
    ) -> None:
        if not (np.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        if not 0 < coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {coverage!r}")
        if cv < 2:
            raise ValueError(f"cv must be at least 2, got {cv!r}")
        self.alpha, self.coverage, self.cv = float(alpha), float(coverage), int(cv)
        self.word_features, self.char_features = int(word_features), int(char_features)
        self.random_state = int(random_state)
        self.encoder = encoder

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str],
        targets: ArrayLike,
        *,
        description: str | dict[str, Any] | None = None,
    ) -> ThresholdPredictor:
        """Learn log(targets) from texts.

        Parameters
        ----------
        texts : sequence of str, length M
            Query texts.
        targets : array (M,)
            Positive token counts: traced thresholds, or a proxy such as reference solution
            lengths (then :meth:`calibrate` on traced thresholds before trusting the scale).
        description : str or dict, optional
            What the targets are; stored in the metadata.
        """
        x = check_texts(texts)
        y = _log_targets(targets, len(x))
        if len(x) < self.cv:
            raise ValueError(f"need at least cv={self.cv} training texts, got {len(x)}")
        t0 = time.perf_counter()
        # The vectoriser's vocabulary and idf are unsupervised (no targets), so fitting them on
        # every training text and cross-validating only the regression leaks nothing about y.
        self.features_: Any = (
            make_text_features(
                self.word_features, self.char_features, min_df=2 if len(x) >= 50 else 1
            )
            if self.encoder is None
            else EncoderFeatures(self.encoder)
        )
        raw = self.features_.fit_transform(x)
        z = sparse.csr_matrix(raw) if sparse.issparse(raw) else np.asarray(raw)
        oof = np.empty(len(x))
        for tr, te in KFold(self.cv, shuffle=True, random_state=self.random_state).split(x):
            oof[te] = self._ridge().fit(z[tr], y[tr]).predict(z[te])
        self.regressor_ = self._ridge().fit(z, y)
        self.calibration_ = (0.0, 1.0)
        self._set_residuals(y, oof)
        self.metadata_: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "trained_on": description or "unspecified targets",
            "n_train": len(x),
            "target": "log tokens",
            "cv_spearman": _spearman(oof, y),
            "params": self.get_params(),
            "fit_seconds": round(time.perf_counter() - t0, 3),
            "calibrated_on": None,
            "versions": _versions(),
        }
        return self

    def calibrate(
        self,
        texts: Sequence[str],
        thresholds: ArrayLike,
        *,
        description: str | dict[str, Any] | None = None,
    ) -> ThresholdPredictor:
        """Map the regression's output to real thresholds: log tau = a + b z (least squares).

        Use after :meth:`fit` on a proxy target. The intervals are then recomputed from
        out-of-fold residuals of this two-parameter map over ``texts`` (k-fold, ``cv`` folds),
        so they describe the error on real thresholds, not on the proxy.

        Parameters
        ----------
        texts : sequence of str, length M (M >= cv and >= 3)
            Queries with traced thresholds, none of them in the fit set.
        thresholds : array (M,)
            Their thresholds in tokens (> 0).
        """
        self._check_fitted()
        x = check_texts(texts)
        y = _log_targets(thresholds, len(x))
        if len(x) < max(self.cv, 3):
            raise ValueError(f"need at least {max(self.cv, 3)} calibration texts, got {len(x)}")
        z = self._raw(x)
        oof = np.empty(len(x))
        for tr, te in KFold(self.cv, shuffle=True, random_state=self.random_state).split(x):
            a, b = _line(z[tr], y[tr])
            oof[te] = a + b * z[te]
        self.calibration_ = _line(z, y)
        self._set_residuals(y, oof)
        self.metadata_["calibrated_on"] = {
            "description": description or "unspecified thresholds",
            "n": len(x),
            "a": self.calibration_[0],
            "b": self.calibration_[1],
            "cv_spearman": _spearman(oof, y),
        }
        return self

    # -- prediction ---------------------------------------------------------------------------
    def predict_log(self, texts: Sequence[str]) -> FloatArray:
        """Point prediction of log tau (natural log of tokens), shape (N,)."""
        a, b = self.calibration_
        return a + b * self._raw(check_texts(texts)) + self.shift_

    def predict(self, texts: Sequence[str], coverage: float | None = None) -> Prediction:
        """Predictive distribution of each text's threshold (see :class:`Prediction`).

        ``coverage`` (default: the estimator's) picks the interval; its bounds are empirical
        quantiles of the out-of-fold residuals, so they are calibrated without assuming
        normality. ``sigma`` is the log-normal width with the same interval.
        """
        c = self.coverage if coverage is None else float(coverage)
        if not 0 < c < 1:
            raise ValueError(f"coverage must be in (0, 1), got {c!r}")
        self._check_fitted()
        mid = self.predict_log(texts)
        r = self.residuals_ - self.shift_
        lo, hi = np.quantile(r, [(1 - c) / 2, (1 + c) / 2])
        n = mid.size
        return Prediction(
            median=np.exp(mid),
            lower=np.exp(mid + lo),
            upper=np.exp(mid + hi),
            sigma=np.full(n, max(self.sigma_, 1e-6)),
            coverage=c,
        )

    def predict_curves(
        self,
        texts: Sequence[str] | Prediction,
        family: Family = "surge",
        uncertainty: bool = True,
        *,
        alpha: float = 1.5,
        beta: float = 0.005,
        p: ArrayLike = 1.0,
        grid: ArrayLike | None = None,
        nodes: int = 32,
    ) -> UtilityCurve:
        """Utility curves of the queries for :func:`shadowprice.allocate`.

        Parameters
        ----------
        texts : sequence of str (N,) or a Prediction
        family : 'surge' or 'gamma'
            :class:`ShiftedSurge` (the paper's latent utility; ``alpha``, ``beta`` shared) or
            :class:`GammaSCurve` (success probability; ``beta`` shared, ``p`` solvable
            probability, scalar or (N,)).
        uncertainty : bool
            False: the curve at the point estimate (closed-form CLEAR applies). True: the
            expected curve under the log-normal predictive distribution, as a
            :class:`TabulatedCurve` on an integer grid; allocate it with
            ``allocate(curves, B, "clear", grid=curves.grid)``.
        alpha, beta, p : curve parameters (see the families).
        grid : int array (K,), optional
            Budget grid for the expected curve (from 0, ascending); default
            :func:`default_curve_grid`.
        nodes : int
            Equal-probability quadrature nodes over tau.
        """
        pred = texts if isinstance(texts, Prediction) else self.predict(texts)
        return expected_curves(
            pred.median,
            pred.sigma if uncertainty else 0.0,
            family,
            alpha=alpha,
            beta=beta,
            p=p,
            grid=grid,
            nodes=nodes,
        )

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``model.joblib`` and ``metadata.json`` into directory ``path`` (created)."""
        import joblib

        self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, d / _MODEL_FILE, compress=3)
        meta = dict(
            self.metadata_,
            sigma=self.sigma_,
            coverage=self.coverage,
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (d / _META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")
        return d

    @classmethod
    def load(cls, path: str | Path) -> ThresholdPredictor:
        """Load a model saved by :meth:`save` (a directory, or its ``model.joblib``).

        Only load files you trust: joblib files can run code when unpickled.
        """
        import joblib

        p = Path(path)
        f = p / _MODEL_FILE if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"no saved predictor at {p} (expected {_MODEL_FILE})")
        meta_file = f.parent / _META_FILE
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{meta_file}: format_version {meta.get('format_version')!r}"
                    f" is not {FORMAT_VERSION}; retrain the predictor"
                )
        obj = joblib.load(f)
        if not isinstance(obj, cls):
            raise TypeError(f"{f} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    def get_params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "coverage": self.coverage,
            "cv": self.cv,
            "word_features": self.word_features,
            "char_features": self.char_features,
            "random_state": self.random_state,
            "encoder": None if self.encoder is None else repr(self.encoder),
        }

    def __repr__(self) -> str:
        state = (
            "unfitted"
            if not hasattr(self, "regressor_")
            else f"n_train={self.metadata_['n_train']}, sigma={self.sigma_:.3f}"
        )
        return f"ThresholdPredictor({state})"

    # -- internals ----------------------------------------------------------------------------
    def _ridge(self) -> Ridge:
        # lsqr with a loose tolerance: 10x faster than the default on 10^5 sparse columns and
        # the log-target fit does not need more digits.
        return Ridge(alpha=self.alpha, solver="lsqr", tol=1e-3)

    def _raw(self, x: list[str]) -> FloatArray:
        self._check_fitted()
        z = self.features_.transform(x)
        return np.asarray(self.regressor_.predict(z), dtype=float)

    def _set_residuals(self, y: FloatArray, oof: FloatArray) -> None:
        r = y - oof
        self.oof_, self.residuals_ = oof, r
        # Centre on the residual median so the point estimate is the predictive median.
        self.shift_ = float(np.median(r))
        lo, hi = np.quantile(r - self.shift_, [(1 - self.coverage) / 2, (1 + self.coverage) / 2])
        self.sigma_ = float((hi - lo) / (2 * stats.norm.ppf((1 + self.coverage) / 2)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "regressor_"):
            raise RuntimeError("ThresholdPredictor is not fitted: call fit(texts, targets)")


# -- expected curves ----------------------------------------------------------------------------
def default_curve_grid(
    median: ArrayLike, sigma: ArrayLike, beta: float, levels: int = 160
) -> NDArray[np.int64]:
    """Integer budget grid covering every query's likely thresholds plus its surge.

    0, then ``levels - 1`` geometric steps from a quarter of the smallest 1 % quantile to the
    largest 99.9 % quantile plus 4 / beta (past the surge peak and most of a Gamma(2) tail).
    """
    m = np.asarray(median, dtype=float)
    s = np.broadcast_to(np.asarray(sigma, dtype=float), m.shape)
    lo = max(float(np.min(m * np.exp(-2.33 * s))) / 4.0, 1.0)
    hi = float(np.max(m * np.exp(3.1 * s))) + 4.0 / beta
    g = np.unique(np.round(np.geomspace(lo, max(hi, 4 * lo), levels - 1)).astype(np.int64))
    return np.concatenate([[0], g[g > 0]])


def expected_curves(
    median: ArrayLike,
    sigma: ArrayLike,
    family: Family = "surge",
    *,
    alpha: float = 1.5,
    beta: float = 0.005,
    p: ArrayLike = 1.0,
    grid: ArrayLike | None = None,
    nodes: int = 32,
) -> UtilityCurve:
    """Curves of N queries whose thresholds are log-normal: log tau ~ N(log median, sigma).

    Parameters
    ----------
    median : array (N,)
        Median thresholds in tokens (> 0).
    sigma : float or array (N,)
        Log-scale standard deviation (>= 0). All zero: the point curve (closed form).
    family, alpha, beta, p, grid, nodes : see :meth:`ThresholdPredictor.predict_curves`.

    Returns
    -------
    ShiftedSurge or GammaSCurve when sigma is 0 everywhere; else a TabulatedCurve (N, K) with
    values E_tau[U(b; tau)], averaged over ``nodes`` equal-probability quantiles of tau (so
    monotone where U is, between 0 and U's ceiling).
    """
    m = np.atleast_1d(np.asarray(median, dtype=float))
    s = np.broadcast_to(np.asarray(sigma, dtype=float), m.shape)
    if m.ndim != 1 or not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError("median thresholds must be a 1-D array of positive token counts")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sigma must be finite and non-negative")
    if family not in ("surge", "gamma"):
        raise ValueError(f"family must be 'surge' or 'gamma', got {family!r}")
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")

    def curve(tau: FloatArray) -> UtilityCurve:
        if family == "surge":
            return ShiftedSurge(tau, alpha, beta)
        return GammaSCurve(tau, beta, p)

    if not np.any(s > 0):
        return curve(m)
    g = default_curve_grid(m, s, beta) if grid is None else np.asarray(grid)
    if g.ndim != 1 or g.size < 2 or g[0] != 0 or np.any(np.diff(g) <= 0):
        raise ValueError("grid must be 1-D, strictly ascending and start at 0")
    gf = np.broadcast_to(g.astype(float), (m.size, g.size))
    # Mid-quantile nodes: each carries probability 1/nodes, no weights needed, and the tails
    # are represented without the extreme abscissae of Gauss-Hermite.
    z = stats.norm.ppf((np.arange(nodes) + 0.5) / nodes)
    acc = np.zeros((m.size, g.size))
    for zk in z:
        acc += curve(m * np.exp(s * zk)).value(gf)
    acc /= nodes
    acc[:, 0] = 0.0
    return TabulatedCurve(g, acc)


# -- helpers ------------------------------------------------------------------------------------
def _log_targets(targets: ArrayLike, n: int) -> FloatArray:
    y = np.asarray(targets, dtype=float)
    if y.ndim != 1 or y.size != n:
        raise ValueError(
            f"targets must be a 1-D array with one value per text ({n}), got shape {y.shape}"
        )
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"targets[{i}] = {y[i]!r}: thresholds must be positive token counts")
    return np.log(y)


def _line(z: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Least-squares (a, b) of y = a + b z; b = 0 when z has no spread."""
    zc = z - z.mean()
    v = float(zc @ zc)
    b = float(zc @ (y - y.mean())) / v if v > 1e-12 else 0.0
    return float(y.mean() - b * z.mean()), b


def _spearman(a: FloatArray, b: FloatArray) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


def _versions() -> dict[str, str]:
    import sklearn

    from .. import __version__ as sp_version

    return {
        "shadowprice": str(sp_version),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _jsonable(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)
