"""Curve families: known answers from the CLEAR paper and consistency of value, marginal, demand."""

import numpy as np
import pytest

from shadowprice import EmpiricalCurve, GammaSCurve, LogisticCurve, ShiftedSurge, TabulatedCurve
from shadowprice.curves import abandonment_threshold, surge_excess

ALPHA, BETA = 1.5, 0.005


def test_surge_peak_known_answer():
    c = ShiftedSurge(tau=200, alpha=ALPHA, beta=BETA)
    assert c.peak()[0] == pytest.approx(400.0)
    assert c.ceiling()[0] == pytest.approx(110.36, abs=0.01)
    assert c.value(np.array([400.0]))[0] == pytest.approx(110.36, abs=0.01)
    assert c.value(np.array([200.0]))[0] == 0.0
    assert c.value(np.array([150.0]))[0] == 0.0


@pytest.mark.parametrize("lam, t, x", [(0.1, 919.9, 169.0), (0.5, 82.3, 93.6), (1.0, 9.1, 38.4)])
def test_abandonment_threshold_and_excess_known_answers(lam, t, x):
    assert abandonment_threshold(lam, ALPHA, BETA) == pytest.approx(t, abs=0.1)
    assert surge_excess(lam, ALPHA, BETA) == pytest.approx(x, abs=0.1)


def test_surge_excess_limits():
    assert surge_excess(0.0, ALPHA, BETA) == pytest.approx(1 / BETA)
    assert surge_excess(ALPHA, ALPHA, BETA) == 0.0
    assert abandonment_threshold(0.0, ALPHA, BETA) == np.inf
    assert abandonment_threshold(2 * ALPHA, ALPHA, BETA) == 0.0


def test_surge_demand_is_stationary_and_surplus_sign_matches_funding():
    tau = np.array([0.0, 50.0, 200.0, 900.0, 5000.0])
    c = ShiftedSurge(tau, ALPHA, BETA)
    for lam in (0.05, 0.1, 0.5, 1.0):
        d = c.demand(lam)
        funded = d.funded
        # Marginal utility equals the price at a funded query's budget.
        np.testing.assert_allclose(c[funded].marginal(d.budgets[funded]), lam, rtol=1e-6)
        # Funded exactly where the best surplus is positive.
        surplus = c.value(c.tau + surge_excess(lam, ALPHA, BETA)) - lam * (
            c.tau + surge_excess(lam, ALPHA, BETA)
        )
        np.testing.assert_array_equal(funded, surplus > 0)
        np.testing.assert_allclose(c.surplus(lam), surplus, rtol=1e-9, atol=1e-9)


def test_surge_brute_force_demand_matches_closed_form():
    c = ShiftedSurge(np.array([100.0, 400.0, 800.0]), ALPHA, BETA)
    b = np.arange(0, 3000, 0.5)
    for lam in (0.08, 0.3, 0.9):
        d = c.demand(lam)
        s = c.value(np.broadcast_to(b, (3, b.size))) - lam * b
        best = b[np.argmax(s, axis=1)]
        best = np.where(s.max(axis=1) > 0, best, 0.0)
        np.testing.assert_allclose(d.budgets, best, atol=0.5)


def test_surge_saturation_on_rising_side():
    c = ShiftedSurge(np.array([100.0, 300.0]), ALPHA, BETA)
    s = c.saturation(0.9)
    np.testing.assert_allclose(c.value(s), 0.9 * c.ceiling(), rtol=1e-9)
    assert np.all(s < c.peak())


