"""CLEAR's hand-out of leftover tokens: entrants, rounding remainders, marginal gain."""

from __future__ import annotations

import numpy as np
import pytest

from shadowprice import ShiftedSurge
from shadowprice.solve.constraints import make_constraints
from shadowprice.solve.market import MAX_ENTRANTS, hand_out

SURGE = ShiftedSurge(np.array([100.0, 300.0, 250.0]), alpha=1.5, beta=0.01)


def _hand_out(price: float, want, budgets=(200, 0, 0), total: int = 600, **limits):
    cons = make_constraints(3, total, **limits)
    b = np.asarray(budgets, dtype=np.int64)
    return hand_out(SURGE, b, b > 0, price, cons, np.asarray(want, dtype=float), np.zeros(3)), cons


def test_an_abandoned_query_enters_when_it_beats_the_price() -> None:
    # 400 tokens left; query 2 (tau 250) has the lowest threshold of the abandoned two and
    # would buy tau + 100 = 350 at this price: worth 1.5 * 100 * e^-1 = 55 > 0.001 * 350.
    (b, f, info), cons = _hand_out(0.001, want=[200, 400, 350])
    assert info["entered"] == 1
    assert b.tolist()[2] == 350 and f.tolist() == [True, False, True]
    assert b.sum() <= cons.budget


def test_entry_is_refused_when_the_tokens_pay_more_at_the_margin() -> None:
    # At price 1 per token, 350 tokens must buy more than 350 utility: nobody enters, and
    # the leftover goes to the funded query, never past its peak (tau + 1/beta = 200).
    (b, f, info), _ = _hand_out(1.0, want=[200, 400, 350], budgets=(150, 0, 0))
    assert info["entered"] == 0 and f.tolist() == [True, False, False]
    assert b.tolist() == [200, 0, 0] and info["spread"] == 50


def test_entrant_without_a_finite_want_is_offered_its_cap_or_what_is_left() -> None:
    (b, _, info), _ = _hand_out(0.001, want=[200, np.nan, np.nan], max_tokens=320)
    # Query 2 enters first with min(left 400, cap 320) = 320. The 80 left are below query 1's
    # threshold of 300 (worth nothing to it); query 0 sits at its peak and query 2 at its cap,
    # so they stay unallotted.
    assert info["entered"] == 1 and b.tolist() == [200, 0, 320]


def test_entrants_are_the_lowest_thresholds_first() -> None:
    n = MAX_ENTRANTS + 10
    tau = np.linspace(1000.0, 100.0, n)  # the cheapest query comes last
    curves = ShiftedSurge(tau, alpha=1.5, beta=0.01)
    cons = make_constraints(n, 250)
    b = np.zeros(n, dtype=np.int64)
    out, funded, info = hand_out(curves, b, b > 0, 0.001, cons, tau + 100.0, np.zeros(n))
    assert info["entered"] == 1 and np.flatnonzero(funded).tolist() == [n - 1]
    assert out[-1] == 200 and out.sum() <= 250


@pytest.mark.parametrize("granularity", [1, 64])
def test_budget_and_granularity_hold(granularity: int) -> None:
    (b, _, _), cons = _hand_out(
        0.0005, want=[200, 400, 350], budgets=(192, 0, 0), granularity=granularity
    )
    assert b.sum() <= cons.budget and np.all(b % granularity == 0)
