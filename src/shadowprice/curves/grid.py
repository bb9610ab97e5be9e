"""Budget grids: the one check for every function that takes a grid of budgets.

A *budget grid* is where curves are tabulated and solvers choose budgets: a 1-D array of
budgets in tokens that starts at 0 (abandoning a query) and ascends strictly. Allocation,
fitting, menus, tabulated curves and predicted curves all accept one, and all validate it
here, so a bad grid is refused with the same message wherever it is passed.
"""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["check_grid"]


@overload
def check_grid(
    grid: ArrayLike, *, granularity: int = ..., whole: Literal[True] = ..., name: str = ...
) -> NDArray[np.int64]: ...


@overload
def check_grid(
    grid: ArrayLike, *, granularity: int = ..., whole: Literal[False], name: str = ...
) -> NDArray[np.float64]: ...


def check_grid(
    grid: ArrayLike, *, granularity: int = 1, whole: bool = True, name: str = "grid"
) -> NDArray[np.int64] | NDArray[np.float64]:
    """Validate a budget grid and return it as an array.

    Parameters
    ----------
    grid : array_like, shape (K,)
        Budgets in tokens: 1-D, at least 2 points, finite, starting at 0, strictly
        ascending.
    granularity : int
        With ``whole``: every budget must be a multiple of this many tokens.
    whole : bool
        True: budgets must be whole numbers of tokens (returned as int64). False: any finite
        budgets (returned as float64), for curves that interpolate between grid points.
    name : str
        The argument's name, for the error message.

    Returns
    -------
    ndarray, shape (K,)
        The grid as int64 when ``whole``, else as float64.

    Raises
    ------
    ValueError
        Naming the rule the grid breaks and the values given.
    """
    g = np.asarray(grid)
    rule = f"{name} must be 1-D, finite, start at 0, ascend strictly and have at least 2 points"
    if g.ndim != 1 or g.size < 2:
        raise ValueError(f"{rule}; got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.number) or np.issubdtype(g.dtype, np.complexfloating):
        raise ValueError(f"{rule}; got values of type {g.dtype}")
    gf = g.astype(np.float64)
    if not np.all(np.isfinite(gf)) or gf[0] != 0 or np.any(np.diff(gf) <= 0):
        raise ValueError(f"{rule}; got {_show(gf)}")
    if not whole:
        return gf
    if np.any(gf != np.round(gf)):
        raise ValueError(f"{name} budgets must be whole numbers of tokens; got {_show(gf)}")
    gi = gf.astype(np.int64)
    if granularity > 1 and np.any(gi % granularity):
        raise ValueError(
            f"{name} budgets must be multiples of granularity {granularity}; got {_show(gf)}"
        )
    return gi


def _show(g: NDArray[np.float64]) -> str:
    head = ", ".join(f"{v:g}" for v in g[:6])
    return f"[{head}{', ...' if g.size > 6 else ''}]"
