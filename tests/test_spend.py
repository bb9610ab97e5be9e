"""Spend-aware curves, menus and envelopes: E[min(L, b)] against Monte Carlo and brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowprice import EmpiricalCurve, GammaSCurve, ShiftedSurge, TabulatedCurve, allocate
from shadowprice.curves import EmpiricalLengths, GammaLengths, TabulatedLengths
from shadowprice.evaluate import split_half
from shadowprice.fit import ShrunkCurveFitter, fit_gamma, fit_surge
from shadowprice.solve.constraints import make_constraints
from shadowprice.solve.envelope import clear_menu, concave_envelope
from shadowprice.solve.menus import best_of_k_menu, menu_from_curve
from shadowprice.traces import load_traces

BUDGETS = np.array([0.0, 50.0, 150.0, 400.0, 2000.0, 1e5])


def test_gamma_lengths_match_monte_carlo():
    lm = GammaLengths([100.0, 300.0], [0.01, 0.002], [0.6, 0.3], [0.005, 0.001])
    rng = np.random.default_rng(0)
    n = 200_000
    for i in range(2):
        right = rng.random(n) < lm.p[i]
        L = lm.tau[i] + rng.gamma(2.0, 1.0, n) / np.where(right, lm.beta[i], lm.wrong_beta[i])
        mc_spend = np.minimum(L[:, None], BUDGETS[None, :]).mean(axis=0)
        mc_surv = (L[:, None] > BUDGETS[None, :]).mean(axis=0)
        b = np.broadcast_to(BUDGETS, (2, BUDGETS.size))
        np.testing.assert_allclose(lm.spend(b)[i], mc_spend, rtol=0.01, atol=0.5)
        np.testing.assert_allclose(lm.survival(b)[i], mc_surv, atol=0.005)


def test_gamma_curve_carries_its_own_length_law():
    c = GammaSCurve([100.0, 300.0], [0.01, 0.002], [0.6, 0.3])
    assert c.has_spend
    # Default: wrong samples as long as right ones, so survival is the correct-length law's.
    b = np.array([250.0, 900.0])
    x = b - c.tau
    np.testing.assert_allclose(c.survival(b), (1 + c.beta * x) * np.exp(-c.beta * x))
    # Spend is the integral of survival.
    grid = np.linspace(0, 900, 9001)
    surv = c.survival(np.broadcast_to(grid, (2, grid.size)))
    np.testing.assert_allclose(
        c.spend(np.full(2, 900.0)), np.trapezoid(surv, grid, axis=1), rtol=1e-4
    )
    # Subsets keep their lengths.
    np.testing.assert_allclose(c[[1]].spend(np.array([500.0])), c.spend(np.array([0, 500.0]))[1:])


def test_empirical_spend_is_replay_spend():
    t = np.array([[10, 20, np.nan], [5, 50, 500.0]])
    c = EmpiricalCurve(t, np.array([[True, False, False], [False, True, True]]))
    assert c.has_spend
    np.testing.assert_allclose(c.spend(np.array([15.0, 60.0])), [12.5, (5 + 50 + 60) / 3])
    grid = np.array([[0.0, 15.0, 1000.0], [0.0, 60.0, 1000.0]])
    np.testing.assert_allclose(c.spend(grid), [[0, 12.5, 15], [0, 115 / 3, 185]])
    np.testing.assert_allclose(c.survival(30.0), [0.0, 2 / 3])
    np.testing.assert_allclose(c[[1]].spend(100.0), [(5 + 50 + 100) / 3])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 300), min_size=1, max_size=6),
    st.lists(st.integers(0, 400), min_size=1, max_size=5),
)
def test_empirical_lengths_brute_force(lengths, budgets):
    lm = EmpiricalLengths(np.array([lengths], dtype=float))
    b = np.array([budgets], dtype=float)
    L = np.array(lengths, dtype=float)
    want = [np.minimum(L, x).mean() for x in budgets]
    np.testing.assert_allclose(lm.spend(b)[0], want)
    np.testing.assert_allclose(lm.survival(b)[0], [(L > x).mean() for x in budgets])


def test_curves_without_lengths_spend_their_cap():
    c = ShiftedSurge([100.0, 200.0])
    assert not c.has_spend
    np.testing.assert_array_equal(c.spend(np.array([30.0, 70.0])), [30.0, 70.0])
    np.testing.assert_array_equal(c.survival(np.array([30.0, 70.0])), [1.0, 1.0])
    grid = np.array([[0.0, 10.0], [0.0, 20.0]])
    np.testing.assert_array_equal(c.spend(grid), grid)
    with pytest.raises(ValueError, match="length model covers 1 queries"):
        c.with_lengths(GammaLengths([1.0], [0.1]))
    attached = c.with_lengths(GammaLengths([50.0, 60.0], [0.1, 0.1]))
    assert attached.has_spend and not c.has_spend
    assert attached[[0]].spend(np.array([1e6]))[0] == pytest.approx(70.0)


def test_tabulated_lengths_validate_and_interpolate():
    g = np.array([0.0, 10.0, 20.0])
    lm = TabulatedLengths(g, [[0.0, 10.0, 15.0]])
    np.testing.assert_allclose(lm.spend(np.array([[5.0, 15.0, 30.0]])), [[5.0, 12.5, 20.0]])
    np.testing.assert_allclose(lm.survival(np.array([[5.0, 15.0]])), [[1.0, 0.5]])
    with pytest.raises(ValueError, match="at most one token per token"):
        TabulatedLengths(g, [[0.0, 12.0, 15.0]])
    with pytest.raises(ValueError, match="survival needs spend"):
        TabulatedCurve(g, [[0.0, 0.5, 1.0]], survival=[[1.0, 0.5, 0.0]])
    c = TabulatedCurve(g, [[0.0, 0.5, 1.0]], spend=[[0.0, 10.0, 15.0]])
    assert c[[0]].has_spend


def test_shrunk_spend_predicts_held_out_spend():
    traces = load_traces("qwen25-math-math100")
    fit, score = split_half(traces, 0)
    curves = ShrunkCurveFitter().fit(fit).curves_
    assert curves.has_spend
    t = score.tokens()
    for b in (200.0, 300.0, 500.0):
        predicted = curves.spend(np.full(curves.n, b)).sum()
        actual = (np.nansum(np.minimum(t, b), axis=1) / score.n_samples()).sum()
        assert predicted == pytest.approx(actual, rel=0.05)
    # A valid length law: spend rises by at most one token per token, survival falls.
    lm = curves.length_model
    assert isinstance(lm, TabulatedLengths) and lm.surv is not None
    assert np.all(np.diff(lm.table, axis=1) >= -1e-9)
    assert np.all(np.diff(lm.surv, axis=1) <= 1e-12)
    pool = ShrunkCurveFitter().fit(fit).pool_curve(3)
    assert pool.has_spend and np.ptp(pool.spend(np.full(3, 300.0))) == 0


def test_family_fits_carry_lengths():
    fit, _ = split_half(load_traces("qwen25-math-math100"), 0)
    for curves in (fit_gamma(fit), fit_surge(fit)):
        assert curves.has_spend
        s = curves.spend(np.full(curves.n, 400.0))
        assert np.all((s > 0) & (s <= 400.0))


def test_spent_menu_costs_expected_spend_and_clears_on_it():
    traces = load_traces("qwen25-math-math100")
    curves = ShrunkCurveFitter().fit(traces).curves_
    budget = 200 * curves.n
    cons = make_constraints(curves.n, budget)
    grid = np.arange(0, 2049, 64)
    allotted = menu_from_curve(curves, cons, grid=grid)
    spent = menu_from_curve(curves, cons, grid=grid, accounting="spent")
    assert allotted.costs.dtype == np.int64 and spent.costs.dtype == np.float64
    np.testing.assert_allclose(spent.costs, curves.spend(np.broadcast_to(grid, (curves.n, 33))))
    a = clear_menu(spent, cons)
    assert a.info["expected_spend"] <= budget + 1e-6
    # Planning on spend lets caps exceed the budget (they are not all used).
    assert a.budgets.sum() > budget
    assert a.info["expected_spend"] > 0.97 * budget
    # Empirical curves: their exact breakpoint menu, costed by the samples' spend.
    emp = EmpiricalCurve(traces.tokens(), traces.correct() & ~np.isnan(traces.tokens()))
    m = menu_from_curve(emp, cons, accounting="spent")
    np.testing.assert_allclose(m.costs, emp.spend(m.budgets.astype(float)))
    k = best_of_k_menu(curves, cons, (1, 2), grid=grid, accounting="spent")
    assert np.all(np.diff(k.costs, axis=1) >= 0)


def test_allotted_allocation_unchanged_by_length_models():
    # Attaching a length model must not move an allotted allocation.
    c = GammaSCurve(np.linspace(50, 900, 40), 0.01, 0.8)
    plain = allocate(c, 8000, "market")
    lengths = c.with_lengths(GammaLengths(np.full(40, 10.0), 0.001))
    np.testing.assert_array_equal(allocate(lengths, 8000, "market").budgets, plain.budgets)


def _brute_envelope(c, v):
    hull, cur = [], 0
    while True:
        best, bs = None, -np.inf
        for j in range(cur + 1, len(c)):
            if not np.isfinite(v[j]):
                continue
            dc, dv = c[j] - c[cur], v[j] - v[cur]
            if dc <= 0:
                if dv <= 0:
                    continue
                s = np.inf
            else:
                s = dv / dc
            farther = best is not None and abs(s - bs) <= 1e-12 and c[j] > c[best]
            if s > bs + 1e-12 or farther:
                best, bs = j, s
        if best is None or bs <= 0:
            return hull
        hull.append(best)
        cur = best


def test_concave_envelope_matches_brute_force():
    rng = np.random.default_rng(1)
    n, k = 600, 11
    c = np.concatenate([np.zeros((n, 1)), np.sort(rng.integers(1, 40, (n, k - 1)), axis=1)], 1)
    v = np.concatenate([np.zeros((n, 1)), rng.random((n, k - 1))], axis=1)
    v[rng.random((n, k)) < 0.2] = 0.0
    v[:, 0] = 0.0
    mono = rng.random(n) < 0.5
    v[mono] = np.maximum.accumulate(v[mono], axis=1)
    v[rng.random((n, k)) < 0.05] = -np.inf
    v[:, 0] = 0.0
    env = concave_envelope(c.astype(float), v)
    for i in range(n):
        assert list(env.vertex[env.row(i)]) == _brute_envelope(c[i], v[i]), i
        sl = env.slope[env.row(i)]
        assert np.all(np.diff(sl) < 0) and np.all(sl > 0)


def test_text_predictor_expected_curves_carry_the_mixture_spend():
    from shadowprice.predict.threshold import expected_curves

    c = expected_curves(np.array([300.0, 800.0]), np.array([0.3, 0.5]), "gamma", beta=0.01)
    assert c.has_spend
    rng = np.random.default_rng(0)
    for i, (m, s) in enumerate([(300.0, 0.3), (800.0, 0.5)]):
        length = m * np.exp(s * rng.standard_normal(200_000)) + rng.gamma(2.0, 100.0, 200_000)
        b = np.full(2, 900.0)
        assert c.spend(b)[i] == pytest.approx(np.minimum(length, 900.0).mean(), rel=0.01)
        assert c.survival(b)[i] == pytest.approx((length > 900.0).mean(), abs=0.02)


def test_allocate_on_expected_spend() -> None:
    traces = load_traces("qwen25-math-math100")
    curves = ShrunkCurveFitter().fit(traces).curves_
    budget = 200 * curves.n
    a = allocate(curves, budget, "market", accounting="spent")
    assert a.info["accounting"] == "spent"
    assert a.spent == round(a.info["expected_spend"]) <= budget and a.leftover >= 0
    assert a.budgets.sum() > budget  # caps are not what is paid
    np.testing.assert_allclose(
        curves.spend(a.budgets.astype(float)).sum(), a.info["expected_spend"], rtol=1e-6
    )
    with pytest.raises(ValueError, match="price policies"):
        allocate(curves, budget, "uniform", accounting="spent")
    with pytest.raises(ValueError, match="accounting must be"):
        allocate(curves, budget, "market", accounting="paid")
