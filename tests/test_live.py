"""The live planner: incremental market, a hand-computed schedule, extension, calibration."""

import numpy as np
import pytest

from shadowprice import GammaSCurve, TabulatedCurve
from shadowprice.evaluate.simulate import simulate
from shadowprice.live import (
    Action,
    ClearLive,
    LengthShift,
    LiveConfig,
    OneShot,
    SegmentMarket,
    median_lengths,
    shift_tables,
    tabulate,
)
from shadowprice.solve.envelope import concave_envelope


def _random_envelope(rng, n=40, k=8):
    c = np.concatenate([np.zeros((n, 1)), np.cumsum(rng.random((n, k - 1)) * 30, axis=1)], 1)
    v = np.concatenate([np.zeros((n, 1)), np.cumsum(rng.random((n, k - 1)) ** 2, axis=1)], 1)
    return concave_envelope(c, v)


@pytest.mark.parametrize("n", [40, 1500])
def test_market_cutoff_matches_sorting_after_removals(n):
    rng = np.random.default_rng(3)
    env = _random_envelope(rng, n)
    market = SegmentMarket(env)
    alive = np.ones(env.n, dtype=bool)
    owner = np.repeat(np.arange(env.n), np.diff(env.starts))
    order = np.argsort(-env.slope, kind="stable")
    for _ in range(25):
        for budget in rng.random(5) * env.dcost.sum() * 1.1:
            cost = np.where(alive[owner], env.dcost, 0.0)[order]
            want = int(np.searchsorted(np.cumsum(cost), budget, side="right"))
            p = market.cutoff(budget)
            assert p == want
            assert market.demand(p) == pytest.approx(cost[:p].sum())
            # A query buys a prefix of its own segments: exactly those before the cutoff.
            i = int(rng.integers(env.n))
            assert market.bought(i, p) == int((market.rank[env.row(i)] < p).sum())
        gone = int(rng.integers(env.n))
        market.remove(gone)
        alive[gone] = False
    assert market.cutoff(0.0) <= market.size


def _tiny():
    """Three queries on grid (0, 10, 20, 40) with value and spend tables."""
    grid = np.array([0, 10, 20, 40])
    value = [[0, 0.5, 0.9, 0.9], [0, 0, 0.6, 0.8], [0, 0.1, 0.2, 0.3]]
    spend = [[0, 10, 15, 15], [0, 10, 20, 30], [0, 10, 20, 40]]
    return TabulatedCurve(grid, value, spend), grid


class _Recorder:
    """Wraps a policy and records every action with the tick it was sent (C = 1: the tick is
    the tokens generated before it)."""

    def __init__(self, policy):
        self.policy, self.log, self.clock = policy, [], 0

    n = property(lambda self: self.policy.n)
    running = property(lambda self: self.policy.running)

    def next_start(self, available):
        act = self.policy.next_start(available)
        if act is not None:
            self.log.append((self.clock, act))
        return act

    def on_finish(self, query, generated, capped, available):
        self.clock += generated
        act = self.policy.on_finish(query, generated, capped, available)
        if act is not None:
            self.log.append((self.clock, act))
        return act

    def on_error(self, query, charged):
        self.clock += charged
        self.policy.on_error(query, charged)


def test_clear_live_with_one_slot_follows_the_hand_computed_schedule():
    # Envelopes on (spend, value): A is one segment to b=20 (slope 0.06; its b=10 point lies
    # below the chord), B two (to 20 at 0.03, to 40 at 0.02), C two (to 20 at 0.01, the b=10
    # point collinear, to 40 at 0.005). Budget 50 buys A, B, B2 (45 of 65): price 0.01.
    curves, grid = _tiny()
    planner = ClearLive(curves, 50, grid=grid)
    assert planner.price == pytest.approx(0.01)
    rec = _Recorder(planner)
    res = simulate(rec, [12, 35, 8], np.array([True, True, True]), 50, concurrency=1)
    assert rec.log == [
        # A first (best entry slope), at the cap its envelope buys.
        (0, Action(0, 20, 20, "start")),
        # A spent 12: 38 left and B's envelope buys b=40, whose reservation does not fit;
        # nothing else runs, so the rest goes where it is worth most: B at 20.
        (12, Action(1, 20, 20, "start")),
        # B stops on its cap at 20 (18 left: its next step, to 40, can never fit); C is not
        # funded at the price and nothing runs: the leftover buys C's best option, b=10.
        (32, Action(2, 10, 10, "start")),
    ]
    np.testing.assert_array_equal(res.answered, [True, False, True])
    np.testing.assert_array_equal(res.spent, [12, 20, 8])
    np.testing.assert_array_equal(res.allotted, [20, 20, 10])
    assert res.ticks == 40 and res.ledger.spent == 40 and res.ledger.reserved == 0


