"""Predict each query's emergence threshold tau from its text, with calibrated uncertainty.

The model works on log tokens: thresholds vary multiplicatively (a 100-token and a 1000-token
problem are "one decade" apart), so errors are relative and the predictive distribution is
log-normal.

- :class:`ThresholdPredictor` is a scikit-learn regressor: ``fit(texts, targets)`` learns a
  Ridge regression of log targets on sparse text features (:func:`make_text_features`) and
  ``predict(texts)`` returns median thresholds in tokens, so ``clone``, ``Pipeline`` and
  ``GridSearchCV`` work. ``calibrate(texts, thresholds)`` optionally maps its output to real
  thresholds with a two-parameter line in log space (train on a plentiful proxy target such
  as the reference solution's length, calibrate on the few queries whose thresholds were
  traced).
- Uncertainty is split-conformal in spirit: out-of-fold residuals (k-fold over the training or
  calibration texts) give the interval quantiles directly, so an 80 % interval covers about
  80 % of held-out queries from the same distribution; ``sigma`` is the log-normal width that
  reproduces that interval. :meth:`ThresholdPredictor.predict_interval` and
  :meth:`ThresholdPredictor.predict_distribution` report them.
- :meth:`ThresholdPredictor.predict_curves` turns a prediction into utility curves: the point
  estimate's curve, or the *expected* curve E_tau[U(b; tau)] under the predictive distribution
  (:func:`expected_curves`), which is what the allocator should price when tau is uncertain.
- :meth:`ThresholdPredictor.compile` gives a :class:`~shadowprice.predict.fast.CompiledPredictor`
  for one text at a time (a gateway pricing live requests), with the same numbers.
"""

from __future__ import annotations

import json
import numbers
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse, stats
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import FeatureUnion
from sklearn.utils.validation import check_is_fitted

from ..curves import GammaSCurve, ShiftedSurge, TabulatedCurve, UtilityCurve
from ..curves.grid import check_grid
from .encoders import Encoder, EncoderFeatures
from .fast import CompiledPredictor
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
#: 2: a scikit-learn estimator (``predict`` returns median tokens; hyper-parameters untouched).
FORMAT_VERSION = 2
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
        """Number of predicted thresholds N."""
        return int(self.median.size)

    def quantile(self, q: float | ArrayLike) -> FloatArray:
        """Log-normal quantiles of the thresholds.

        Parameters
        ----------
        q : float or array (Q,)
            Probabilities in (0, 1).

        Returns
        -------
        ndarray (N,) for a scalar ``q``, (N, Q) for an array; tokens.
        """
        z = stats.norm.ppf(np.asarray(q, dtype=float))
        if np.ndim(z) == 0:
            return self.median * np.exp(self.sigma * float(z))
        return self.median[:, None] * np.exp(self.sigma[:, None] * np.asarray(z)[None, :])


