"""Ray Data: a dataset allocated across its blocks gets the budgets of ``allocate`` in one
process; what cannot be split exactly is refused; the LLM helpers cap each request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "ray.data", reason="Ray Data is not installed: pip install 'shadowprice[ray]' (make test does)"
)

from shadowprice import ShiftedSurge, allocate
from shadowprice.integrations.ray.llm import (
    chat_payload,
    http_preprocess,
    sampling_params,
    vllm_preprocess,
)


@pytest.fixture(scope="module")
def ray_local() -> Any:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _dataset(tau: np.ndarray, blocks: int, **columns: Any) -> Any:
    import ray.data

    rows = [
        {"id": f"q{i}", "tau": float(t), **{k: v[i] for k, v in columns.items()}}
        for i, t in enumerate(tau)
    ]
    return ray.data.from_items(rows, override_num_blocks=blocks)


@pytest.mark.parametrize("integer", [False, True])
def test_budgets_are_those_of_allocate_in_one_process(ray_local: Any, integer: bool) -> None:
    from shadowprice.integrations.ray import price_dataset

    rng = np.random.default_rng(7)
    n = 3000
    tau = rng.lognormal(np.log(400), 0.6, n)
    if integer:  # ties for the spare granules across blocks
        tau = np.round(tau)
    ds = _dataset(tau, blocks=5)
    cases: list[dict[str, Any]] = [
        {"budget": n * 300},
        {"budget": n * 150, "granularity": 16, "min_tokens": 96, "max_tokens": 900},
        {"budget": n * 80, "leftover": "keep"},
        {"budget": n * 5000},  # not scarce: the leftover spread as headroom
        {"budget": n * 600, "max_tokens": 500, "granularity": 7},
    ]
    for kw in cases:
        budget = kw.pop("budget")
        got = price_dataset(ds, budget, **kw)
        want = allocate(ShiftedSurge(tau, 1.5, 0.005), budget, "clear", **kw)
        rows = got.dataset.to_pandas()
        assert rows["id"].tolist() == [f"q{i}" for i in range(n)]
        np.testing.assert_array_equal(rows["max_tokens"].to_numpy(), want.budgets)
        np.testing.assert_array_equal(rows["funded"].to_numpy(), want.funded)
        assert got.allocation.price == want.price and got.allocation.status == want.status
        assert got.allocation.spent == want.spent and got.allocation.leftover == want.leftover
        summary = got.allocation.summary()
        assert summary["abandoned"] == int((~want.funded).sum()) and summary["queries"] == n


def test_shape_columns_and_other_columns(ray_local: Any) -> None:
    from shadowprice.integrations.ray import allocate_dataset

    tau = np.linspace(100, 900, 400)
    ds = _dataset(tau, 3, alpha=[2.0] * 400, beta=[0.01] * 400, question=["x"] * 400)
    rows = allocate_dataset(ds, 400 * 200).to_pandas()
    want = allocate(ShiftedSurge(tau, 2.0, 0.01), 400 * 200)
    np.testing.assert_array_equal(rows["max_tokens"].to_numpy(), want.budgets)
    assert list(rows.columns) == ["id", "tau", "alpha", "beta", "question", "max_tokens", "funded"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"policy": "market"}, "policy 'market' cannot be split"),
        ({"family": "gamma"}, "family 'gamma' cannot be split"),
        ({"floor": 64}, "floor=64 protects"),
        ({"accounting": "spent"}, "accounting='spent' cannot be split"),
        ({"leftover": "waste"}, "leftover must be one of"),
        ({"granularity": 0}, "granularity"),
    ],
)
def test_what_cannot_be_split_exactly_is_refused(
    ray_local: Any, kw: dict[str, Any], match: str
) -> None:
    from shadowprice.integrations.ray import allocate_dataset

    with pytest.raises(ValueError, match=match):
        allocate_dataset(_dataset(np.full(10, 300.0), 2), 3000, **kw)


def test_bad_columns_are_named(ray_local: Any) -> None:
    import ray.data

    from shadowprice.integrations.ray import allocate_dataset

    tau = np.full(20, 300.0)
    with pytest.raises(ValueError, match="column 'max_tokens': per-row limits"):
        allocate_dataset(_dataset(tau, 2, max_tokens=[500] * 20), 3000)
    with pytest.raises(ValueError, match="column 'alpha' differs between rows"):
        allocate_dataset(_dataset(tau, 2, alpha=[1.5] * 19 + [2.0]), 3000)
    with pytest.raises(ValueError, match="already has column"):
        allocate_dataset(_dataset(tau, 2, funded=[True] * 20), 3000)
    bad = tau.copy()
    bad[13] = -5
    with pytest.raises(ValueError, match=r"row 13: column 'tau' must be a finite number >= 0"):
        allocate_dataset(_dataset(bad, 3), 3000)
    with pytest.raises(ValueError, match="column 'tau' is missing"):
        allocate_dataset(ray.data.from_items([{"mu": 1.0}] * 4), 3000)
    with pytest.raises(ValueError, match="no rows"):
        allocate_dataset(_dataset(tau, 2).filter(lambda r: False), 3000)


def test_sampling_params_carry_each_rows_budget() -> None:
    row = {"id": 1, "question": "2 + 2?", "max_tokens": 412, "funded": True}
    assert sampling_params(row, temperature=0.6) == {"temperature": 0.6, "max_tokens": 412}
    body = chat_payload(row, model="m", system="Be brief.", seed=1)
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "2 + 2?"},
        ],
        "seed": 1,
        "max_tokens": 412,
    }
    assert http_preprocess("m")(row)["payload"]["max_tokens"] == 412
    out = vllm_preprocess(temperature=0.0)(row)
    assert out["sampling_params"] == {"temperature": 0.0, "max_tokens": 412}
    assert out["messages"][-1]["content"] == "2 + 2?" and out["id"] == 1


def test_abandoned_or_unallocated_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="abandoned"):
        sampling_params({"max_tokens": 0, "funded": False})
    with pytest.raises(ValueError, match="allocate the dataset first"):
        sampling_params({"question": "x"})
    with pytest.raises(ValueError, match="comes from the allocation"):
        sampling_params({"max_tokens": 5}, max_tokens=9)
    with pytest.raises(ValueError, match="prompt_column"):
        chat_payload({"max_tokens": 5, "text": "x"}, model="m")


def test_the_http_processor_sends_each_row_capped_at_its_budget(ray_local: Any) -> None:
    from ray.data.expressions import col
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    from shadowprice.integrations.ray import price_dataset
    from shadowprice.serve.testing import FakeLog, ServerThread, fake_upstream

    tau = np.round(np.random.default_rng(3).lognormal(np.log(300), 0.6, 60))
    ds = _dataset(tau, 3, question=[f"q LEN:{int(t) + 100}" for t in tau])
    priced = price_dataset(ds, 60 * 250)
    log = FakeLog()
    app, _ = fake_upstream(speed=0, log=log)
    with ServerThread(app) as server:
        processor = build_processor(
            HttpRequestProcessorConfig(url=server.url + "/v1/chat/completions", batch_size=8),
            preprocess=http_preprocess("fake"),
            postprocess=lambda row: {
                "id": row["id"],
                "max_tokens": row["max_tokens"],
                "generated": row["http_response"]["usage"]["completion_tokens"],
            },
        )
        done = processor(priced.dataset.filter(expr=col("funded"))).to_pandas()
    assert len(done) == priced.allocation.funded == log.requests
    assert (done["generated"] <= done["max_tokens"]).all()
    assert done["generated"].sum() <= 60 * 250
    assert sorted(log.max_tokens) == sorted(done["max_tokens"].tolist())
