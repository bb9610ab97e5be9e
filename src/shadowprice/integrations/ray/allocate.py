"""Allocate a Ray Data dataset: one clearing price over all its blocks, budgets on each row.

The rows never come to the driver: each block becomes a shard
(:class:`~shadowprice.solve.sharded.Shard`) in Ray's object store, the driver runs
:func:`~shadowprice.solve.sharded.clear_sharded` with remote tasks on the shards (counts,
exact sums and a few rows per round trip), and each block gets its ``max_tokens`` and
``funded`` columns where it lives.

Columns read (the ``surge`` family, as in ``shadowprice allocate`` query files):

==========  ========================================================================
``tau``     emergence threshold of the query, tokens (required; finite, >= 0)
``alpha``   the surge's gain (optional; must be the same in every row)
``beta``    the surge's decay, 1/tokens (optional; must be the same in every row)
==========  ========================================================================

Every other column is carried through untouched. The limits (``min_tokens``,
``max_tokens``, ``granularity``) are arguments shared by all rows.

What is refused rather than approximated: policies other than 'clear', curve families other
than the surge, per-row ``alpha``/``beta`` that differ, per-row limit columns, ``floor``, and
``accounting='spent'``. In one process these take paths whose demand is a float sum over all
queries in one order, which a split dataset cannot reproduce bit for bit; run them with
:func:`shadowprice.allocate` on one machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import pyarrow as pa
import ray
import ray.data

from ...solve.leftover import LEFTOVER_MODES
from ...solve.sharded import Market, Shard, ShardedAllocation, clear_sharded, make_shard

R = TypeVar("R")

#: Columns that hold the surge's parameters, with what each must be.
PARAMETER_COLUMNS: dict[str, str] = {
    "tau": "emergence threshold in tokens (required; a finite number >= 0)",
    "alpha": "gain (optional; positive, the same in every row; default: the alpha argument)",
    "beta": "decay in 1/tokens (optional; positive, the same in every row; default: beta)",
}
#: Columns the allocation adds.
OUTPUT_COLUMNS = ("max_tokens", "funded")
#: Per-row limit columns of query files, which a split dataset cannot honour exactly.
LIMIT_COLUMNS = ("floor", "min_tokens", "max_tokens")


@dataclass(frozen=True)
class DatasetAllocation:
    """A dataset with its budgets, and the allocation's summary.

    Attributes
    ----------
    dataset : ray.data.Dataset
        The input rows in their order, each with ``max_tokens`` (int64 tokens; 0 means
        abandoned: do not send) and ``funded`` (bool).
    allocation : ShardedAllocation
        Price, funded and abandoned counts, tokens spent and left over, expected utility,
        status, message; ``summary()`` gives the keys of ``Allocation.summary()``.
    """

    dataset: ray.data.Dataset
    allocation: ShardedAllocation


class _RayShards:
    """A :class:`~shadowprice.solve.sharded.ShardMap` over shards held in Ray's object store:
    each map is one remote task per shard; the new shards stay in the store."""

    def __init__(self, refs: list[ray.ObjectRef]) -> None:
        self.refs = refs

    def map(self, fn: Callable[..., tuple[Shard, R]], *args: Any) -> list[R]:
        pairs = [_on_shard.remote(fn, ref, *args) for ref in self.refs]
        self.refs = [p[0] for p in pairs]
        return ray.get([p[1] for p in pairs])


@ray.remote(num_returns=2)
def _on_shard(fn: Callable[..., tuple[Shard, Any]], shard: Shard, *args: Any) -> tuple[Shard, Any]:
    return fn(shard, *args)


@ray.remote
def _inspect(table: pa.Table) -> tuple[int, list[str], dict[str, tuple[float, float]]]:
    """Rows, column names, and (min, max) of the parameter columns other than tau."""
    spans = {}
    for name in ("alpha", "beta"):
        if name in table.column_names and table.num_rows:
            col = _floats(table, name)
            spans[name] = (float(np.min(col)), float(np.max(col)))
    return table.num_rows, table.column_names, spans


@ray.remote
def _make_shard(table: pa.Table, offset: int, market: Market) -> Shard | str:
    """The block's shard, or a message naming the first bad row (global) and the fix."""
    try:
        tau = _floats(table, "tau")
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        return f"column 'tau' must hold numbers ({exc})"
    bad = ~np.isfinite(tau) | (tau < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return f"row {offset + i}: column 'tau' must be a finite number >= 0, got {tau[i]!r}"
    return make_shard(tau, offset, market)


@ray.remote
def _with_budgets(table: pa.Table, shard: Shard) -> pa.Table:
    table = table.append_column("max_tokens", pa.array(shard.budgets, pa.int64()))
    return table.append_column("funded", pa.array(shard.funded, pa.bool_()))


def _floats(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        i = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"row {i} of the block has no {name}")
    return np.asarray(col.to_numpy(), dtype=float)


def _refuse(policy: str, family: str, floor: float | None, accounting: str, leftover: str) -> None:
    """Raise naming what cannot be split across blocks exactly (see the module docstring)."""
    one_machine = "allocate with shadowprice.allocate on one machine"
    if policy != "clear":
        raise ValueError(
            f"policy {policy!r} cannot be split across a dataset's blocks exactly (its "
            f"solver sums float demands over all queries in one order); use policy='clear', "
            f"or {one_machine}"
        )
    if family != "surge":
        raise ValueError(
            f"family {family!r} cannot be split across blocks exactly (its clearing sums "
            f"float demands over all queries in one order); use family='surge', or "
            f"{one_machine}"
        )
    if floor:
        raise ValueError(
            f"floor={floor!r} protects every query, which takes the per-query-limits "
            f"clearing: it cannot be split across blocks exactly; drop floor, or {one_machine}"
        )
    if accounting != "allotted":
        raise ValueError(
            f"accounting={accounting!r} cannot be split across blocks exactly (it clears on "
            f"expected spend over menus); use accounting='allotted', or {one_machine}"
        )
    if leftover not in LEFTOVER_MODES:
        raise ValueError(f"leftover must be one of {LEFTOVER_MODES}, got {leftover!r}")


def _shape(
    spans: list[dict[str, tuple[float, float]]], alpha: float, beta: float
) -> tuple[float, float]:
    """alpha and beta: the columns' one value where the dataset has them, else the
    arguments; refused when a column's rows disagree."""
    out = {"alpha": alpha, "beta": beta}
    for name in out:
        found = [s[name] for s in spans if name in s]
        if not found:
            continue
        lo, hi = min(f[0] for f in found), max(f[1] for f in found)
        if lo != hi:
            raise ValueError(
                f"column {name!r} differs between rows ({lo!r} to {hi!r}): per-query {name} "
                f"cannot be split across blocks exactly; give every row the same {name}, or "
                f"allocate with shadowprice.allocate on one machine"
            )
        if not (math.isfinite(lo) and lo > 0):
            raise ValueError(f"column {name!r} must be a finite positive number, got {lo!r}")
        out[name] = lo
    return out["alpha"], out["beta"]


def price_dataset(
    ds: ray.data.Dataset,
    budget: int,
    policy: str = "clear",
    *,
    family: str = "surge",
    alpha: float = 1.5,
    beta: float = 0.005,
    min_tokens: float | None = None,
    max_tokens: float | None = None,
    granularity: int = 1,
    floor: float | None = None,
    leftover: str = "spread",
    accounting: str = "allotted",
) -> DatasetAllocation:
    """Allocate ``ds`` (see :func:`allocate_dataset`) and return it with the allocation's
    summary (price, counts, tokens spent, message).

    Parameters and errors as :func:`allocate_dataset`, whose options are this function's
    keywords.
    """
    _refuse(policy, family, floor, accounting, leftover)
    # The limits' own checks, before any work on the blocks.
    Market(alpha, beta, int(budget), granularity, min_tokens, max_tokens).constraints(1)
    tables = ds.to_arrow_refs()
    inspected = ray.get([_inspect.remote(t) for t in tables])
    n = sum(rows for rows, _, _ in inspected)
    columns = inspected[0][1] if inspected else ds.columns() or []
    if n == 0:
        raise ValueError("the dataset has no rows: nothing to allocate")
    if "tau" not in columns:
        raise ValueError(
            f"column 'tau' is missing (the surge family needs each query's threshold); the "
            f"dataset has columns {columns}"
        )
    for name in LIMIT_COLUMNS:
        if name in columns:
            raise ValueError(
                f"column {name!r}: per-row limits cannot be split across blocks exactly; "
                f"drop or rename the column and pass {name}= for every row, or allocate with "
                f"shadowprice.allocate on one machine"
            )
    taken = [c for c in OUTPUT_COLUMNS if c in columns]
    if taken:
        raise ValueError(f"the dataset already has column(s) {taken}: rename them first")
    a, b = _shape([s for _, _, s in inspected], alpha, beta)
    market = Market(a, b, int(budget), granularity, min_tokens, max_tokens)
    offsets = np.concatenate([[0], np.cumsum([rows for rows, _, _ in inspected])])[:-1]
    made = [_make_shard.remote(t, int(o), market) for t, o in zip(tables, offsets, strict=True)]
    problems = [m for m in ray.get(made) if isinstance(m, str)]
    if problems:
        raise ValueError(problems[0])
    shards = _RayShards(made)
    result = clear_sharded(shards, market, leftover=leftover)
    out = [_with_budgets.remote(t, s) for t, s in zip(tables, shards.refs, strict=True)]
    # Ray's stubs name two ObjectRef classes; the remote calls return the one it takes.
    return DatasetAllocation(ray.data.from_arrow_refs(cast(Any, out)), result)


def allocate_dataset(
    ds: ray.data.Dataset, budget: int, policy: str = "clear", **options: Any
) -> ray.data.Dataset:
    """Split ``budget`` tokens across the queries of a Ray dataset, one price for all.

    The same budgets as :func:`shadowprice.allocate` on the same rows in one process, bit
    for bit, with the rows left in their blocks (see the module docstring).

    Parameters
    ----------
    ds : ray.data.Dataset
        One query per row, with a ``tau`` column (and optionally ``alpha``, ``beta``:
        :data:`PARAMETER_COLUMNS`). It is materialised once.
    budget : int
        Total tokens B > 0 shared by all rows.
    policy : str
        'clear' (the only policy that splits exactly).
    **options
        The keyword options of :func:`price_dataset`: ``family`` ('surge', the only
        family that splits exactly), ``alpha`` and ``beta`` (the surge's shape where the
        dataset has no such column), ``min_tokens`` and ``max_tokens`` (limits of a funded
        query, the same for every row), ``granularity``, ``leftover`` ('spread' or 'keep', as
        for :func:`shadowprice.allocate`); ``floor`` > 0 and ``accounting='spent'`` are
        refused (see the module docstring).

    Returns
    -------
    ray.data.Dataset
        The rows in their order with two more columns: ``max_tokens`` (int64; 0 =
        abandoned, do not send) and ``funded`` (bool).

    Raises
    ------
    ValueError
        Naming the argument or column: what cannot be split exactly, a missing or bad
        ``tau`` (with its row), rows whose ``alpha`` or ``beta`` differ, per-row limit
        columns, output columns that already exist, an empty dataset, bad limits.
    """
    return price_dataset(ds, budget, policy, **options).dataset
