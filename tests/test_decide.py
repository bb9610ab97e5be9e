"""The online decision core: rationing at a step, the pace line, refusal kinds, replicas' shares.

Property tests try to break the two promises the core makes while spending lags the pace
line (the price never refuses a whole stretch of traffic) and always (a floor is never priced
out); the simulator's tests check the budget with the real ledger.
"""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowprice.online import DecisionCore, OnlinePricer, PacedPricer, PaceLine

P = 60.0
T0 = 6_000.0  # a period boundary (100 periods after the epoch)


def warmed(
    budget: int = 30_000,
    taus: tuple[float, ...] = (300.0,),
    rate: float = 10.0,
    seconds: float = 10.0,
    cap: int = 4096,
    **options: object,
) -> DecisionCore:
    """A core that has seen ``rate`` requests/s for ``seconds`` from a period's start, cycling
    through ``taus``."""
    core = DecisionCore(PacedPricer(budget, P, **options), tick=0.25)  # type: ignore[arg-type]
    n = int(rate * seconds)
    tick = -1
    for i in range(n):
        now = T0 + i / rate
        if int(now / 0.25) > tick:  # re-priced every tick, as the gateway does
            tick = int(now / 0.25)
            core.update(now, 0, 0)
        core.arrive(now, taus[i % len(taus)], cap)
    return core


def unheld(core: DecisionCore) -> DecisionCore:
    """``core`` without the hold between updates: the tests that send many requests at one
    instant stand them for a stream at the current price and ration; the hold such a burst
    meets is tested on its own (``test_a_burst_the_price_has_not_seen_...``)."""
    setattr(core.pricer, "within_pace", lambda *args, **kw: True)  # noqa: B010
    return core


def admitted(
    core: DecisionCore, now: float, taus: tuple[float, ...], k: int, cap: int = 4096
) -> int:
    return sum(core.arrive(now, taus[i % len(taus)], cap).admitted for i in range(k))


# -- rationing at a step --------------------------------------------------------------------
def test_equal_requests_are_rationed_not_flipped_between_all_and_none() -> None:
    shares, prices = [], []
    for spent in range(0, 6_001, 500):  # less and less left: the ration falls smoothly
        core = unheld(warmed())  # 10 requests/s of one curve at ~3x what the budget allows
        core.update(T0 + 10.0, spent, 0)
        prices.append(core.price)
        shares.append(admitted(core, T0 + 10.0, (300.0,), 100) / 100)
    assert all(0.0 < s < 1.0 for s in shares), shares  # never all, never none
    assert all(a >= b for a, b in itertools.pairwise(shares)), shares
    assert shares[0] - shares[-1] > 0.2
    assert max(prices) == pytest.approx(min(prices))  # the price sits on the step
    # The stride admits exactly the ration's share of the marginal requests, all alike.
    core = unheld(warmed())
    core.update(T0 + 10.0, 2_000, 0)
    r = core.pricer.ration
    offers = [core.arrive(T0 + 10.0, 300.0, 4096) for _ in range(500)]
    assert 0 < r < 1 and abs(sum(o.admitted for o in offers) - 500 * r) <= 1
    assert len({o.allowance for o in offers if o.admitted}) == 1
    assert {o.status for o in offers} == {"granted", "priced_out"}
    refused = next(o for o in offers if not o.admitted)
    assert "admitted in turn" in refused.message and refused.retry_after == 1


def test_ration_makes_expected_spend_meet_the_target() -> None:
    core = warmed(taus=(300.0, 300.0, 305.0, 900.0))
    pricer = core.pricer
    assert isinstance(pricer, PacedPricer)
    pricer._clear(150.0)  # the clearing step itself, at a chosen target
    inside, marginal = pricer._band_spends(pricer.price)
    assert inside + pricer.ration * marginal == pytest.approx(150.0, rel=1e-6)


