"""Online pricing: decisions, the price's response to load, the prior, and the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowprice.evaluate.scenarios import run_scenario
from shadowprice.evaluate.traffic import (
    CAP_TOO_SMALL,
    MIXES,
    POLICIES,
    PRICED_OUT,
    UPSTREAMS,
    Mix,
    Policy,
    Upstream,
    make_traffic,
    plot_simulation,
    simulate,
)
from shadowprice.online import (
    ArrivalForecast,
    GammaShape,
    OnlinePricer,
    PopulationPrior,
    SpendModel,
    SurgeShape,
)
from shadowprice.online.shape import shape_terms


def test_terms_match_the_surge_closed_form_before_anything_is_learned() -> None:
    from shadowprice.curves import abandonment_threshold, surge_excess

    p = OnlinePricer(10_000, 60.0, SurgeShape(1.5, 0.005))
    for lam in (1e-3, 0.05, 0.4, 1.2):
        x, cut = p.terms(lam)  # every allowance assumed spent in full: the batch formulas
        assert x == pytest.approx(float(surge_excess(lam, 1.5, 0.005)), abs=1.0)
        assert cut == pytest.approx(float(abandonment_threshold(lam, 1.5, 0.005)), rel=1e-2)
    assert shape_terms(SurgeShape(), 0.0) == (200.0, np.inf)
    assert shape_terms(SurgeShape(), 1.5) == (0.0, 0.0)
    x0, _ = shape_terms(GammaShape(0.005), 0.0)
    assert x0 > shape_terms(GammaShape(0.005), 1e-4)[0]  # demand falls as the price rises


def test_spend_model_prices_what_comes_back_as_free() -> None:
    spend = SpendModel(size=64, min_samples=8)
    y = np.array([-50.0, 0.0, 100.0, 400.0])
    assert np.array_equal(spend.excess(y), y)  # nothing learned: allowances spent in full
    for used in range(100, 300, 10):  # answers run 0..190 tokens past a threshold of 100
        spend.observe(100.0, used)
    spend.refresh()
    xs = np.arange(0, 200, 10.0)
    assert spend.excess(y) == pytest.approx([-50.0, 0.0, np.mean(np.minimum(xs, 100)), xs.mean()])
    assert spend.excess_one(400.0) == pytest.approx(xs.mean())
    # The pricer charges that expected spend: at one price, a larger allowance than if every
    # granted token were spent, and more requests funded.
    cold = OnlinePricer(10_000, 60.0)
    warm = OnlinePricer(10_000, 60.0)
    for _ in range(64):
        warm.learn(300.0, 500, 330, "stop")
    warm.update(0.0, 0, 0)  # an update takes the finished requests into account
    assert warm.terms(0.3)[0] > cold.terms(0.3)[0] and warm.terms(0.3)[1] > cold.terms(0.3)[1]


def test_arrival_forecast_plans_for_the_quiet_rate() -> None:
    rng = np.random.default_rng(0)
    steady = ArrivalForecast(60.0)
    times = np.cumsum(rng.exponential(1 / 20.0, 20 * 240))  # 4 minutes at 20/s
    for t in times:
        steady.observe(float(t))
    now = float(times[-1])
    assert steady.rate(now) == pytest.approx(20.0, rel=0.25)
    assert 0.8 * 20 * 30 < steady.expected(now, 30.0) <= 1.05 * 20 * 30
    # Bursts (10 s at 60/s) between quiet spells (30 s at 10/s): inside a burst the rate now is
    # high, but the rest of a period is planned at about the quiet rate.
    bursty = ArrivalForecast(60.0)
    t = 0.0
    for k in range(8):
        rate, span = (10.0, 30.0) if k % 2 == 0 else (60.0, 10.0)
        for u in np.sort(rng.uniform(t, t + span, int(rate * span))):
            bursty.observe(float(u))
        t += span
    assert bursty.rate(t) > 40.0
    assert bursty.quiet_rate(t) == pytest.approx(10.0, rel=0.3)
    assert bursty.expected(t, 50.0) < 20.0 * 50.0
    assert bursty.expected(t + 20.0, 10.0) < bursty.expected(t, 10.0)  # the burst fades


def test_quote_caps_prices_out_and_honours_floors() -> None:
    p = OnlinePricer(10_000, 60.0)
    q = p.quote(300.0, 4096)
    assert (q.allowance, q.status, q.price) == (500, "granted", 0.0)  # tau + peak at price 0
    assert p.quote(300.0, 128).allowance == 128  # the client's max_tokens caps it
    p.set_price(0.5)
    x, cut = p.terms(0.5)
    high = p.quote(cut * 1.1, 4096)
    assert high.allowance == 0 and high.status == "priced_out"
    low = p.quote(cut * 0.5, 4096)
    assert low.status == "granted" and low.allowance == int(cut * 0.5 + x)
    assert low.least <= low.allowance
    assert p.quote(30.0, 20).status == "priced_out"  # capped below its useful budget
    f = p.quote(cut * 2, 4096, floor=64)
    assert (f.allowance, f.status) == (64, "floor")


def test_price_rises_as_the_budget_left_shrinks_and_is_zero_when_not_scarce() -> None:
    rng = np.random.default_rng(0)
    p = OnlinePricer(200_000, 60.0)
    for i in range(1000):  # 20 requests/s
        p.observe(6000.0 + i * 0.05, float(np.exp(rng.normal(5.5, 0.5))), 4096)
    now = 6000.0 + 50.0  # 10 s left in the period: ~200 more requests of ~450 tokens
    assert p.update(now, spent=0, reserved=0) == 0.0  # 200k left: not scarce
    prices = [p.update(now, spent=s, reserved=0) for s in (150_000, 180_000, 195_000)]
    assert 0 < prices[0] < prices[1] < prices[2]
    assert p.update(now, spent=200_000, reserved=0) == p.shape.price_ceiling
    # Half the traffic seen here (another replica has the rest): a higher price.
    p_all = p.update(now, spent=150_000, reserved=0, share=1.0)
    assert p.update(now, spent=150_000, reserved=0, share=0.5) > p_all


def test_prior_learns_usage_and_a_predictor_scale() -> None:
    rng = np.random.default_rng(1)
    prior = PopulationPrior(short_excess=SurgeShape().short_excess)
    true_scale = 3.0  # the predictor says tau, the model needs 3 tau
    for _ in range(4000):
        tau_hat = float(np.exp(rng.normal(5.5, 0.3)))
        length = true_scale * tau_hat + rng.gamma(2.0) / 0.005
        allowance = int(prior.threshold(tau_hat) + 600)
        used = int(min(length, allowance))
        prior.observe(tau_hat, allowance, used, "stop" if length <= allowance else "length")
    assert 2.0 < prior.scale < 4.5
    assert 0.5 < prior.usage < 1.0
    frozen = PopulationPrior(learn_scale=False)
    frozen.observe(100.0, 500, 500, "length")
    assert frozen.scale == 1.0


def test_simulator_never_overspends_and_reports_against_hindsight(tmp_path: Path) -> None:
    traffic = make_traffic("drifting", 6000, rate=25.0, seed=3)
    budget = 25 * 60 * 300
    r = simulate(traffic, budget, 60.0)
    assert (r.spent <= budget).all() and r.summary["over_budget_periods"] == 0
    assert r.requests.sum() == 6000
    assert r.summary["scarce_periods"] >= 1
    assert 0 < r.summary["accuracy_online"] <= 1 and r.summary["accuracy_hindsight"] > 0
    assert (r.hindsight_recycled >= r.hindsight).all()  # the recycling-aware ceiling is higher
    fcfs = simulate(traffic, budget, 60.0, policy="fcfs")
    assert (fcfs.prices.size, fcfs.summary["priced_out_share"]) == (0, 0.0)
    png = plot_simulation([r, fcfs], tmp_path / "online.png", 60.0)
    assert png.stat().st_size > 10_000


def test_traffic_mixes_and_sources() -> None:
    steady = make_traffic("steady", 2000, rate=10.0, seed=0)
    assert np.all(np.diff(steady.arrival) >= 0)
    assert 150 < steady.arrival[-1] - steady.arrival[0] < 250  # ~2000 / 10 per s
    drift = make_traffic("drifting", 4000, seed=0)
    assert drift.hard[:1000].mean() < drift.hard[-1000:].mean()
    real = make_traffic("bursty", 500, source="real", seed=0)
    assert real.length.min() > 0 and real.tau_hat.min() > 0
    with pytest.raises(ValueError, match="mix"):
        make_traffic("weekly", 10)  # type: ignore[arg-type]


# -- the simulator drives the decision core -----------------------------------------------------
@pytest.mark.parametrize("name", ["repeat_3x", "replicas2_fresh", "trickle"])
def test_fresh_start_scenarios_are_paced_without_lockouts(name: str) -> None:
    """One question at ~3x the budget (one replica, or two on one ledger), and a burst then a
    trickle under an hourly budget, from a fresh start, with an upstream that spends every
    allowance: the unpaced pricer refuses everyone for long stretches while spending lags; the
    paced one never refuses a whole stretch, and uses nearly all of the budget."""
    paced = run_scenario(name, "paced", upstream="spend_all")
    s = paced.summary
    assert s["tokens_over_budget"] == 0 and s["over_budget_periods"] == 0
    assert paced.spent[0] >= 0.95 * paced.budget
    assert s["lockout_refusals"] <= 2 and s["refused_windows_behind"] == 0
    shares = paced.windows(10.0 if name != "trickle" else 300.0)["share"][: paced.spent.size * 6]
    assert np.nanmin(shares) > 0.1
    old = run_scenario(name, "reclear", upstream="spend_all")
    assert old.summary["lockout_refusals"] > 10  # the behaviour pacing replaces


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mix=st.sampled_from(MIXES),
    n=st.integers(50, 1200),
    rate=st.floats(0.5, 60.0),
    per_request=st.integers(5, 2000),
    period=st.sampled_from([10.0, 60.0, 300.0]),
    replicas=st.integers(1, 3),
    upstream=st.sampled_from(UPSTREAMS),
    policy=st.sampled_from(POLICIES),
    same=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_no_run_spends_past_the_budget(
    mix: Mix,
    n: int,
    rate: float,
    per_request: int,
    period: float,
    replicas: int,
    upstream: Upstream,
    policy: Policy,
    same: bool,
    seed: int,
) -> None:
    traffic = make_traffic(mix, n, rate=rate, same_question=same, short_cap=64, seed=seed)
    budget = max(1, int(rate * period * per_request))
    r = simulate(
        traffic, budget, period, policy=policy, replicas=replicas, upstream=upstream, tick=0.5
    )
    assert (r.spent <= budget).all() and r.over_budget == 0
    assert r.requests.sum() == n and r.granted.max() <= traffic.cap.max()
    assert ((r.status == 0) == (r.granted > 0)).all()
    w = r.windows(10.0)
    assert w["arrivals"].sum() == n and (w["granted"] <= w["arrivals"]).all()


def test_simulator_reports_refusal_kinds_windows_and_utility() -> None:
    traffic = make_traffic("steady", 3000, rate=25.0, short_cap=40, short_share=0.3, seed=5)
    r = simulate(traffic, 25 * 60 * 150, 60.0, tick=0.5)
    kinds = set(np.unique(r.status).tolist())
    assert {0, PRICED_OUT, CAP_TOO_SMALL} <= kinds  # 40-token caps under 100+ token thresholds
    s = r.summary
    assert 0 < s["utility_per_request"] and 0 < s["utility_vs_hindsight"] < 3
    assert s["granted_share"] == pytest.approx(
        float((r.status[r.arrival >= 60.0] == 0).mean()), abs=0.05
    )
    with pytest.raises(ValueError, match="policy"):
        simulate(traffic, 1000, policy="lottery")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replicas"):
        simulate(traffic, 1000, replicas=0)
    with pytest.raises(ValueError, match="scenario"):
        run_scenario("monday")