def test_gamma_value_marginal_and_demand():
    c = GammaSCurve(tau=[100.0, 300.0], beta=0.01, p=[0.9, 0.5])
    assert np.allclose(c.value(np.array([100.0, 300.0])), 0.0)
    assert np.allclose(c.value(np.array([1e6, 1e6])), [0.9, 0.5])
    b = np.array([250.0, 500.0])
    num = (c.value(b + 0.01) - c.value(b - 0.01)) / 0.02
    np.testing.assert_allclose(c.marginal(b), num, rtol=1e-5)
    grid = np.arange(0, 5000, 1.0)
    for lam in (1e-4, 5e-4, 2e-3):
        d = c.demand(lam)
        s = c.value(np.broadcast_to(grid, (2, grid.size))) - lam * grid
        best = np.where(s.max(axis=1) > 0, grid[np.argmax(s, axis=1)], 0.0)
        np.testing.assert_allclose(d.budgets, best, atol=1.0)


def test_logistic_is_zero_at_zero_and_saturates_at_p():
    c = LogisticCurve(mu=[300.0, 50.0], scale=[40.0, 10.0], p=[0.8, 1.0])
    np.testing.assert_allclose(c.value(np.zeros(2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(c.value(np.full(2, 1e5)), [0.8, 1.0], rtol=1e-9)
    b = np.array([280.0, 55.0])
    num = (c.value(b + 0.01) - c.value(b - 0.01)) / 0.02
    np.testing.assert_allclose(c.marginal(b), num, rtol=1e-5)


def test_empirical_curve_is_hard_cap_accuracy():
    tokens = np.array([[100, 200, 300, np.nan], [50, 60, 70, 80]])
    correct = np.array([[True, False, True, False], [False, False, False, False]])
    c = EmpiricalCurve(tokens, correct)
    np.testing.assert_allclose(c.value(np.array([99.0, 1e9])), [0.0, 0.0])
    np.testing.assert_allclose(c.value(np.array([100.0, 0.0])), [1 / 3, 0.0])
    np.testing.assert_allclose(c.value(np.array([300.0, 0.0])), [2 / 3, 0.0])
    np.testing.assert_allclose(c.ceiling(), [2 / 3, 0.0])
    assert c.threshold()[0] == 100 and np.isinf(c.threshold()[1])
    grid = np.array([[0.0, 150.0, 300.0], [0.0, 150.0, 300.0]])
    np.testing.assert_allclose(c.value(grid), [[0, 1 / 3, 2 / 3], [0, 0, 0]])


def test_empirical_rejects_bad_input():
    with pytest.raises(ValueError, match="no samples"):
        EmpiricalCurve(np.array([[np.nan, np.nan]]), np.array([[False, False]]))
    with pytest.raises(ValueError, match="non-negative"):
        EmpiricalCurve(np.array([[-1.0]]), np.array([[True]]))
    with pytest.raises(ValueError, match="boolean"):
        EmpiricalCurve(np.array([[1.0]]), np.array([[1]]))


def test_tabulated_interpolates_and_subsets():
    c = TabulatedCurve([0, 100, 200], [[0.0, 0.5, 1.0], [0.0, 0.0, 0.2]])
    np.testing.assert_allclose(c.value(np.array([50.0, 150.0])), [0.25, 0.1])
    np.testing.assert_allclose(c.value(np.array([500.0, 500.0])), [1.0, 0.2])
    assert c[1:].n == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": -1.0}, r"tau\[0\]"),
        ({"tau": np.nan}, r"tau\[0\]"),
        ({"tau": 10.0, "alpha": 0.0}, r"alpha\[0\]"),
        ({"tau": 10.0, "beta": np.inf}, r"beta\[0\]"),
        ({"tau": [1.0, 2.0], "alpha": [1.0, 2.0, 3.0]}, "disagree"),
    ],
)
def test_surge_parameter_validation_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShiftedSurge(**kwargs)


def test_per_query_parameters_and_subsets():
    c = ShiftedSurge(tau=[100.0, 200.0, 300.0], alpha=[1.0, 1.5, 2.0], beta=0.005)
    sub = c[np.array([True, False, True])]
    np.testing.assert_allclose(sub.alpha, [1.0, 2.0])
    np.testing.assert_allclose(
        sub.value(np.array([300.0, 500.0])), c.value(np.array([300.0, 0.0, 500.0]))[[0, 2]]
    )