# -- the pace line ----------------------------------------------------------------------------
def test_pace_line_bounds() -> None:
    line = PaceLine(12_000, 60.0, margin=0.1, horizon=6.0)
    assert line.line(T0 + 30.0) == pytest.approx(6_000)
    least, most = line.bounds(T0 + 30.0, 5_000, arrivals=10)  # 1 000 behind
    assert least == pytest.approx((7_200 - 5_000) / 10)
    assert most == pytest.approx((8_400 - 5_000) / 10)
    assert line.bounds(T0 + 30.0, 9_000, arrivals=10) == (0.0, 0.0)  # beyond the margin
    assert line.resume_in(T0 + 30.0, 9_000) == pytest.approx(9.0)  # 1 800 over, 200 tok/s
    assert line.bounds(T0 + 57.0, 11_000, arrivals=3)[0] == pytest.approx(1_000 / 3)  # 3 s left
    assert line.bounds(T0, 0, arrivals=0.0) == (0.0, math.inf)
    with pytest.raises(ValueError, match="margin"):
        PaceLine(100, 60.0, margin=1.5)
    with pytest.raises(ValueError, match="horizon"):
        PaceLine(100, 60.0, horizon=0.0)


populations = st.lists(
    st.tuples(st.floats(20.0, 3000.0), st.sampled_from([64, 256, 1024, 4096])),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    population=populations,
    rate=st.floats(0.5, 50.0),
    pressure=st.floats(0.3, 40.0),
    elapsed=st.floats(0.05, 0.95),
    lag=st.floats(0.0, 1.0),
)
def test_while_behind_pace_some_of_every_stretch_is_admitted(
    population: list[tuple[float, int]], rate: float, pressure: float, elapsed: float, lag: float
) -> None:
    """Spending behind the line: among the next requests like the recent ones, at least one in
    every (most a request can spend / budget's rate per arrival) + 1 is admitted."""
    taus = tuple(t for t, _ in population)
    caps = [c for _, c in population]
    k = len(population)
    demand = float(np.mean([min(c, t + 200.0) for t, c in population]))
    budget = max(1, int(demand * rate * P / pressure))
    core = unheld(DecisionCore(PacedPricer(budget, P), tick=0.25))
    now = T0 + elapsed * P
    n = max(16, int(rate * P * elapsed))  # at ``rate``, up to now (from the last period, too)
    for i in range(n):
        core.arrive(now - (n - i) / rate, taus[i % k], caps[i % k])
    committed = int(budget * elapsed * (1.0 - lag) * 0.999)  # behind the line
    core.update(now, committed, 0)
    assert not core.pricer.exhausted and core.pricer.paused_for == 0.0
    admits = [core.arrive(now, taus[i % k], caps[i % k]).admitted for i in range(4000)]
    worth = [min(c, t + 200.0) for t, c in population if c > t]
    if not worth:  # every request's cap cuts its curve below its threshold
        return
    per_arrival = budget / P / rate  # the budget's rate, per arrival
    gap = math.ceil(k * max(worth) / per_arrival) + k
    runs = "".join("1" if a else "0" for a in admits).split("1")
    assert max(len(r) for r in runs) <= gap, (max(len(r) for r in runs), gap)


def test_ahead_of_the_margin_nothing_is_admitted_until_the_line_catches_up() -> None:
    core = warmed(budget=30_000, margin=0.1)
    core.update(T0 + 10.0, 12_000, 0)  # line at 5 000, + margin 3 000 + horizon 2 500
    offer = core.arrive(T0 + 10.0, 300.0, 4096)
    assert offer.status == "priced_out" and "ahead of this period's pace" in offer.message
    assert offer.retry_after == math.ceil((12_000 - 8_000) / 500)  # 500 tokens/s of pace
    core.update(T0 + 20.0, 12_000, 0)  # the line has caught up: admitting again
    assert admitted(core, T0 + 20.0, (300.0,), 50) > 0


