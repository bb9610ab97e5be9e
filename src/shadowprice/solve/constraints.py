"""Per-query limits every policy respects, validated once at the boundary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..limits import MAX_BUDGET, check_budget

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Constraints:
    """Integer limits on each query's budget, all multiples of ``granularity``.

    A query is either abandoned (budget 0) or funded with ``lo[i] <= budget <= hi[i]``.
    Protected queries (a positive ``floor``) are never abandoned.

    Attributes
    ----------
    budget : int
        Total tokens B.
    granularity : int
        Every budget is a multiple of this many tokens.
    lo : ndarray of int64, shape (N,)
        Smallest budget of a funded query: max(min_tokens, floor, granularity), rounded up.
    hi : ndarray of int64, shape (N,)
        Largest budget: min(max_tokens, B), rounded down.
    protected : ndarray of bool, shape (N,)
        Queries that must be funded (floor > 0).

    Limits given as scalars are stored as read-only broadcast views of one value (no N-sized
    copies); :attr:`scalar_limits` then answers without looking at N entries.
    """

    budget: int
    granularity: int
    lo: IntArray
    hi: IntArray
    protected: NDArray[np.bool_]

    @property
    def n(self) -> int:
        """Number of queries N."""
        return int(self.lo.size)

    @property
    def uniform_limits(self) -> bool:
        """True when lo and hi are the same for every query and nobody is protected."""
        if self.scalar_limits is not None:
            return True
        return (
            self.n == 0
            or (bool((self.lo == self.lo[0]).all()) and bool((self.hi == self.hi[0]).all()))
        ) and not self.protected.any()

    @property
    def scalar_limits(self) -> tuple[int, int] | None:
        """(lo, hi) when the limits were given as one value for every query and nobody is
        protected (the arrays are broadcast views); None otherwise, even if they happen to
        be equal."""
        arrays = (self.lo, self.hi, self.protected)
        if self.n == 0 or any(a.strides != (0,) for a in arrays) or self.protected[0]:
            return None
        return int(self.lo[0]), int(self.hi[0])

    @property
    def committed(self) -> int:
        """Tokens the protected queries need at the least."""
        return int(self.lo[self.protected].sum())

    def round_down(self, budgets: ArrayLike) -> IntArray:
        """Snap continuous budgets onto the allowed set: 0 or a multiple of g in [lo, hi].

        Parameters
        ----------
        budgets : array_like, shape (N,)
            Non-negative continuous budgets in tokens.

        Returns
        -------
        ndarray of int64, shape (N,)
            Rounded down to the granularity and capped at hi; below lo becomes 0 (or lo for
            protected queries).
        """
        g = self.granularity
        # The small epsilon keeps 127.9999999 (float noise) from dropping a whole granule;
        # truncation is floor for the non-negative budgets here.
        b = np.add(budgets, 1e-9, dtype=float)
        if g != 1:
            np.floor(np.divide(b, g, out=b), out=b)
            b *= g
        scalar = self.scalar_limits
        np.minimum(b, self.hi if scalar is None else float(scalar[1]), out=b)
        out = b.astype(np.int64)
        if scalar is None and self.protected.any():
            below = out < self.lo
            out[below] = np.where(self.protected[below], self.lo[below], 0)
        else:
            # Zero the budgets below lo by a product (a masked store costs three times more).
            out *= out >= (self.lo if scalar is None else scalar[0])
        return out

    def subset(self, index: Any) -> Constraints:
        """The limits of a subset of queries.

        Parameters
        ----------
        index : bool mask, int indices or slice
            Which queries.

        Returns
        -------
        Constraints
            The same total budget and granularity; the subset's limits.
        """
        return Constraints(
            self.budget, self.granularity, self.lo[index], self.hi[index], self.protected[index]
        )


def _same(n: int, value: Any) -> NDArray[Any]:
    """One value for each of n queries, as a read-only view (no N-sized allocation)."""
    return np.broadcast_to(np.asarray(value), (n,))


def _per_query(name: str, value: ArrayLike | None, n: int, default: float) -> NDArray[np.float64]:
    if value is None:
        return np.full(n, default)
    arr = np.asarray(value, dtype=float)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != n):
        raise ValueError(
            f"{name} must be a scalar or have one entry per query ({n}), got shape {arr.shape}"
        )
    # A cap may be infinite (no cap); a floor or minimum must be a real token count.
    top = np.inf if name == "max_tokens" else MAX_BUDGET
    bad = np.isnan(arr) | (arr < 0) | (arr > top)
    if bad.any():
        i = int(np.flatnonzero(np.atleast_1d(bad))[0])
        v = np.atleast_1d(arr)[i]
        where = f"{name}[{i}]" if arr.ndim else name
        raise ValueError(
            f"{where} = {float(v)!r}: must be a number of tokens from 0 to {MAX_BUDGET:.0e}"
        )
    return np.full(n, float(arr)) if arr.ndim == 0 else arr


def _limit_error(what: str, lo: int, hi: int, capped: bool, budget: int, g: int) -> ValueError:
    """Why a query's smallest budget cannot fit under its largest, in the user's terms."""
    top = f"max_tokens {hi}" if capped else f"the budget {budget}"
    fix = "raise max_tokens or lower the floor" if capped else "raise the budget or lower it"
    rounding = f" (after rounding to granularity {g})" if g > 1 else ""
    return ValueError(f"{what} {lo} exceeds {top}{rounding}; {fix}")


def make_constraints(
    n: int,
    budget: float,
    *,
    min_tokens: ArrayLike | None = None,
    max_tokens: ArrayLike | None = None,
    granularity: int = 1,
    floor: ArrayLike | None = None,
) -> Constraints:
    """Validate the user's limits for ``n`` queries and return :class:`Constraints`.

    Parameters
    ----------
    n : int
        Number of queries.
    budget : int
        Total tokens B > 0 (a float is accepted if it is a whole number).
    min_tokens : int or array (N,), optional
        Smallest useful budget of a funded query (shorter caps are worthless, e.g. the length
        of the answer format). Abandoned queries still get 0.
    max_tokens : int or array (N,), optional
        Cap per query (e.g. the model's context limit). Default: B.
    granularity : int, default 1
        Budgets are multiples of this (e.g. 64 for KV-cache pages).
    floor : int or array (N,), optional
        Tokens guaranteed to each query whatever the price; a positive floor means the query
        must not be abandoned (priority traffic).

    Returns
    -------
    Constraints
        Limits rounded onto the granularity: lo up, hi down.

    Raises
    ------
    ValueError
        Naming the field: a budget that is not a positive whole number, a granularity below
        1, a negative or NaN limit, a limit with the wrong length, or a protected query whose
        floor exceeds its cap.
    """
    B = check_budget(budget)
    if (
        isinstance(granularity, bool)
        or not isinstance(granularity, int | np.integer)
        or not 1 <= granularity <= MAX_BUDGET
    ):
        raise ValueError(
            f"granularity = {granularity!r}: must be a positive whole number of tokens"
        )
    g = int(granularity)
    if all(v is None or np.ndim(v) == 0 for v in (min_tokens, max_tokens, floor)):
        # Scalar limits (the common case): validate once, allocate three arrays.
        lo_s, hi_s, fl = (
            float(_per_query(name, v, 1, d)[0])
            for name, v, d in (
                ("min_tokens", min_tokens, 0.0),
                ("max_tokens", max_tokens, float(B)),
                ("floor", floor, 0.0),
            )
        )
        lo1 = int(np.ceil(max(lo_s, fl, g) / g)) * g
        hi1 = int(np.floor(min(hi_s, B) / g)) * g
        if lo1 > hi1 and (fl > 0 or lo_s > 0):
            # Nobody could be funded: an error, not an allocation that abandons everyone.
            what = "floor" if fl >= lo_s else "min_tokens"
            raise _limit_error(what, lo1, hi1, max_tokens is not None and hi_s <= B, B, g)
        return Constraints(B, g, _same(n, np.int64(lo1)), _same(n, np.int64(hi1)), _same(n, fl > 0))
    mins = _per_query("min_tokens", min_tokens, n, 0.0)
    maxs = _per_query("max_tokens", max_tokens, n, float(B))
    floors = _per_query("floor", floor, n, 0.0)
    lo = (np.ceil(np.maximum(np.maximum(mins, floors), g) / g) * g).astype(np.int64)
    hi = (np.floor(np.minimum(maxs, B) / g) * g).astype(np.int64)
    protected = floors > 0
    bad = protected & (lo > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        capped = max_tokens is not None and bool(maxs[i] <= B)
        err = _limit_error("floor", int(lo[i]), int(hi[i]), capped, B, g)
        raise ValueError(f"query {i}: {err}")
    return Constraints(B, g, lo, hi, protected)
