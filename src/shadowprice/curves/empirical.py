"""The observed curve itself: a monotone step function built from sampled solutions."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import FloatArray, QueryIndex, UtilityCurve
from .lengths import EmpiricalLengths, LengthModel


class EmpiricalCurve(UtilityCurve):
    """P(correct and finished within b tokens), estimated from each query's samples.

    With S_i samples of query i, of which those with ``correct`` had ``tokens`` output tokens,

        P_i(b) = #{s : correct_s and tokens_s <= b} / S_i

    which is exactly the accuracy a hard cap of b tokens gets on those samples. The curve only
    jumps at correct samples' lengths, so those lengths are the only budgets worth buying
    (:meth:`breakpoints`), which lets the market solver work on them exactly. Its length model
    is every sample's length (:class:`~shadowprice.curves.EmpiricalLengths`), so
    :meth:`spend` is exactly what a cap spends on those samples.

    Parameters
    ----------
    tokens : array of shape (N, S)
        Output tokens of each sample; NaN pads queries with fewer than S samples.
    correct : array of bool, shape (N, S)
        Whether each sample's answer is correct (padding entries are ignored).
    weight : float or array (N,), optional
        Multiplies each curve (e.g. to mix in a prior); default 1.
    """

    def __init__(
        self, tokens: ArrayLike, correct: ArrayLike, weight: ArrayLike | None = None
    ) -> None:
        t = np.asarray(tokens, dtype=float)
        c = np.asarray(correct)
        if t.ndim == 1:
            t, c = t[None, :], c[None, :]
        if t.ndim != 2 or c.shape != t.shape:
            raise ValueError(
                f"tokens and correct must have the same (N, S) shape, got {t.shape} and {c.shape}"
            )
        if c.dtype != bool:
            raise ValueError(f"correct must be boolean, got dtype {c.dtype}")
        present = ~np.isnan(t)
        if np.isinf(t).any() or (t[present] < 0).any():
            i, j = np.argwhere(np.isinf(t) | (present & (t < 0)))[0]
            raise ValueError(f"tokens[{i}, {j}] = {t[i, j]!r}: must be a non-negative finite count")
        n_samples = present.sum(axis=1)
        if (n_samples == 0).any():
            i = int(np.flatnonzero(n_samples == 0)[0])
            raise ValueError(f"query {i} has no samples; drop it or give it at least one sample")
        self.n_samples: NDArray[np.int64] = n_samples.astype(np.int64)
        ok = present & c
        # Correct lengths sorted ascending, +inf padding: value() is a count of entries <= b.
        self.lengths: FloatArray = np.sort(np.where(ok, t, np.inf), axis=1)
        self.weight: FloatArray = (
            np.ones(t.shape[0])
            if weight is None
            else np.broadcast_to(np.asarray(weight, float), (t.shape[0],)).copy()
        )
        self.length_model = EmpiricalLengths(t)

    @classmethod
    def from_lengths(
        cls,
        lengths: FloatArray,
        n_samples: NDArray[np.int64],
        weight: FloatArray,
        length_model: LengthModel | None = None,
    ) -> EmpiricalCurve:
        """Curves from sorted correct lengths (N, S) (+inf padded), sample counts and weights,
        without validation; ``length_model`` gives the lengths of all samples (spend)."""
        obj = cls.__new__(cls)
        obj.lengths, obj.n_samples, obj.weight = lengths, n_samples, weight
        obj.length_model = length_model
        return obj

    @property
    def n(self) -> int:
        return int(self.lengths.shape[0])

    def value(self, budgets: ArrayLike) -> FloatArray:
        b = np.asarray(budgets, dtype=float)
        scale = self.weight / self.n_samples
        if b.ndim <= 1:
            hits = (self.lengths <= np.broadcast_to(b, (self.n,))[:, None]).sum(axis=1)
            return scale * hits
        # (N, K): count sorted lengths at or below each budget, row by row.
        hits = (self.lengths[:, None, :] <= b[:, :, None]).sum(axis=2)
        return scale[:, None] * hits

    def marginal(self, budgets: ArrayLike) -> FloatArray:
        # A step function: zero almost everywhere. Solvers use breakpoints() instead.
        return np.zeros(np.broadcast_shapes(np.shape(budgets), (self.n,)))

    def breakpoints(self) -> FloatArray:
        """Budgets where the curve jumps, shape (N, S), +inf padded, ascending per row."""
        return self.lengths.copy()

    def threshold(self) -> FloatArray:
        # Shortest correct sample; queries never solved get +inf (they are never worth funding).
        return self.lengths[:, 0].copy()

    def ceiling(self) -> FloatArray:
        return self.weight * np.isfinite(self.lengths).sum(axis=1) / self.n_samples

    def saturation(self, level: float = 0.9, cap: float = 1e7) -> FloatArray:
        if not 0.0 < level <= 1.0:
            raise ValueError(f"level must be in (0, 1], got {level!r}")
        k = np.isfinite(self.lengths).sum(axis=1)
        need = np.ceil(level * k - 1e-9).astype(int)
        idx = np.clip(need - 1, 0, self.lengths.shape[1] - 1)
        out = self.lengths[np.arange(self.n), idx]
        return np.where(k > 0, np.minimum(out, cap), cap)

    def peak(self) -> FloatArray:
        k = np.isfinite(self.lengths).sum(axis=1)
        last = self.lengths[np.arange(self.n), np.maximum(k - 1, 0)]
        return np.where(k > 0, last, 0.0)

    def __getitem__(self, index: QueryIndex) -> EmpiricalCurve:
        return EmpiricalCurve.from_lengths(
            self.lengths[index],
            self.n_samples[index],
            self.weight[index],
            None if self.length_model is None else self.length_model[index],
        )

    def __repr__(self) -> str:
        return f"EmpiricalCurve(n={self.n}, samples<={self.lengths.shape[1]})"