def test_a_fresh_period_does_not_start_by_refusing() -> None:
    core = warmed(budget=30_000, seconds=60.0)  # a whole period at ~3x the budget
    core.update(T0 + 60.0, 0, 0)  # the next one starts with nothing spent
    assert 0 < admitted(core, T0 + 60.0, (300.0,), 100) < 100


def test_a_burst_does_not_lock_out_the_rest_of_the_period() -> None:
    budget, start = 120_000, T0 * 60  # an hourly budget, 3x below the demand that follows
    core = DecisionCore(PacedPricer(budget, 3600.0), tick=0.25)
    for i in range(8):  # 8 quick requests spend 4 000 tokens (3.3 %) at once
        assert core.arrive(start + 0.1 * i, 300.0, 4096).admitted
    granted, behind = [], []
    for j in range(1, 600):  # then one every 5 s, each spending its 500 tokens at once
        now = start + 5.0 * j
        spent = 4_000 + 500 * sum(granted)
        core.update(now, spent, 0)
        behind.append(spent < budget * j * 5.0 / 3600.0)
        granted.append(core.arrive(now, 300.0, 4096).admitted)
    refused_behind = "".join(
        "0" if b and not g else "1" for g, b in zip(granted, behind, strict=True)
    )
    assert max(len(r) for r in refused_behind.split("1")) <= 3  # the fair share is 1 in 3
    assert max(len(r) for r in "".join("01"[g] for g in granted).split("1")) <= 6
    assert 0.25 < np.mean(granted) < 0.4


