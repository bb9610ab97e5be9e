"""The exact oracle refuses instances past its limits and says which limit, with its value."""

from __future__ import annotations

import numpy as np
import pytest

from shadowprice import EmpiricalCurve, GammaSCurve, allocate
from shadowprice.solve import oracle
from shadowprice.solve.oracle import MAX_CELLS, MAX_WORK


def test_a_table_with_too_many_cells_is_refused_quoting_the_cell_limit() -> None:
    # One sample each: two useful options per query, so only the table's size is too large.
    n = 20_000
    curves = EmpiricalCurve(np.full((n, 1), 300.0), np.ones((n, 1), bool))
    budget = MAX_CELLS // n  # n x (budget + 1) granules: just over the limit
    with pytest.raises(ValueError) as exc:
        allocate(curves, budget, "oracle")
    msg = str(exc.value)
    assert f"{n * (budget + 1):,} table cells (the limit is {MAX_CELLS:,})" in msg
    assert "table updates" not in msg
    assert "granularity=" in msg


def test_too_much_work_is_refused_quoting_the_work_limit() -> None:
    curves = GammaSCurve(np.linspace(100, 3000, 1000), 0.001, 1.0)
    with pytest.raises(ValueError) as exc:
        allocate(curves, 100_000, "oracle")
    msg = str(exc.value)
    assert f"table updates (the limit is {MAX_WORK:,})" in msg
    assert "table cells" not in msg


@pytest.mark.parametrize("limits", [(10**9, 2 * 10**6), (5 * 10**4, 10**12)])
def test_the_suggested_granularity_fits(
    monkeypatch: pytest.MonkeyPatch, limits: tuple[int, int]
) -> None:
    # Small limits, so that the oracle at the suggested granularity runs in a moment.
    monkeypatch.setattr(oracle, "MAX_CELLS", limits[0])
    monkeypatch.setattr(oracle, "MAX_WORK", limits[1])
    curves = GammaSCurve(np.linspace(100, 3000, 40), 0.001, 1.0)
    with pytest.raises(ValueError) as exc:
        allocate(curves, 40 * 500, "oracle")
    g = int(str(exc.value).split("granularity=")[1].split(")")[0])
    assert g > 1 and allocate(curves, 40 * 500, "oracle", granularity=g).success
