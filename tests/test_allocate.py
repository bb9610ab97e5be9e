"""allocate(): invariants for every policy, constraints, and optimality against the DP oracle."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowprice import (
    POLICIES,
    EmpiricalCurve,
    GammaSCurve,
    LogisticCurve,
    ShiftedSurge,
    allocate,
)
from shadowprice.solve import STATUS_INFEASIBLE, STATUS_NOT_SCARCE, STATUS_OK

ALPHA, BETA = 1.5, 0.005


def _curves(kind: str, n: int, rng: np.random.Generator):
    tau = rng.lognormal(np.log(300), 0.7, n)
    if kind == "surge":
        return ShiftedSurge(tau, ALPHA, BETA)
    if kind == "gamma":
        return GammaSCurve(tau, rng.uniform(0.003, 0.02, n), rng.uniform(0.1, 1.0, n))
    if kind == "logistic":
        return LogisticCurve(tau, rng.uniform(20, 120, n), rng.uniform(0.1, 1.0, n))
    s = 6
    lengths = np.round(tau[:, None] * rng.lognormal(0, 0.2, (n, s)))
    return EmpiricalCurve(lengths, rng.random((n, s)) < rng.uniform(0, 1, (n, 1)))


def check_invariants(a, curves, budget, *, g=1, lo=None, hi=None, floor=None):
    b = a.budgets
    assert b.dtype == np.int64 and b.shape == (curves.n,)
    assert (b >= 0).all()
    assert int(a.cost.sum()) <= budget, a
    assert (b % g == 0).all()
    np.testing.assert_array_equal(a.funded, b > 0)
    if lo is not None:
        assert (b[a.funded] >= lo).all()
    if hi is not None:
        assert (a.cost <= hi).all()
    if floor is not None:
        assert (b[np.asarray(floor) > 0] >= np.asarray(floor)[np.asarray(floor) > 0]).all()
    assert a.leftover == budget - int(a.cost.sum())
    assert np.isfinite(a.utility)


POLICY_NAMES = [p for p in POLICIES if p != "oracle"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["surge", "gamma", "logistic", "empirical"]),
    policy=st.sampled_from(list(POLICIES)),
    n=st.integers(1, 40),
    per_query=st.integers(1, 1500),
    g=st.sampled_from([1, 16, 64]),
    seed=st.integers(0, 2**16),
    limits=st.booleans(),
)
def test_invariants_hold_for_every_policy(kind, policy, n, per_query, g, seed, limits):
    rng = np.random.default_rng(seed)
    curves = _curves(kind, n, rng)
    budget = n * per_query
    kw = {}
    if limits:
        kw = {
            "min_tokens": 64,
            "max_tokens": rng.integers(300, 3000, n),
            "floor": np.where(rng.random(n) < 0.2, 64, 0),
        }
        if np.sum(np.ceil(np.maximum(kw["floor"][kw["floor"] > 0], g) / g) * g) > budget:
            kw["floor"] = np.zeros(n, int)
    if policy == "oracle" and n * budget // g > 2_000_000:
        g = 64
    a = allocate(curves, budget, policy, granularity=g, **kw)
    assert a.status in (STATUS_OK, STATUS_NOT_SCARCE), a.message
    hi = None if not limits else np.floor(kw["max_tokens"] / g) * g
    lo = None if not limits else max(64, g)
    check_invariants(a, curves, budget, g=g, lo=lo, hi=hi, floor=kw.get("floor"))
    again = allocate(curves, budget, policy, granularity=g, **kw)
    np.testing.assert_array_equal(a.budgets, again.budgets)


def _brute_force(curves, budget, grid):
    best = -1.0
    for combo in itertools.product(grid, repeat=curves.n):
        if sum(combo) <= budget:
            best = max(best, float(curves.value(np.array(combo, float)).sum()))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_oracle_is_exact_on_tiny_instances(seed):
    rng = np.random.default_rng(seed)
    curves = _curves("gamma", 4, rng)
    grid = np.arange(0, 1025, 128)
    budget = 1280
    a = allocate(curves, budget, "oracle", grid=grid, granularity=128)
    assert a.utility == pytest.approx(_brute_force(curves, budget, grid), rel=1e-12)
    assert a.utility == pytest.approx(float(curves.value(a.budgets.astype(float)).sum()))


@pytest.mark.parametrize("kind", ["surge", "gamma", "logistic", "empirical"])
def test_no_policy_beats_the_oracle_on_its_grid(kind):
    rng = np.random.default_rng(7)
    curves = _curves(kind, 60, rng)
    budget = 60 * 256
    oracle = allocate(curves, budget, "oracle", granularity=32)
    for policy in ("market", "uniform", "proportional", "greedy", "length"):
        a = allocate(curves, budget, policy, granularity=32, grid=None)
        on_grid = (a.budgets % 32 == 0).all()
        assert on_grid
        if policy == "market":
            assert a.utility <= oracle.utility + 1e-9


@pytest.mark.parametrize(
    "kind, seed", [(k, s) for k in ("surge", "gamma", "logistic", "empirical") for s in range(3)]
)
def test_market_within_one_percent_of_oracle_for_n_100(kind, seed):
    # Grid-aligned: both solve the same menus (the 64-level grid in 32-token granules).
    rng = np.random.default_rng(100 + seed)
    curves = _curves(kind, 120, rng)
    for per_query in (100, 250, 500):
        budget = 120 * per_query
        market = allocate(curves, budget, "market", granularity=32)
        oracle = allocate(curves, budget, "oracle", granularity=32)
        assert market.utility >= 0.99 * oracle.utility - 1e-9, (per_query, market, oracle)


def test_clear_matches_the_paper_mechanics():
    # Three queries, one hopeless: CLEAR abandons it and funds the others near their peaks.
    curves = ShiftedSurge(np.array([100.0, 200.0, 5000.0]), ALPHA, BETA)
    a = allocate(curves, 600, "clear")
    assert a.status == STATUS_OK and 0 < a.price < ALPHA
    assert not a.funded[2] and a.funded[:2].all()
    assert a.budgets.sum() == 600
    # Uniform spreads 200 each: one query at its threshold, one below, the third wasted.
    u = allocate(curves, 600, "uniform")
    assert u.budgets.tolist() == [200, 200, 200]
    assert a.utility > u.utility


def test_clear_not_scarce_gives_everyone_the_peak():
    curves = ShiftedSurge(np.array([100.0, 300.0]), ALPHA, BETA)
    a = allocate(curves, 10_000, "clear", leftover="keep")
    assert a.status == STATUS_NOT_SCARCE and a.price == 0.0
    np.testing.assert_array_equal(a.budgets, [300, 500])
    assert a.leftover == 10_000 - 800


def test_leftover_is_spread_as_headroom_by_default():
    curves = ShiftedSurge(np.array([100.0, 300.0, 9000.0]), ALPHA, BETA)
    kept = allocate(curves, 2000, "clear", leftover="keep", max_tokens=1500)
    spread = allocate(curves, 2000, "clear", max_tokens=1500)
    assert kept.leftover > 0 and not kept.funded[2]
    # Spread evenly over the funded queries only, within their caps, to the last token.
    assert spread.leftover == 0
    assert (spread.budgets >= kept.budgets).all() and spread.budgets[2] == 0
    assert (spread.budgets <= 1500).all()
    assert spread.info["spread_leftover"] == kept.leftover
    # Under the surge model the extra headroom is past the peak: reported utility is honest.
    assert spread.utility == pytest.approx(float(curves.value(spread.budgets.astype(float)).sum()))
    with pytest.raises(ValueError, match="leftover"):
        allocate(curves, 2000, "clear", leftover="waste")


def test_clear_sorted_and_vectorised_paths_agree():
    rng = np.random.default_rng(3)
    tau = rng.lognormal(np.log(400), 0.6, 2000)
    shared = allocate(ShiftedSurge(tau, ALPHA, BETA), 2000 * 300, "clear")
    # Per-query (equal) alpha forces the O(N)-per-step path.
    per_query = allocate(ShiftedSurge(tau, np.full(2000, ALPHA), BETA), 2000 * 300, "clear")
    assert shared.info["solver"] == "sorted prefix sums"
    assert per_query.info["solver"] == "vectorised demand"
    assert shared.price == pytest.approx(per_query.price, rel=1e-6)
    assert shared.utility == pytest.approx(per_query.utility, rel=1e-6)


def test_clear_uses_its_leftover():
    rng = np.random.default_rng(5)
    curves = ShiftedSurge(rng.lognormal(np.log(400), 0.6, 300), ALPHA, BETA)
    g = 16
    for per_query in (50, 150, 300, 600):
        a = allocate(curves, 300 * per_query, "clear", granularity=g, leftover="keep")
        b = a.budgets.astype(float)
        gain = curves.value(b + g) - curves.value(b)
        # Whatever is left cannot buy a granule that any funded query still gains from.
        assert a.leftover < g or not (gain[a.funded] > 1e-12).any(), (per_query, a)


def test_clear_close_to_oracle_and_far_above_uniform_when_scarce():
    rng = np.random.default_rng(11)
    tau = rng.lognormal(np.log(350), 0.6, 200)
    curves = ShiftedSurge(tau, ALPHA, BETA)
    budget = 200 * 150
    clear = allocate(curves, budget, "clear", granularity=16)
    oracle = allocate(curves, budget, "oracle", granularity=16, grid=np.arange(0, 2049, 16))
    uniform = allocate(curves, budget, "uniform", granularity=16)
    assert clear.utility >= 0.98 * oracle.utility
    assert clear.utility > 3 * uniform.utility


def test_floor_protects_priority_queries():
    curves = ShiftedSurge(np.array([100.0, 3000.0, 150.0]), ALPHA, BETA)
    a = allocate(curves, 800, "clear", floor=[0, 128, 0])
    assert a.funded[1] and a.budgets[1] >= 128
    assert a.budgets.sum() <= 800


def test_infeasible_floors_report_status_not_exception():
    curves = ShiftedSurge(np.array([100.0, 200.0]), ALPHA, BETA)
    for policy in POLICIES:
        a = allocate(curves, 100, policy, floor=[80, 80])
        assert a.status == STATUS_INFEASIBLE and a.budgets.sum() == 0
        assert "floor" in a.message or "budget" in a.message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": 0}, "budget"),
        ({"budget": -5}, "budget"),
        ({"budget": float("nan")}, "budget"),
        ({"budget": 10.5}, "budget"),
        ({"budget": 100, "granularity": 0}, "granularity"),
        ({"budget": 100, "max_tokens": [1, 2]}, "max_tokens"),
        ({"budget": 100, "min_tokens": -1}, "min_tokens"),
        ({"budget": 100, "policy": "magic"}, "unknown policy"),
        ({"budget": 100, "policy": "uniform", "samples": [1, 2]}, "samples"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    curves = ShiftedSurge(np.array([100.0, 200.0, 300.0]), ALPHA, BETA)
    with pytest.raises(ValueError, match=match):
        allocate(curves, **kwargs)


def test_clear_on_curves_without_closed_form_uses_the_envelope():
    rng = np.random.default_rng(2)
    curves = _curves("empirical", 50, rng)
    a = allocate(curves, 50 * 200, "clear")
    assert "menus" in a.message
    check_invariants(a, curves, 50 * 200)


def test_empirical_menu_is_exact():
    # Empirical curves only jump at sample lengths; market on them equals the oracle here.
    tokens = np.array([[120, 300], [90, 400], [500, 600]], float)
    correct = np.array([[True, True], [True, False], [True, True]])
    curves = EmpiricalCurve(tokens, correct)
    a = allocate(curves, 300, "market", leftover="keep")
    assert a.budgets.tolist() == [120, 90, 0]
    o = allocate(curves, 300, "oracle")
    assert o.utility == pytest.approx(a.utility)


def test_best_of_k_menu_chooses_samples_and_respects_budget():
    curves = GammaSCurve(
        tau=np.array([100.0, 150.0, 800.0]), beta=0.02, p=np.array([0.3, 0.4, 0.9])
    )
    a = allocate(curves, 1200, "market", samples=[1, 2, 4], granularity=16)
    assert a.samples is not None
    assert int((a.budgets * a.samples).sum()) <= 1200
    # Low-p, short queries are worth several samples; with this budget someone takes k > 1.
    assert a.samples.max() > 1
    o = allocate(curves, 1200, "oracle", samples=[1, 2, 4], granularity=16)
    assert o.utility >= a.utility - 1e-9


@pytest.mark.parametrize(
    "curves",
    [GammaSCurve(np.full(20, 300.0), 0.06, 0.9), ShiftedSurge(np.full(20, 300.0), ALPHA, BETA)],
)
def test_identical_queries_are_funded_as_far_as_the_budget_goes(curves):
    # All 20 drop out at the same price; the marginal ones must still be funded, not none.
    a = allocate(curves, 4000, "clear", leftover="keep")
    m = allocate(curves, 4000, "market", leftover="keep")
    assert 9 <= a.funded.sum() <= 12
    assert a.utility >= 0.99 * m.utility


@pytest.mark.parametrize("kind", ["surge", "gamma", "empirical"])
def test_market_subsample_bracket_matches_full_bisection(kind, monkeypatch):
    # From SUBSAMPLE_FROM queries on, the price is estimated on a subsample and bracketed on
    # the full market; the result must equal plain bisection's.
    from shadowprice.solve import envelope

    rng = np.random.default_rng(21)
    curves = _curves(kind, 6000, rng)
    budget = 6000 * 200
    fast = allocate(curves, budget, "market", leftover="keep")
    assert fast.info["subsample_price"] > 0
    monkeypatch.setattr(envelope, "SUBSAMPLE_FROM", 10**9)
    plain = allocate(curves, budget, "market", leftover="keep")
    assert plain.info["subsample_price"] == 0.0
    check_invariants(fast, curves, budget)
    assert fast.utility == pytest.approx(plain.utility, rel=1e-6)
    assert fast.price == pytest.approx(plain.price, rel=1e-6)


def test_proportional_ignores_unreachable_thresholds():
    curves = ShiftedSurge(np.array([100.0, 300.0, 1e9]), ALPHA, BETA)
    a = allocate(curves, 1200, "proportional")
    assert a.budgets[2] == 0
    assert a.budgets[1] == pytest.approx(3 * a.budgets[0], abs=3)


@pytest.mark.parametrize("seed", range(4))
def test_per_query_limits_active_set_path_matches_vectorised(seed):
    from shadowprice.solve import market
    from shadowprice.solve.constraints import make_constraints

    rng = np.random.default_rng(seed)
    n = 3000
    curves = ShiftedSurge(rng.lognormal(np.log(400), 0.7, n), ALPHA, BETA)
    caps = rng.integers(200, 3000, n)
    mins = rng.choice([0, 64, 128], n)
    floors = np.where(rng.random(n) < 0.1, 64, 0)
    for per_query in (80, 250, 600, 5000):
        cons = make_constraints(
            n, n * per_query, max_tokens=caps, min_tokens=mins, floor=floors if seed % 2 else None
        )
        fast = market.clear_surge_limits(curves, cons)
        slow = market.clear_vectorised(curves, cons)
        assert fast.scarce == slow.scarce
        assert fast.price == pytest.approx(slow.price, rel=1e-6, abs=1e-12)
        assert fast.budgets.sum() <= n * per_query
        a = allocate(
            curves,
            n * per_query,
            "clear",
            max_tokens=caps,
            min_tokens=mins,
            floor=floors if seed % 2 else None,
        )
        assert a.info["solver"] == "per-query limits, active set"
        check_invariants(
            a, curves, n * per_query, lo=None, hi=np.floor(caps), floor=floors if seed % 2 else None
        )
        assert (a.budgets[a.funded] >= np.maximum(mins[a.funded], 1)).all()


def test_protected_query_buys_its_best_funded_budget_not_its_floor():
    # At this price the surge optimum (tau + x) has a slightly negative surplus, yet it beats
    # sitting at the floor (utility 0, cost 64): a query that must be funded buys the optimum.
    from shadowprice.solve.constraints import make_constraints
    from shadowprice.solve.market import constrained_demand

    curves = ShiftedSurge(np.array([255.5]), ALPHA, BETA)
    cons = make_constraints(1, 10_000, floor=64, max_tokens=885)
    b, funded = constrained_demand(curves, 0.27, cons)
    grid = np.arange(64, 886, 0.5)
    best = grid[np.argmax(curves.value(grid[None, :])[0] - 0.27 * grid)]
    assert funded[0] and b[0] == pytest.approx(best, abs=0.5)


def test_method_names_the_solver_and_policy_stays_its_alias() -> None:
    from shadowprice import ShiftedSurge
    from shadowprice.allocate import METHODS, POLICIES

    curves = ShiftedSurge(tau=[50.0, 120.0, 400.0], alpha=1.5, beta=0.005)
    by_method = allocate(curves, 600, method="market")
    for other in (allocate(curves, 600, policy="market"), allocate(curves, 600, "market")):
        np.testing.assert_array_equal(other.budgets, by_method.budgets)
    np.testing.assert_array_equal(
        allocate(curves, 600).budgets, allocate(curves, 600, method="clear").budgets
    )
    assert POLICIES is METHODS
    with pytest.raises(ValueError, match="two solvers"):
        allocate(curves, 600, method="market", policy="clear")
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        allocate(curves, 600, method="magic")