@settings(max_examples=80, deadline=None)
@given(
    budget=st.integers(2_000, 200_000),
    margin=st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]),
    elapsed=st.floats(0.0, 0.98),
    lag=st.floats(0.0, 1.0),
    quiet=st.booleans(),
    share=st.sampled_from([1.0, 0.5, 0.1]),
    burst=st.lists(st.tuples(st.floats(0.0, 0.24), st.floats(0.0, 2_000.0)), max_size=300),
)
def test_a_burst_the_price_has_not_seen_takes_at_most_the_margin(
    budget: int,
    margin: float,
    elapsed: float,
    lag: float,
    quiet: bool,
    share: float,
    burst: list[tuple[float, float]],
) -> None:
    """Between two updates (a tick), whatever arrives: the grants' expected spend stays
    within this replica's ``share`` of the room under the pace line's ceiling left at the
    update, give or take one grant. ``quiet``: no update yet (a fresh gateway: price 0, nothing
    known, the whole room); else an update behind the line that left the price at 0 (too few
    arrivals to price)."""
    pricer = PacedPricer(budget, P, margin=margin)
    core = DecisionCore(pricer, tick=0.25)
    now = T0 + elapsed * P
    committed = 0.0
    if quiet:
        share = 1.0
    else:
        spent = int(budget * elapsed * (1.0 - lag))
        core.share = share  # as a replica on a shared ledger has measured it
        core.update(now, spent, 0)
        committed = pricer.committed
    counted, largest = 0.0, 0.0
    for dt, tau in sorted(burst):
        offer = core.arrive(now + dt, tau, 4096)
        assert offer.status in ("granted", "priced_out", "cap_too_small")
        if offer.admitted:
            counted += pricer.prior.usage * offer.allowance
            largest = max(largest, pricer.prior.usage * offer.allowance)
        room = share * max(pricer.pace.ceiling(now + dt) - committed, 0.0)
        if int((now + dt) // P) == int(now // P):
            assert counted <= room + largest + 1e-6


def test_a_fresh_burst_is_paced_but_floors_are_not_and_the_unpaced_core_is_unchanged() -> None:
    budget = 12_000  # 30 requests of 400 tokens at price 0
    paced = DecisionCore(PacedPricer(budget, P), tick=0.25)
    offers = [paced.arrive(T0 + 0.01 * i, 200.0, 4096) for i in range(40)]
    granted = [o for o in offers if o.admitted]
    ceiling = budget * (1 / 12 + 0.2)  # the line one horizon ahead plus the margin, at t = 0
    assert 0 < sum(0.7 * o.allowance for o in granted) <= ceiling  # 0.7: the prior's usage
    held = offers[-1]
    assert held.status == "priced_out" and "ahead of this period's pace" in held.message
    assert held.retry_after == 1  # the price moves at the next tick
    assert paced.arrive(T0 + 0.5, 200.0, 4096, floor=300).status == "floor"  # guaranteed
    # What the ledger (or the caller) refused, or held only in part, reserved nothing: uncounted.
    for drop in ("ledger", "caller", "partial"):
        core = DecisionCore(PacedPricer(budget, P), tick=0.25)
        first = core.arrive(T0, 200.0, 4096)
        if drop == "ledger":
            core.refused_by_ledger(T0, first)
        elif drop == "caller":
            core.dropped(first)
        else:
            core.granted(first, 16)
        again = [core.arrive(T0 + 0.01 * i, 200.0, 4096) for i in range(40)]
        assert sum(o.admitted for o in again) == len(granted), drop  # 16 tokens fit too
    unpaced = DecisionCore(OnlinePricer(budget, P), tick=0.25)
    assert all(unpaced.arrive(T0 + 0.01 * i, 200.0, 4096).admitted for i in range(40))


def test_budget_spent_is_exhausted_until_the_next_period() -> None:
    core = warmed()
    core.update(T0 + 10.0, 30_000, 0)
    offer = core.arrive(T0 + 10.0, 300.0, 4096)
    assert (offer.status, offer.retry_after) == ("budget_exhausted", 50)
    # The ledger is full, but running requests will give tokens back: wait a moment.
    core.update(T0 + 10.0, 25_000, 5_000)
    shortly = core.refused_by_ledger(T0 + 10.0, core.arrive(T0 + 10.0, 10.0, 4096, floor=64))
    assert shortly.status == "budget_exhausted" and shortly.retry_after == 1
    core.update(T0 + 10.0, 29_990, 0)
    late = core.refused_by_ledger(T0 + 10.0, core.arrive(T0 + 10.0, 10.0, 4096, floor=64))
    assert late.retry_after == 50


# -- the client's cap, floors, fallback -------------------------------------------------------
def test_cap_below_the_threshold_is_cap_too_small_not_priced_out() -> None:
    core = warmed()
    core.update(T0 + 10.0, 2_000, 0)
    assert core.price > 0
    x, _ = core.pricer.terms(core.price)
    small = core.arrive(T0 + 10.0, 100.0, 80)  # max_tokens below its threshold
    assert small.status == "cap_too_small" and small.retry_after is None
    assert "max_tokens (80)" in small.message
    capped = core.arrive(T0 + 10.0, 100.0, 110)  # 10 tokens above: not worth its 100
    assert capped.status == "cap_too_small"
    fits = core.arrive(T0 + 10.0, 100.0, int(100 + 0.9 * x))  # most of its demand: granted
    assert fits.status == "granted" and fits.allowance == int(100 + 0.9 * x)
    assert core.arrive(T0 + 10.0, 100.0, 80, floor=32).status == "floor"
    core.update(T0 + 10.0, 0, 0)  # price 0: nothing scarce, the cap is granted as is
    if core.price == 0.0:
        assert core.arrive(T0 + 10.0, 100.0, 80).allowance == 80


@settings(max_examples=80, deadline=None)
@given(
    tau=st.floats(0.0, 1e5),
    cap=st.integers(1, 1 << 16),
    floor=st.integers(1, 4096),
    spent=st.integers(0, 30_000),
    reserved=st.integers(0, 30_000),
    t=st.floats(0.0, 59.9),
)
def test_a_floor_is_never_priced_out(
    tau: float, cap: int, floor: int, spent: int, reserved: int, t: float
) -> None:
    core = warmed()
    core.update(T0 + t, spent, reserved)
    offer = core.arrive(T0 + t, tau, cap, floor=floor)
    assert offer.admitted and offer.allowance >= min(floor, cap)
    assert 1 <= offer.least <= offer.allowance <= max(cap, 1)


def test_fallback_replaces_a_price_refusal_but_not_a_useless_cap() -> None:
    core = DecisionCore(PacedPricer(30_000, P), fallback_tokens=48)
    for i in range(100):
        core.arrive(T0 + i * 0.1, 300.0 if i % 2 else 2500.0, 4096)
    core.update(T0 + 10.0, 3_000, 0)
    _, cut = core.pricer.terms(core.price)
    assert cut < 2500.0
    assert core.arrive(T0 + 10.0, 2500.0, 4096).status == "fallback"
    assert core.arrive(T0 + 10.0, 2500.0, 4096).allowance == 48
    assert core.arrive(T0 + 10.0, 2500.0, 100).status == "cap_too_small"


def test_bad_requests_name_the_field() -> None:
    core = warmed()
    with pytest.raises(ValueError, match="tau_hat"):
        core.arrive(T0, float("nan"), 100)
    with pytest.raises(ValueError, match="cap"):
        core.arrive(T0, 10.0, 0)
    with pytest.raises(ValueError, match="floor"):
        core.arrive(T0, 10.0, 100, floor=-1)
    with pytest.raises(ValueError, match="fallback_tokens"):
        DecisionCore(OnlinePricer(100, P), fallback_tokens=-1)
    with pytest.raises(ValueError, match="tick"):
        DecisionCore(OnlinePricer(100, P), tick=0)
    with pytest.raises(ValueError, match="band"):
        PacedPricer(100, P, band=1.0)


# -- tickets and replicas -----------------------------------------------------------------------
def test_tickets_teach_once_and_count_toward_the_share() -> None:
    core = warmed()
    offer = next(o for _ in range(20) if (o := core.arrive(T0 + 10.0, 300.0, 4096)).admitted)
    ticket = core.granted(offer, offer.allowance, period=int(T0 // P))
    seen = core.pricer.prior.observed
    core.settled(ticket, 120, "stop")
    core.settled(ticket, 120, "stop")  # a second report changes nothing
    assert core.pricer.prior.observed == seen + 1
    gone = core.granted(offer, offer.allowance, period=int(T0 // P))
    core.lapsed(gone)
    core.settled(gone, 50)
    assert core.pricer.prior.observed == seen + 1


def test_replicas_learn_their_share_of_the_traffic() -> None:
    a, b = (DecisionCore(PacedPricer(60_000, P)) for _ in range(2))
    period = int(T0 // P)
    spent = 0
    for i in range(600):  # a and b take turns; each settles what it reserved
        core = (a, b)[i % 2]
        now = T0 + i * 0.05
        if i % 10 == 0:
            for c in (a, b):
                c.update(now, spent, 0, period)
        offer = core.arrive(now, 200.0, 4096)
        if offer.admitted:
            ticket = core.granted(offer, offer.allowance, period=period)
            core.settled(ticket, 150, "stop")
            spent += 150
    assert a.share == pytest.approx(0.5, abs=0.05) and b.share == pytest.approx(0.5, abs=0.05)
    assert a.agree(0.25) == 0.25 and a.price == 0.25


def test_the_online_core_does_no_io() -> None:
    """Nothing under shadowprice.online imports a clock, the network, files or a ledger."""
    root = Path(__file__).resolve().parents[1] / "src" / "shadowprice" / "online"
    banned = {"time", "asyncio", "socket", "os", "io", "pathlib", "httpx", "redis", "threading"}
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]} if node.level == 0 else set()
                assert node.module is None or not node.module.startswith("ledger"), path
            else:
                continue
            assert not names & banned, (path.name, names & banned)
