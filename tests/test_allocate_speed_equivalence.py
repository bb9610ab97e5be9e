"""The fast allocation paths give the same allocations as the solvers before the speed work.

``_solve_before`` is a verbatim copy of the price policies ('clear' and 'market') as they were
before their passes were fused; the comparisons here are exact: the same budgets, funded
queries, samples, status and price, bit for bit.

One difference is deliberate: when several queries tie for the last spare granules of
'clear''s hand-out (equal rounding remainders, as integer thresholds make), the first rows
now get them; before, numpy's selection algorithm chose among them. On such instances the
comparison allows exactly that: granules moved between rows with the same remainder.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _solve_before import allocate as allocate_before
from _solve_before.constraints import make_constraints as make_constraints_before
from _solve_before.leftover import spread_leftover as spread_before
from shadowprice import EmpiricalCurve, GammaSCurve, LogisticCurve, ShiftedSurge, allocate
from shadowprice.curves.base import UtilityCurve
from shadowprice.curves.surge import surge_excess
from shadowprice.solve import Allocation
from shadowprice.solve.constraints import make_constraints
from shadowprice.solve.leftover import spread_leftover

ALPHA, BETA = 1.5, 0.005


def assert_same(
    curves: UtilityCurve, budget: int, policy: str, *, ties: bool = False, **kw: Any
) -> None:
    """Both implementations on the same input: identical allocations (or the same error).

    ``ties``: the instance may have queries that tie for a spare granule (see the module
    docstring); budgets may then differ by granules moved between such queries only.
    """
    try:
        old = allocate_before(curves, budget, policy, **kw)
    except ValueError as exc:
        with pytest.raises(ValueError) as new_exc:
            allocate(curves, budget, policy, **kw)
        assert str(new_exc.value) == str(exc)
        return
    new = allocate(curves, budget, policy, **kw)
    where = f"{policy} {curves!r} budget={budget} {sorted(kw)}"
    if ties and policy == "clear":
        _assert_moved_between_ties(curves, new, old, kw.get("granularity", 1), where)
    else:
        np.testing.assert_array_equal(new.budgets, old.budgets, err_msg=where)
    np.testing.assert_array_equal(new.funded, old.funded, err_msg=where)
    assert new.budgets.dtype == old.budgets.dtype == np.int64
    assert (new.samples is None) == (old.samples is None), where
    if old.samples is not None:
        np.testing.assert_array_equal(new.samples, old.samples, err_msg=where)
    assert new.status == old.status, where
    assert new.price == old.price or (np.isnan(new.price) and np.isnan(old.price)), where
    assert new.utility == pytest.approx(old.utility, rel=1e-12, abs=1e-12), where
    assert new.message == old.message, where
    assert new.spent == old.spent and new.leftover == old.leftover, where
    if "choice" in old.info:
        np.testing.assert_array_equal(new.info["choice"], old.info["choice"], err_msg=where)
        assert new.info["options"] == old.info["options"], where


def _assert_moved_between_ties(
    curves: UtilityCurve, new: Allocation, old: Allocation, g: int, where: str
) -> None:
    """Budgets equal but for single granules moved between queries whose demand at the price
    has the same remainder after rounding to the granularity (a tie for the spare granule)."""
    assert isinstance(curves, ShiftedSurge)
    diff = new.budgets - old.budgets
    moved = np.flatnonzero(diff)
    assert set(np.abs(diff[moved]).tolist()) <= {g} and diff.sum() == 0, where
    want = curves.tau[moved] + surge_excess(new.price, curves.alpha, curves.beta)
    remainder = np.round(want - g * np.floor(want / g + 1e-12), 6)
    assert np.unique(remainder).size <= 1, (where, remainder)


def _taus(rng: np.random.Generator, n: int, integer: bool) -> np.ndarray:
    tau = rng.lognormal(np.log(400), 0.6, n)
    # Integer thresholds (as query files usually hold) make many exact ties.
    return np.round(tau) if integer else tau


def _limits(rng: np.random.Generator, n: int, kind: str) -> dict[str, Any]:
    if kind == "none":
        return {}
    if kind == "scalar":
        return {"min_tokens": 96, "max_tokens": 1500, "granularity": 16}
    if kind == "caps":
        return {"max_tokens": rng.integers(300, 3000, n)}
    # Per-query everything, with some protected queries.
    return {
        "min_tokens": rng.integers(0, 200, n),
        "max_tokens": rng.integers(400, 3000, n),
        "floor": np.where(rng.random(n) < 0.1, 64, 0),
        "granularity": 8,
    }


@pytest.mark.parametrize("n", [1, 7, 300, 5000, 40_000])
@pytest.mark.parametrize("limits", ["none", "scalar", "caps", "mixed"])
@pytest.mark.parametrize("integer", [False, True])
def test_clear_on_the_surge_is_unchanged(n: int, limits: str, integer: bool) -> None:
    rng = np.random.default_rng(n + 7 * len(limits) + integer)
    curves = ShiftedSurge(_taus(rng, n, integer), ALPHA, BETA)
    kw = _limits(rng, n, limits)
    for per_query in (40, 150, 300, 700, 5000):
        for leftover in ("spread", "keep"):
            assert_same(curves, n * per_query, "clear", ties=integer, leftover=leftover, **kw)


@pytest.mark.parametrize("n", [3, 300, 6000])
@pytest.mark.parametrize("family", ["surge-per-query", "gamma", "logistic"])
def test_clear_on_other_closed_forms_is_unchanged(n: int, family: str) -> None:
    rng = np.random.default_rng(n)
    tau = _taus(rng, n, integer=False)
    curves: UtilityCurve
    if family == "surge-per-query":
        curves = ShiftedSurge(tau, rng.uniform(1.0, 2.0, n), rng.uniform(0.003, 0.01, n))
    elif family == "gamma":
        curves = GammaSCurve(tau, rng.uniform(0.003, 0.02, n), rng.uniform(0.1, 1.0, n))
    else:
        curves = LogisticCurve(tau, rng.uniform(20, 120, n), rng.uniform(0.1, 1.0, n))
    for per_query in (60, 300, 900):
        assert_same(curves, n * per_query, "clear", **_limits(rng, n, "caps"))
        assert_same(curves, n * per_query, "clear", granularity=32)


@pytest.mark.parametrize("n", [1, 50, 3000, 9000, 30_000])
@pytest.mark.parametrize("limits", ["none", "scalar", "caps", "mixed"])
@pytest.mark.parametrize("integer", [False, True])
def test_market_on_the_surge_is_unchanged(n: int, limits: str, integer: bool) -> None:
    rng = np.random.default_rng(3 * n + len(limits) + integer)
    curves = ShiftedSurge(_taus(rng, n, integer), ALPHA, BETA)
    kw = _limits(rng, n, limits)
    for per_query in (40, 300, 5000):
        assert_same(curves, n * per_query, "market", **kw)
    assert_same(curves, n * 300, "market", leftover="keep", levels=16, **kw)


@pytest.mark.parametrize("family", ["gamma", "logistic", "empirical", "surge-per-query"])
@pytest.mark.parametrize("n", [40, 5000])
def test_market_on_other_curves_is_unchanged(family: str, n: int) -> None:
    rng = np.random.default_rng(n + len(family))
    tau = _taus(rng, n, integer=False)
    curves: UtilityCurve
    if family == "gamma":
        curves = GammaSCurve(tau, rng.uniform(0.003, 0.02, n), rng.uniform(0.1, 1.0, n))
    elif family == "logistic":
        curves = LogisticCurve(tau, rng.uniform(20, 120, n), rng.uniform(0.1, 1.0, n))
    elif family == "empirical":
        lengths = np.round(tau[:, None] * rng.lognormal(0, 0.2, (n, 6)))
        curves = EmpiricalCurve(lengths, rng.random((n, 6)) < rng.uniform(0, 1, (n, 1)))
    else:
        curves = ShiftedSurge(tau, rng.uniform(1.0, 2.0, n), rng.uniform(0.003, 0.01, n))
    for per_query in (60, 300, 900):
        assert_same(curves, n * per_query, "market", granularity=16)
        assert_same(curves, n * per_query, "market", **_limits(rng, n, "mixed"))


def test_market_with_samples_and_spent_accounting_is_unchanged() -> None:
    rng = np.random.default_rng(4)
    n = 400
    curves = GammaSCurve(_taus(rng, n, False), rng.uniform(0.003, 0.02, n), 1.0)
    for per_query in (100, 400, 1500):
        assert_same(curves, n * per_query, "market", samples=[1, 2, 4])
        assert_same(curves, n * per_query, "clear", accounting="spent")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["clear", "market"]),
    n=st.integers(1, 300),
    per_query=st.integers(1, 3000),
    g=st.sampled_from([1, 1, 7, 64]),
    seed=st.integers(0, 2**32 - 1),
    integer=st.booleans(),
    limits=st.sampled_from(["none", "scalar", "caps", "mixed"]),
    leftover=st.sampled_from(["spread", "keep"]),
)
def test_random_surge_instances_are_unchanged(
    policy: str,
    n: int,
    per_query: int,
    g: int,
    seed: int,
    integer: bool,
    limits: str,
    leftover: str,
) -> None:
    rng = np.random.default_rng(seed)
    curves = ShiftedSurge(_taus(rng, n, integer), ALPHA, BETA)
    kw = _limits(rng, n, limits)
    kw["granularity"] = g
    assert_same(curves, n * per_query, policy, ties=integer, leftover=leftover, **kw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["clear", "market"]),
    taus=st.lists(st.sampled_from([0.0, 1.0, 50.0, 199.5, 200.0, 400.0, 1e4]), min_size=1),
    budget=st.integers(1, 20_000),
    g=st.sampled_from([1, 3, 64]),
    cap=st.sampled_from([None, 64, 250, 10_000]),
)
def test_degenerate_surge_instances_are_unchanged(
    policy: str, taus: list[float], budget: int, g: int, cap: int | None
) -> None:
    # Many equal thresholds, zero thresholds, caps at or below a granule.
    curves = ShiftedSurge(np.asarray(taus), ALPHA, BETA)
    assert_same(curves, budget, policy, ties=True, granularity=g, max_tokens=cap)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    n=st.integers(1, 400),
    per_query=st.integers(1, 3000),
    step=st.sampled_from([1, 2, 16, 64, 250]),
    levels=st.integers(2, 300),
    alpha=st.sampled_from([0.5, 1.5, 40.0]),
    beta=st.sampled_from([1e-4, 0.005, 0.05, 0.5]),
    seed=st.integers(0, 2**32 - 1),
    limits=st.sampled_from(["none", "scalar"]),
    f32=st.booleans(),
)
def test_market_on_any_surge_grid_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    per_query: int,
    step: int,
    levels: int,
    alpha: float,
    beta: float,
    seed: int,
    limits: str,
    f32: bool,
) -> None:
    # Fine and coarse grids, flat and sharp surges, float32 and float64 tables: the market
    # on the options a price can pick chooses as on the whole table.
    for module in ("shadowprice.allocate", "_solve_before.allocate"):
        monkeypatch.setattr(sys.modules[module], "LARGE_MENU", 0 if f32 else 10**12)
    rng = np.random.default_rng(seed)
    curves = ShiftedSurge(rng.lognormal(np.log(400), 0.8, n), alpha, beta)
    grid = np.arange(levels) * step
    kw = {"min_tokens": 2 * step, "max_tokens": step * levels // 2} if limits == "scalar" else {}
    assert_same(curves, n * per_query, "market", grid=grid, **kw)
    assert_same(curves, n * per_query, "market", levels=levels, **kw)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    n=st.sampled_from([1, 2, 17, 300, 5000]),
    budget_per_query=st.sampled_from([0.0, 0.01, 0.5, 40.0, 300.0, 900.0, 5000.0]),
    tied=st.sampled_from(["few", "integer", "no"]),
    g=st.sampled_from([1, 7, 64]),
    limits=st.sampled_from(["none", "scalar", "caps", "mixed"]),
    step=st.sampled_from([None, 1, 16, 111, 4096]),
    f32=st.booleans(),
    leftover=st.sampled_from(["spread", "keep"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_market_matches_the_solver_before_on_random_markets(
    monkeypatch: pytest.MonkeyPatch,
    n: int,
    budget_per_query: float,
    tied: str,
    g: int,
    limits: str,
    step: int | None,
    f32: bool,
    leftover: str,
    seed: int,
) -> None:
    # The market as the solver before the speed work priced it: ties (thresholds drawn from
    # a few values, integer thresholds) and fractional thresholds, no budget at all, caps
    # and floors, coarse granularity, grids whose top a lookup table covers and grids far
    # past it (counted by binary search), float32 and float64 tables, and markets large
    # enough to be priced on a subsample first.
    for module in ("shadowprice.allocate", "_solve_before.allocate"):
        monkeypatch.setattr(sys.modules[module], "LARGE_MENU", 0 if f32 else 10**12)
    rng = np.random.default_rng(seed)
    if tied == "few":
        tau = rng.choice([0.0, 1.0, 250.0, 400.0, 1e4], n)
    else:
        tau = _taus(rng, n, integer=tied == "integer")
    curves = ShiftedSurge(tau, ALPHA, BETA)
    kw = _limits(rng, n, limits)
    kw["granularity"] = g
    if step is not None:
        kw["grid"] = np.arange(0, 300) * step * g
    assert_same(curves, int(n * budget_per_query), "market", leftover=leftover, **kw)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("extra", [1, 37, 5_000, 2_000_000])
def test_spreading_the_leftover_is_unchanged(seed: int, extra: int) -> None:
    # Leftovers of a few granules up to several per query (share > 1, caps that fill up and
    # end the rounds), spread by both versions from the same allocation.
    rng = np.random.default_rng(seed)
    n = 2_000
    curves = ShiftedSurge(_taus(rng, n, integer=bool(seed % 2)), ALPHA, BETA)
    caps = rng.integers(300, 3000, n)
    g = (1, 8)[seed % 2]
    kept = allocate(curves, 250 * n, "market", max_tokens=caps, granularity=g, leftover="keep")
    alloc = replace(kept, budget=kept.budget + extra)
    limits: dict[str, Any] = {"max_tokens": caps, "granularity": g}
    new = spread_leftover(curves, alloc, make_constraints(n, alloc.budget, **limits))
    old = spread_before(curves, alloc, make_constraints_before(n, alloc.budget, **limits))
    np.testing.assert_array_equal(new.budgets, old.budgets)
    assert new.utility == old.utility and new.message == old.message and new.info == old.info


@pytest.mark.parametrize("f32", [False, True])
def test_market_on_budgets_past_float32_integers_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, f32: bool
) -> None:
    # Budgets above 2**24 that float32 cannot hold exactly: the compact menu's costs come
    # from the integer grid there, not from the table's budgets.
    for module in ("shadowprice.allocate", "_solve_before.allocate"):
        monkeypatch.setattr(sys.modules[module], "LARGE_MENU", 0 if f32 else 10**12)
    rng = np.random.default_rng(7)
    n = 5_000
    curves = ShiftedSurge(rng.lognormal(np.log(2e7), 0.3, n), ALPHA, 5e-8)
    grid = np.arange(300) * 262_147
    assert not np.array_equal(grid.astype(np.float32).astype(np.int64), grid)
    assert_same(curves, n * 30_000_000, "market", grid=grid)
    assert_same(curves, n * 30_000_000, "market", grid=grid * 7, granularity=7)
