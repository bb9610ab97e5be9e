"""One budget-grid check, the same refusal wherever a grid is passed."""

from __future__ import annotations

import numpy as np
import pytest

from shadowprice import GammaSCurve, TabulatedCurve, allocate
from shadowprice.curves.grid import check_grid
from shadowprice.fit import fit_shrunk
from shadowprice.predict.threshold import expected_curves
from shadowprice.solve.constraints import make_constraints
from shadowprice.solve.menus import menu_from_curve
from shadowprice.traces import REAL_TRACE_SET, load_traces

BAD = {
    "2-D": [[0, 10], [20, 30]],
    "one point": [0],
    "not from 0": [5, 10],
    "descending": [0, 20, 10],
    "repeated": [0, 10, 10],
    "infinite": [0, 10, np.inf],
    "text": ["0", "10"],
}


@pytest.mark.parametrize("grid", BAD.values(), ids=BAD.keys())
def test_every_entry_point_refuses_a_bad_grid(grid) -> None:
    curves = GammaSCurve(np.array([100.0, 200.0]), 0.01, 0.9)
    cons = make_constraints(2, 500)
    calls = [
        lambda: check_grid(grid),
        lambda: allocate(curves, 500, "market", grid=grid),
        lambda: menu_from_curve(curves, cons, grid=grid),
        lambda: TabulatedCurve(grid, np.zeros((1, np.size(grid)))),
        lambda: fit_shrunk(load_traces(REAL_TRACE_SET).subset(slice(0, 5)), grid=grid),
        lambda: expected_curves(np.array([100.0]), 0.5, grid=grid),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="grid must be 1-D, finite, start at 0"):
            call()


def test_whole_and_granularity() -> None:
    assert check_grid([0, 64, 128], granularity=64).dtype == np.int64
    with pytest.raises(ValueError, match="whole numbers"):
        check_grid([0, 10.5])
    with pytest.raises(ValueError, match="multiples of granularity 64"):
        allocate(
            GammaSCurve(np.array([100.0]), 0.01, 0.9),
            500,
            "oracle",
            grid=[0, 64, 100],
            granularity=64,
        )
    # Tabulated curves interpolate, so they take fractional budgets.
    np.testing.assert_array_equal(check_grid([0, 0.5, 2], whole=False), [0.0, 0.5, 2.0])
    assert TabulatedCurve([0, 0.5, 2], [[0, 0.5, 1]]).value(np.array([1.25]))[0] == pytest.approx(
        0.75
    )