def test_stopped_query_is_extended_by_continuation_when_the_price_falls():
    # X is expected to spend 20 but needs 12; Y's envelope is concave (slopes 0.03, 0.028,
    # 0.019, 0.014). Budget 45, two slots: X starts at 20, Y gets the 25 the plan leaves
    # (cap 20). X ends early, so when Y stops on its cap at 20 the market is empty (price 0)
    # and 13 tokens are free: Y is continued to 30 (10 more tokens), not restarted.
    grid = np.array([0, 10, 20, 30, 40])
    value = [[0, 0, 0.9, 0.9, 0.9], [0, 0.3, 0.55, 0.7, 0.8]]
    spend = [[0, 10, 20, 25, 30], [0, 10, 19, 27, 34]]
    planner = ClearLive(TabulatedCurve(grid, value, spend), 45, grid=grid)
    rec = _Recorder(planner)
    res = simulate(rec, [12, 28], np.array([True, True]), 45, concurrency=2)
    assert [a for _, a in rec.log] == [
        Action(0, 20, 20, "start"),
        Action(1, 20, 20, "start"),
        Action(1, 30, 10, "extend"),
    ]
    assert res.answered.all() and res.spent.tolist() == [12, 28]
    assert res.allotted.tolist() == [20, 30] and res.requests.tolist() == [1, 2]
    # Without extension Y stays stopped at its first cap.
    planner = ClearLive(TabulatedCurve(grid, value, spend), 45, LiveConfig(extend=False), grid)
    res = simulate(planner, [12, 28], np.array([True, True]), 45, concurrency=2)
    assert res.answered.tolist() == [True, False]


def test_one_shot_waits_for_tokens_and_drops_what_never_fits():
    plan = OneShot([30, 30, 30, 0])
    res = simulate(plan, [10, 40, 5, 7], np.array([True, True, True, True]), 70, concurrency=4)
    # 0 and 1 start (60 of 70 reserved); 2 waits until 0 returns its 20 unused tokens.
    assert res.answered.tolist() == [True, False, True, False]
    assert res.spent.tolist() == [10, 30, 5, 0]
    plan = OneShot([50, 50])
    res = simulate(plan, [40, 40], np.array([True, True]), 80, concurrency=2)
    # The second cap never fits (30 left once the first ends): dropped, its tokens unspent.
    assert res.answered.tolist() == [True, False] and plan.dropped == 1


def _gamma_world(n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    tau = np.exp(rng.normal(np.log(600), 0.5, n))
    beta = 1.0 / np.exp(rng.normal(np.log(300), 0.5, n))
    p = rng.beta(3, 2, n)
    truth = GammaSCurve(tau * scale, beta / scale, p, beta / (2 * scale))
    right = rng.random(n) < p
    length = truth.tau + rng.gamma(2.0, 1.0, n) / np.where(right, truth.beta, truth.wrong_beta)
    return truth, np.rint(length).astype(np.int64), right


def test_calibration_leaves_well_specified_curves_alone():
    truth, lengths, right = _gamma_world(400, 0)
    planner = ClearLive(truth, 700 * 400)
    simulate(planner, lengths, right, 700 * 400)
    assert planner.shift.identity


def test_calibration_finds_lengths_several_times_the_predicted():
    # The curves were predicted for a model that writes 5x shorter: they rank the queries
    # right but put every threshold and length 5x too low.
    scale = 5.0
    truth, lengths, right = _gamma_world(400, 1, scale)
    wrong = GammaSCurve(truth.tau / scale, truth.beta * scale, truth.p, truth.wrong_beta * scale)
    budget = int(700 * scale * 400)
    acc = {}
    for name, curves, cfg in [
        ("truth", truth, LiveConfig()),
        ("calibrated", wrong, LiveConfig()),
        ("uncalibrated", wrong, LiveConfig(calibrate=False)),
    ]:
        planner = ClearLive(curves, budget, cfg)
        acc[name] = simulate(planner, lengths, right, budget).accuracy
        if name == "calibrated":
            assert 3.0 <= planner.shift.scale <= 8.0
    assert acc["calibrated"] >= acc["uncalibrated"] + 0.05
    assert acc["calibrated"] >= 0.9 * acc["truth"]


def test_shift_tables_scales_lengths():
    c = GammaSCurve([200.0], [0.01], [0.7])
    grid = np.concatenate([[0], np.geomspace(10, 40000, 200).round()]).astype(np.int64)
    base = tabulate(c, grid)
    moved = shift_tables(base, median_lengths(base), LengthShift(np.log(3.0), 0.0))
    want = GammaSCurve([600.0], [0.01 / 3], [0.7])
    b = np.array([[300.0, 900.0, 2000.0, 6000.0]])
    np.testing.assert_allclose([moved.at(0, x)[0] for x in b[0]], want.value(b)[0], atol=0.01)
    np.testing.assert_allclose([moved.at(0, x)[1] for x in b[0]], want.spend(b)[0], rtol=0.02)


def test_stepping_continues_toward_the_cap():
    # With step=2 the first request is capped at the median length and continued after.
    curves, grid = _tiny()
    rec = _Recorder(ClearLive(curves, 50, LiveConfig(step=2.0), grid))
    res = simulate(rec, [12, 35, 8], np.array([True, True, True]), 50, concurrency=1)
    assert [a for _, a in rec.log][:2] == [Action(0, 10, 10, "start"), Action(0, 20, 10, "extend")]
    assert res.answered.tolist() == [True, False, True] and res.spent.sum() <= 50


def test_planner_validates_its_inputs():
    curves, grid = _tiny()
    with pytest.raises(ValueError, match="non-negative"):
        ClearLive(curves, -1, grid=grid)
    planner = ClearLive(curves, 50, grid=grid)
    with pytest.raises(ValueError, match="no request running"):
        planner.on_finish(0, 5, False, 45)
