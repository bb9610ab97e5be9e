"""The interface every utility curve implements.

A curve object holds the parameters of N queries at once and answers, for arrays of budgets,
how much each query gains. Budgets are in tokens (floats during solving, integers in results).
Values are in the curve's own utility units: a probability of a correct answer for the
success-probability families, the paper's latent utility for :class:`ShiftedSurge`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Self, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
#: Selects queries: a boolean mask of shape (N,), integer indices, or a slice.
QueryIndex: TypeAlias = Any


@dataclass(frozen=True)
class Demand:
    """What each query buys at one token price.

    Attributes
    ----------
    budgets : ndarray of shape (N,)
        Tokens each query demands (continuous); 0 for abandoned queries.
    funded : ndarray of bool, shape (N,)
        False where the query's best surplus is not positive (rational abandonment).
    interior : ndarray of shape (N,), optional
        The surplus-maximising budget above the threshold whether or not the query is funded:
        what a query that must be funded (a floor) buys at this price.
    """

    budgets: FloatArray
    funded: NDArray[np.bool_]
    interior: FloatArray | None = None


class LengthModel(ABC):
    """Distribution of the generated length L of N queries (tokens): what a cap spends.

    Implementations are in :mod:`shadowprice.curves.lengths`; budgets are shaped as for
    :meth:`UtilityCurve.value`.
    """

    @property
    @abstractmethod
    def n(self) -> int:
        """Number of queries."""

    def __len__(self) -> int:
        return self.n

    @abstractmethod
    def spend(self, budgets: ArrayLike) -> FloatArray:
        """Expected tokens generated under a cap, E[min(L, b)]; shape of budgets as (N,...)."""

    @abstractmethod
    def survival(self, budgets: ArrayLike) -> FloatArray:
        """P(L > b): the chance a request capped at b stops on its cap; same shapes."""

    @abstractmethod
    def __getitem__(self, index: QueryIndex) -> LengthModel:
        """The lengths of a subset of queries."""


class UtilityCurve(ABC):
    """N queries' utility as a function of their token budget.

    Subclasses store per-query parameters as arrays of shape (N,) and implement
    :meth:`value`. ``value``, :meth:`marginal`, :meth:`spend` and :meth:`survival` accept
    budgets of shape (N,) (one budget per query) or (N, K) (K budgets per query); scalars
    broadcast.

    Next to its value V(b), a curve may carry a :class:`~shadowprice.curves.LengthModel` of
    the lengths of *all* its samples (:attr:`length_model`), which gives the expected spend
    S(b) = E[min(L, b)] of a cap b under spent accounting. Without one, a cap is assumed to
    be spent in full (S(b) = b, :attr:`has_spend` False).
    """

    #: True when :meth:`demand` has a closed form (the market solver then needs no grid).
    has_closed_form_demand: bool = False
    #: Lengths of all samples (None: no length information, a cap is spent in full).
    length_model: LengthModel | None = None

    @property
    @abstractmethod
    def n(self) -> int:
        """Number of queries."""

    def __len__(self) -> int:
        return self.n

    @abstractmethod
    def value(self, budgets: ArrayLike) -> FloatArray:
        """Utility of each query at ``budgets`` tokens; ``budgets`` broadcast to (N, ...)."""

    def marginal(self, budgets: ArrayLike) -> FloatArray:
        """dU/db at ``budgets`` (utility per token). Default: central difference of one token."""
        b = np.asarray(budgets, dtype=float)
        lo = np.maximum(b - 0.5, 0.0)
        return (self.value(b + 0.5) - self.value(lo)) / (b + 0.5 - lo)

    @abstractmethod
    def threshold(self) -> FloatArray:
        """Budget below which each query gains (almost) nothing, shape (N,). Used by baselines."""

    @abstractmethod
    def ceiling(self) -> FloatArray:
        """Largest utility each query can reach, shape (N,)."""

    def saturation(self, level: float = 0.9, cap: float = 1e7) -> FloatArray:
        """Smallest budget reaching ``level`` of :meth:`ceiling`, shape (N,).

        Generic vectorised bisection over budgets; families with a closed form override it.
        Queries whose curve never reaches the level within ``cap`` tokens get ``cap``.
        """
        if not 0.0 < level <= 1.0:
            raise ValueError(f"level must be in (0, 1], got {level!r}")
        target = level * self.ceiling()
        lo = np.zeros(self.n)
        hi = np.full(self.n, float(cap))
        reached = self.value(hi) >= target - 1e-12
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            ok = self.value(mid) >= target - 1e-12
            hi = np.where(ok, mid, hi)
            lo = np.where(ok, lo, mid)
        return np.where(reached, hi, cap)

    def peak(self) -> FloatArray:
        """Budget beyond which more tokens never help, shape (N,); ``inf`` for curves that
        keep rising (saturating families)."""
        return np.full(self.n, np.inf)

    @property
    def has_spend(self) -> bool:
        """True when the curve knows its samples' lengths (:meth:`spend` is not just b)."""
        return self.length_model is not None

    def spend(self, budgets: ArrayLike) -> FloatArray:
        """Expected tokens generated by a request capped at ``budgets``, E[min(L, b)].

        Shape of ``budgets`` broadcast to (N,) or (N, K), tokens. Without a length model the
        cap itself (every request assumed to run to its cap).
        """
        if self.length_model is not None:
            return self.length_model.spend(budgets)
        b = np.asarray(budgets, dtype=float)
        return np.broadcast_to(b, (self.n,)).copy() if b.ndim <= 1 else b.copy()

    def survival(self, budgets: ArrayLike) -> FloatArray:
        """P(L > b): the chance a request capped at ``budgets`` stops on its cap.

        The slope of :meth:`spend`; same shapes. Without a length model, 1 everywhere.
        """
        if self.length_model is not None:
            return self.length_model.survival(budgets)
        b = np.asarray(budgets, dtype=float)
        return np.ones(np.broadcast_shapes(b.shape, (self.n,)) if b.ndim <= 1 else b.shape)

    def with_lengths(self, model: LengthModel | None) -> Self:
        """A copy of these curves carrying ``model`` as the lengths of their samples."""
        if model is not None and model.n != self.n:
            raise ValueError(
                f"length model covers {model.n} queries but the curves hold {self.n}; "
                f"pass one length distribution per query"
            )
        out = copy.copy(self)
        out.length_model = model
        return out

    def _keep_lengths(self, out: UtilityCurve, index: QueryIndex) -> Any:
        """``out`` (the subset ``index`` of these curves) with the same subset of lengths."""
        if self.length_model is not None:
            out.length_model = self.length_model[index]
        return out

    def demand(self, price: float) -> Demand:
        """Closed-form demand at ``price`` (utility per token). Only where
        :attr:`has_closed_form_demand` is True."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form demand")

    @abstractmethod
    def __getitem__(self, index: QueryIndex) -> UtilityCurve:
        """The curves of a subset of queries (boolean mask, integer indices or slice)."""


def as_param(
    name: str,
    value: ArrayLike,
    n: int | None = None,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    unit: bool = False,
) -> FloatArray:
    """Validate one curve parameter at the boundary and return it as a float array.

    Raises ``ValueError`` naming the parameter and the offending entry when it is not finite,
    has the wrong length, or violates its sign constraint.
    """
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {arr.shape}")
    if n is not None and arr.size not in (1, n):
        raise ValueError(
            f"{name} has {arr.size} entries but there are {n} queries; "
            f"pass one value per query or a scalar"
        )
    bad = ~np.isfinite(arr)
    if positive:
        bad |= arr <= 0
    if nonnegative:
        bad |= arr < 0
    if unit:
        bad |= (arr < 0) | (arr > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        need = (
            "positive and finite"
            if positive
            else "non-negative and finite"
            if nonnegative
            else "in [0, 1]"
            if unit
            else "finite"
        )
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r}: must be {need}")
    return arr


def broadcast_params(*params: FloatArray) -> int:
    """Number of queries implied by parameter arrays of size 1 or N."""
    sizes = {p.size for p in params if p.size != 1}
    if len(sizes) > 1:
        raise ValueError(f"per-query parameters disagree on the number of queries: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def column(param: FloatArray, budgets: FloatArray) -> FloatArray:
    """Reshape a per-query parameter so it broadcasts against budgets of shape (N,) or (N, K)."""
    if budgets.ndim >= 2 and param.size > 1:
        return param.reshape((-1,) + (1,) * (budgets.ndim - 1))
    return param