class ThresholdPredictor(RegressorMixin, BaseEstimator):
    """Text -> emergence threshold (tokens), with a calibrated predictive interval.

    A scikit-learn regressor: hyper-parameters are stored as given and checked by :meth:`fit`,
    so :func:`sklearn.base.clone`, ``get_params``/``set_params``, pipelines and grid search
    work. ``X`` is a sequence of N query texts throughout; ``y`` are positive token counts.

    Parameters
    ----------
    alpha : float
        Ridge penalty on the text features (> 0).
    coverage : float
        Default nominal coverage of the reported interval, in (0, 1).
    cv : int
        Folds for the out-of-fold residuals that calibrate the intervals (>= 2).
    word_features, char_features : int
        Vocabulary caps of the word and character TF-IDF blocks (>= 0; 0 drops a block).
    random_state : int or None
        Seeds the folds.
    encoder : Encoder, optional
        Replace the TF-IDF features by a local embedding model's output
        (:mod:`shadowprice.predict.encoders`, optional extra); the Ridge head stays.

    Attributes
    ----------
    features_ : FeatureUnion or EncoderFeatures
        The fitted featuriser, texts -> (N, F) matrix.
    regressor_ : sklearn.linear_model.Ridge
        log target ~ features.
    residuals_ : ndarray (M,)
        Out-of-fold residuals log(target) - log(prediction) of the data the intervals come
        from (the fit set, or the calibration set after :meth:`calibrate`).
    oof_ : ndarray (M,)
        Out-of-fold log predictions for those texts (for honest scoring).
    shift_ : float
        Median of ``residuals_``: added to the log output so it is the predictive median.
    sigma_ : float
        Log-normal width matching the ``coverage`` interval of the residuals.
    calibration_ : (float, float)
        (a, b) of log tau = a + b * z, z the regression's log output; (0, 1) if uncalibrated.
    metadata_ : dict
        What the model was trained on, sizes, scores and versions; saved beside the model.

    Examples
    --------
    >>> from shadowprice.predict import ThresholdPredictor
    >>> texts = [f"{'step ' * (i % 7)}problem {i}" for i in range(40)]
    >>> tau = [100.0 * 1.3 ** (i % 7) for i in range(40)]
    >>> model = ThresholdPredictor(char_features=0, cv=4).fit(texts, tau)
    >>> model.predict(texts[:2]).shape
    (2,)
    """

    def __init__(
        self,
        alpha: float = 3.0,
        coverage: float = 0.8,
        cv: int = 5,
        word_features: int = 50_000,
        char_features: int = 50_000,
        random_state: int | None = 0,
        encoder: Encoder | None = None,
    ) -> None:
        self.alpha = alpha
        self.coverage = coverage
        self.cv = cv
        self.word_features = word_features
        self.char_features = char_features
        self.random_state = random_state
        self.encoder = encoder

    # -- fitting ------------------------------------------------------------------------------
    def fit(
        self,
        X: Sequence[str],
        y: ArrayLike,
        *,
        description: str | dict[str, Any] | None = None,
    ) -> ThresholdPredictor:
        """Learn log(y) from texts.

        Parameters
        ----------
        X : sequence of str, length M (M >= cv)
            Query texts.
        y : array (M,)
            Positive token counts: traced thresholds, or a proxy such as reference solution
            lengths (then :meth:`calibrate` on traced thresholds before trusting the scale).
        description : str or dict, optional
            What the targets are; stored in the metadata.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For a hyper-parameter out of range, bad targets, fewer texts than ``cv``, or
            texts that leave a TF-IDF block with no vocabulary.
        TypeError
            For a text that is not a string, or an encoder without ``encode``.
        """
        self._check_hyperparameters()
        x = check_texts(X)
        y_log = _log_targets(y, len(x))
        if len(x) < self.cv:
            raise ValueError(
                f"need at least cv={self.cv} training texts, got {len(x)}; pass more texts "
                f"or a smaller cv (>= 2)"
            )
        t0 = time.perf_counter()
        # The vectoriser's vocabulary and idf are unsupervised (no targets), so fitting them on
        # every training text and cross-validating only the regression leaks nothing about y.
        self.features_: FeatureUnion | EncoderFeatures = (
            make_text_features(
                self.word_features, self.char_features, min_df=2 if len(x) >= 50 else 1
            )
            if self.encoder is None
            else EncoderFeatures(self.encoder)
        )
        raw = _fit_features(self.features_, x)
        z = sparse.csr_matrix(raw) if sparse.issparse(raw) else np.asarray(raw)
        oof = np.empty(len(x))
        for tr, te in KFold(self.cv, shuffle=True, random_state=self.random_state).split(x):
            oof[te] = self._ridge().fit(z[tr], y_log[tr]).predict(z[te])
        self.regressor_ = self._ridge().fit(z, y_log)
        self.calibration_ = (0.0, 1.0)
        self._set_residuals(y_log, oof)
        self.metadata_: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "trained_on": description or "unspecified targets",
            "n_train": len(x),
            "target": "log tokens",
            "cv_spearman": _spearman(oof, y_log),
            "params": self._params_for_metadata(),
            "fit_seconds": round(time.perf_counter() - t0, 3),
            "calibrated_on": None,
            "versions": _versions(),
        }
        return self

    def calibrate(
        self,
        X: Sequence[str],
        thresholds: ArrayLike,
        *,
        description: str | dict[str, Any] | None = None,
    ) -> ThresholdPredictor:
        """Map the regression's output to real thresholds: log tau = a + b z (least squares).

        Use after :meth:`fit` on a proxy target. The intervals are then recomputed from
        out-of-fold residuals of this two-parameter map over ``X`` (k-fold, ``cv`` folds),
        so they describe the error on real thresholds, not on the proxy.

        Parameters
        ----------
        X : sequence of str, length M (M >= cv and >= 3)
            Queries with traced thresholds, none of them in the fit set.
        thresholds : array (M,)
            Their thresholds in tokens (> 0).
        description : str or dict, optional
            Where the thresholds come from; stored in the metadata.

        Returns
        -------
        self
        """
        self._check_fitted()
        self._check_hyperparameters()
        x = check_texts(X)
        y = _log_targets(thresholds, len(x))
        if len(x) < max(self.cv, 3):
            raise ValueError(
                f"need at least {max(self.cv, 3)} calibration texts, got {len(x)}; pass more "
                f"texts or a smaller cv (>= 2)"
            )
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
    def predict(self, X: Sequence[str]) -> FloatArray:
        """Median threshold of each text.

        Parameters
        ----------
        X : sequence of str, length N

        Returns
        -------
        ndarray (N,)
            Predictive medians in tokens (float64).
        """
        return np.exp(self.predict_log(X))

    def predict_log(self, X: Sequence[str]) -> FloatArray:
        """Point prediction of log tau.

        Parameters
        ----------
        X : sequence of str, length N

        Returns
        -------
        ndarray (N,)
            Natural log of the median threshold in tokens.
        """
        self._check_fitted()
        a, b = self.calibration_
        return a + b * self._raw(check_texts(X)) + self.shift_

    def predict_interval(
        self, X: Sequence[str], coverage: float | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Central predictive interval of each text's threshold.

        Parameters
        ----------
        X : sequence of str, length N
        coverage : float, optional
            Nominal coverage in (0, 1); default the estimator's ``coverage``.

        Returns
        -------
        lower, upper : ndarray (N,)
            Bounds in tokens: the median times the empirical quantiles of the out-of-fold
            residuals, so they are calibrated without assuming normality.
        """
        p = self.predict_distribution(X, coverage)
        return p.lower, p.upper

    def predict_distribution(self, X: Sequence[str], coverage: float | None = None) -> Prediction:
        """Predictive distribution of each text's threshold.

        Parameters
        ----------
        X : sequence of str, length N
        coverage : float, optional
            Nominal coverage of the interval in (0, 1); default the estimator's ``coverage``.

        Returns
        -------
        Prediction
            Median, interval bounds (empirical quantiles of the out-of-fold residuals) and
            ``sigma``, the log-normal width with the same interval; each (N,).
        """
        self._check_fitted()
        c = self.coverage if coverage is None else coverage
        if not _in_unit_interval(c):
            raise ValueError(f"coverage must be a number in (0, 1), got {c!r}; e.g. 0.8")
        mid = self.predict_log(X)
        lo, hi = self._residual_quantiles(float(c))
        return Prediction(
            median=np.exp(mid),
            lower=np.exp(mid + lo),
            upper=np.exp(mid + hi),
            sigma=np.full(mid.size, self._sigma()),
            coverage=float(c),
        )

    def predict_curves(
        self,
        X: Sequence[str] | Prediction,
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
        X : sequence of str (N,) or a Prediction
            Query texts, or their :meth:`predict_distribution`.
        family : 'surge' or 'gamma'
            :class:`ShiftedSurge` (the paper's latent utility; ``alpha``, ``beta`` shared) or
            :class:`GammaSCurve` (success probability; ``beta`` shared, ``p`` solvable
            probability, scalar or (N,)).
        uncertainty : bool
            False: the curve at the point estimate (closed-form CLEAR applies). True: the
            expected curve under the log-normal predictive distribution, as a
            :class:`TabulatedCurve` on an integer grid; allocate it with
            ``allocate(curves, B, "clear", grid=curves.grid)``.
        alpha, beta, p : float, float, float or array (N,)
            Curve parameters (see the families); ``beta`` in 1 / tokens.
        grid : int array (K,), optional
            Budget grid in tokens for the expected curve (from 0, ascending); default
            :func:`default_curve_grid`.
        nodes : int
            Equal-probability quadrature nodes over tau.

        Returns
        -------
        UtilityCurve
            N curves: ShiftedSurge / GammaSCurve, or a TabulatedCurve (N, K) with uncertainty.
        """
        pred = X if isinstance(X, Prediction) else self.predict_distribution(X)
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

    def score(
        self, X: Sequence[str], y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """Coefficient of determination R² of the log median against log ``y``.

        Thresholds vary multiplicatively, so the fit and its score are on log tokens (on raw
        tokens a handful of the longest problems would decide R²). ``GridSearchCV`` and
        ``cross_val_score`` use this by default.

        Parameters
        ----------
        X : sequence of str, length N
        y : array (N,)
            Positive token counts.
        sample_weight : array (N,), optional

        Returns
        -------
        float
            R² on the log scale (1 is perfect; can be negative).
        """
        from sklearn.metrics import r2_score

        x = check_texts(X)
        return float(
            r2_score(_log_targets(y, len(x)), self.predict_log(x), sample_weight=sample_weight)
        )

    def compile(self, cache_size: int = 4096) -> CompiledPredictor:
        """A fast single-text predictor with this model's numbers.

        Parameters
        ----------
        cache_size : int
            Distinct texts whose predictions are kept (least recently used first out); 0
            turns the cache off.

        Returns
        -------
        CompiledPredictor
            Applies the fitted vocabularies, idf weights, structural features and linear
            coefficients directly (no scikit-learn call per text); agrees with
            :meth:`predict` and the ``sigma`` of :meth:`predict_distribution` to about 1e-12
            relative.

        Raises
        ------
        ValueError
            If the model uses an encoder (its cost is the encoder, not the featuriser).
        """
        self._check_fitted()
        if not isinstance(self.features_, FeatureUnion):
            raise ValueError(
                "compile() needs the TF-IDF text features; this model uses an encoder, "
                "whose own forward pass dominates the cost: call predict() instead"
            )
        return CompiledPredictor(
            self.features_,
            coef=np.asarray(self.regressor_.coef_, dtype=float).ravel(),
            intercept=float(np.ravel(self.regressor_.intercept_)[0]),
            calibration=self.calibration_,
            shift=self.shift_,
            sigma=self._sigma(),
            cache_size=cache_size,
        )

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model into a directory.

        Parameters
        ----------
        path : str or Path
            Directory (created): ``model.joblib`` (the pickled estimator) and
            ``metadata.json`` (format version, training data, scores, library versions).

        Returns
        -------
        Path
            The directory.
        """
        import joblib

        self._check_fitted()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, d / _MODEL_FILE, compress=3)
        meta = dict(
            self.metadata_,
            format_version=FORMAT_VERSION,
            sigma=self.sigma_,
            coverage=self.coverage,
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        (d / _META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")
        return d

    @classmethod
    def load(cls, path: str | Path) -> ThresholdPredictor:
        """Load a model written by :meth:`save`.

        Only load files you trust: joblib files can run code when unpickled.

        Parameters
        ----------
        path : str or Path
            The directory, or its ``model.joblib`` (``metadata.json`` must sit beside it).

        Returns
        -------
        ThresholdPredictor

        Raises
        ------
        FileNotFoundError
            If the model file or its metadata is missing.
        ValueError
            If the metadata's ``format_version`` is not :data:`FORMAT_VERSION` (retrain or
            re-save with this version).
        TypeError
            If the file holds something other than a ThresholdPredictor.
        """
        import joblib

        p = Path(path)
        f = p / _MODEL_FILE if p.is_dir() else p
        if not f.is_file():
            raise FileNotFoundError(f"no saved predictor at {p} (expected {_MODEL_FILE})")
        meta_file = f.parent / _META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"no {_META_FILE} beside {f}: it records the format version the model was "
                f"saved with; save models with ThresholdPredictor.save"
            )
        version = json.loads(meta_file.read_text()).get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: format_version {version!r} is not {FORMAT_VERSION}; retrain "
                f"the predictor with this version (shadowprice predictor fit)"
            )
        obj = joblib.load(f)
        if not isinstance(obj, cls):
            raise TypeError(f"{f} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    # -- scikit-learn protocol ----------------------------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "regressor_")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags

    # -- internals ----------------------------------------------------------------------------
    def _check_hyperparameters(self) -> None:
        """Validate the hyper-parameters as given to ``__init__`` or ``set_params``."""
        a = self.alpha
        if not (_is_real(a) and np.isfinite(a) and a > 0):
            raise ValueError(
                f"alpha must be a positive finite number (the Ridge penalty), got {a!r}; "
                f"e.g. alpha=3.0"
            )
        if not _in_unit_interval(self.coverage):
            raise ValueError(
                f"coverage must be a number in (0, 1) (the interval's nominal coverage), "
                f"got {self.coverage!r}; e.g. coverage=0.8"
            )
        if not (_is_int(self.cv) and self.cv >= 2):
            raise ValueError(
                f"cv must be an integer >= 2 (folds for the out-of-fold residuals), "
                f"got {self.cv!r}; e.g. cv=5"
            )
        for name in ("word_features", "char_features"):
            v = getattr(self, name)
            if not (_is_int(v) and v >= 0):
                raise ValueError(
                    f"{name} must be an integer >= 0 (vocabulary cap; 0 drops the block), got {v!r}"
                )
        if not (self.random_state is None or _is_int(self.random_state)):
            raise ValueError(
                f"random_state must be an integer or None (seeds the folds), "
                f"got {self.random_state!r}"
            )
        if self.encoder is not None and not isinstance(self.encoder, Encoder):
            raise TypeError(
                f"encoder must have an encode(texts) method, got {type(self.encoder).__name__}"
            )

    def _params_for_metadata(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        params["encoder"] = None if self.encoder is None else repr(self.encoder)
        return params

    def _ridge(self) -> Ridge:
        # lsqr with a loose tolerance: 10x faster than the default on 10^5 sparse columns and
        # the log-target fit does not need more digits.
        return Ridge(alpha=self.alpha, solver="lsqr", tol=1e-3)

    def _raw(self, x: list[str]) -> FloatArray:
        z = self.features_.transform(x)
        return np.asarray(self.regressor_.predict(z), dtype=float)

    def _residual_quantiles(self, coverage: float) -> tuple[float, float]:
        r = self.residuals_ - self.shift_
        lo, hi = np.quantile(r, [(1 - coverage) / 2, (1 + coverage) / 2])
        return float(lo), float(hi)

    def _sigma(self) -> float:
        return max(self.sigma_, 1e-6)

    def _set_residuals(self, y: FloatArray, oof: FloatArray) -> None:
        r = y - oof
        self.oof_, self.residuals_ = oof, r
        # Centre on the residual median so the point estimate is the predictive median.
        self.shift_ = float(np.median(r))
        lo, hi = self._residual_quantiles(float(self.coverage))
        self.sigma_ = float((hi - lo) / (2 * stats.norm.ppf((1 + self.coverage) / 2)))

    def _check_fitted(self) -> None:
        check_is_fitted(
            self,
            msg="This %(name)s is not fitted yet: call fit(texts, targets) first, "
            "or load a saved model (load_predictor).",
        )


# -- expected curves ----------------------------------------------------------------------------
def default_curve_grid(
    median: ArrayLike, sigma: ArrayLike, beta: float, levels: int = 160
) -> NDArray[np.int64]:
    """Integer budget grid covering every query's likely thresholds plus its surge.

    Parameters
    ----------
    median : array (N,)
        Median thresholds in tokens.
    sigma : float or array (N,)
        Log-scale standard deviations.
    beta : float
        Curve rate in 1 / tokens (the grid reaches 4 / beta past the largest threshold).
    levels : int
        Number of grid points before rounding and de-duplication.

    Returns
    -------
    int64 ndarray (K,), K <= levels
        0, then geometric steps in tokens from a quarter of the smallest 1 % quantile to the
        largest 99.9 % quantile plus 4 / beta (past the surge peak and most of a Gamma(2)
        tail), strictly ascending.
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
    family : 'surge' or 'gamma'
        :class:`ShiftedSurge` (``alpha``, ``beta``) or :class:`GammaSCurve` (``beta``, ``p``).
    alpha, beta : float
        Surge height and rate; ``beta`` in 1 / tokens (both families).
    p : float or array (N,)
        Solvable probability of the Gamma family.
    grid : int array (K,), optional
        Budget grid in tokens, from 0, strictly ascending; default :func:`default_curve_grid`.
    nodes : int
        Equal-probability quadrature nodes over tau (>= 1).

    Returns
    -------
    UtilityCurve
        ShiftedSurge or GammaSCurve when sigma is 0 everywhere; else a TabulatedCurve (N, K)
        with values E_tau[U(b; tau)], averaged over ``nodes`` equal-probability quantiles of
        tau (so monotone where U is, between 0 and U's ceiling); for the Gamma family also
        the expected spend E[min(L, b)] and survival P(L > b) of its length law.
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
    g = default_curve_grid(m, s, beta) if grid is None else check_grid(grid, whole=False)
    gf = np.broadcast_to(g.astype(float), (m.size, g.size))
    # Mid-quantile nodes: each carries probability 1/nodes, no weights needed, and the tails
    # are represented without the extreme abscissae of Gauss-Hermite.
    z = stats.norm.ppf((np.arange(nodes) + 0.5) / nodes)
    acc = np.zeros((m.size, g.size))
    # The Gamma family carries a length law, so the expected curve carries the mixture's
    # expected spend and survival (averages over the same nodes).
    lengths = family == "gamma"
    spend = np.zeros_like(acc) if lengths else None
    surv = np.zeros_like(acc) if lengths else None
    for zk in z:
        c = curve(m * np.exp(s * zk))
        acc += c.value(gf)
        if spend is not None and surv is not None:
            spend += c.spend(gf)
            surv += c.survival(gf)
    acc /= nodes
    acc[:, 0] = 0.0
    if spend is None or surv is None:
        return TabulatedCurve(g, acc)
    return TabulatedCurve(g, acc, spend / nodes, np.clip(surv / nodes, 0.0, 1.0))


# -- helpers ------------------------------------------------------------------------------------
def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _in_unit_interval(v: object) -> bool:
    return _is_real(v) and 0 < float(v) < 1  # type: ignore[arg-type]


def _fit_features(features: FeatureUnion | EncoderFeatures, x: list[str]) -> Any:
    """``features.fit_transform(x)``, with a TF-IDF block that learns no vocabulary named."""
    try:
        return features.fit_transform(x)
    except ValueError as exc:
        if not isinstance(features, FeatureUnion):
            raise
        for name, block in features.transformer_list:
            if not hasattr(block, "vocabulary"):
                continue
            try:
                block.fit(x)
            except ValueError:
                raise ValueError(
                    f"the {name} TF-IDF block learns no vocabulary from these {len(x)} "
                    f"training texts (no {name} n-gram occurs in enough of them: with 50 "
                    f"texts or more an n-gram must occur in two); pass more or longer "
                    f"texts, or {name}_features=0 to drop the block"
                ) from exc
        raise


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
