"""The serving-engine simulator: the ledger invariant, the spent ceiling, replay agreement."""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowprice import GammaSCurve, allocate
from shadowprice.engine.driver import PolicyError
from shadowprice.evaluate import replay, split_half
from shadowprice.evaluate.simulate import sample_worlds, simulate, spent_ceiling
from shadowprice.fit import ShrunkCurveFitter
from shadowprice.ledger import MemoryLedger
from shadowprice.live import Action, ClearLive, OneShot
from shadowprice.traces import load_traces


class _CheckedLedger(MemoryLedger):
    """Checks spent + reserved <= total and spent <= total after every operation."""

    def _check(self):
        s = self.state_now()
        assert s.spent + s.reserved <= s.total and s.overrun == 0

    def reserve_now(self, *a, **k):
        r = super().reserve_now(*a, **k)
        self._check()
        return r

    def settle_now(self, *a, **k):
        r = super().settle_now(*a, **k)
        self._check()
        return r


class _RandomPolicy:
    """Starts queries in random order with random caps within what is available, extends
    or gives up at random, retries failures at random: any protocol-respecting behaviour."""

    def __init__(self, n, draw):
        self.n, self.draw, self.running = n, draw, 0
        self.pending = list(range(n))
        self.used = [0] * n
        self.retry = []

    def next_start(self, available):
        if available < 1:
            return None
        if self.retry:
            q, cap = self.retry.pop()
            tokens = min(cap - self.used[q], available)
            if tokens < 1:
                return None
            self.running += 1
            return Action(q, self.used[q] + tokens, tokens, "retry")
        if not self.pending:
            return None
        q = self.pending.pop(self.draw(st.integers(0, len(self.pending) - 1)))
        tokens = self.draw(st.integers(1, available))
        self.running += 1
        return Action(q, tokens, tokens, "start")

    def on_finish(self, query, generated, capped, available):
        self.running -= 1
        self.used[query] += generated
        if capped and available >= 1 and self.draw(st.booleans()):
            tokens = self.draw(st.integers(1, available))
            self.running += 1
            return Action(query, self.used[query] + tokens, tokens, "extend")
        return None

    def on_error(self, query, charged):
        self.running -= 1
        if self.draw(st.booleans()):
            self.retry.append((query, self.used[query] + self.draw(st.integers(1, 50))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_spent_never_exceeds_budget_under_random_events(data):
    n = data.draw(st.integers(1, 12))
    lengths = np.array(data.draw(st.lists(st.integers(0, 200), min_size=n, max_size=n)))
    correct = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    budget = data.draw(st.integers(0, 600))
    crashes = data.draw(st.sets(st.integers(0, 3 * n)))

    def crash(q, k, tokens):
        return tokens // 2 if (3 * q + k) in crashes else None

    ledger = _CheckedLedger(budget)
    res = simulate(
        _RandomPolicy(n, data.draw),
        lengths,
        correct,
        budget,
        concurrency=data.draw(st.integers(1, 4)),
        ledger=ledger,
        crash=crash,
    )
    state = ledger.state_now()
    assert state.spent == res.spent.sum() <= budget
    assert state.reserved == 0
    # An answered query finished: it was given at least its length in all.
    assert np.all(res.allotted[res.answered] >= lengths[res.answered])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.sampled_from([0, 1, 3]))
def test_clear_live_stays_within_budget_with_crashes(seed, concurrency, crash_every):
    rng = np.random.default_rng(seed)
    n = 30
    curves = GammaSCurve(rng.uniform(20, 300, n), rng.uniform(0.002, 0.05, n), rng.random(n))
    lengths = rng.integers(0, 800, n)
    budget = int(rng.integers(0, 6000))

    def crash(q, k, tokens):
        return tokens // 3 if crash_every and (q + k) % (crash_every + 2) == 0 else None

    ledger = _CheckedLedger(budget)
    res = simulate(
        ClearLive(curves, budget),
        lengths,
        rng.random(n) < 0.7,
        budget,
        concurrency=concurrency,
        ledger=ledger,
        crash=crash,
    )
    assert ledger.state_now().spent == res.spent.sum() <= budget


def test_a_policy_asking_for_more_than_is_available_is_refused():
    class Greedy(OneShot):
        def next_start(self, available):
            act = super().next_start(10**9)
            return act

    with pytest.raises(PolicyError, match="only"):
        simulate(Greedy([50, 50]), [10, 10], np.array([True, True]), 60, concurrency=2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 60), st.booleans()), min_size=1, max_size=8),
    st.integers(0, 200),
)
def test_spent_ceiling_equals_brute_force(samples, budget):
    lengths = np.array([s[0] for s in samples])
    correct = np.array([s[1] for s in samples])
    got = spent_ceiling(lengths, correct, budget)
    best = 0
    for k in range(len(samples) + 1):
        for sub in combinations(range(len(samples)), k):
            if all(correct[list(sub)]) and lengths[list(sub)].sum() <= budget:
                best = max(best, k)
    assert got.sum() == best
    assert lengths[got].sum() <= budget and correct[got].all()


def test_fixed_plan_over_worlds_reproduces_replay():
    traces = load_traces("qwen25-math-math100")
    fit, score = split_half(traces, 0)
    curves = ShrunkCurveFitter().fit(fit).curves_
    budget = 250 * traces.n
    plan = allocate(curves, budget, "market")
    worlds = sample_worlds(score, seed=0)
    assert worlds.w == 4
    acc = np.zeros(traces.n)
    spent = np.zeros(traces.n)
    for w in range(worlds.w):
        # Its caps sum to at most the budget: every query starts, nothing is dropped.
        res = simulate(OneShot(plan.budgets), worlds.lengths[w], worlds.correct[w], budget)
        acc += res.answered / worlds.w
        spent += res.spent / worlds.w
    rep = replay(plan, score, n_boot=0)
    np.testing.assert_allclose(acc, rep.per_query)
    np.testing.assert_allclose(spent, rep.spent_per_query)


def test_worlds_use_every_sample_equally_often():
    traces = load_traces("qwen25-math-math100")
    worlds = sample_worlds(traces, seed=3)
    t = np.rint(traces.tokens())
    assert worlds.w == 8
    for i in (0, 17, 99):
        assert sorted(worlds.lengths[:, i]) == sorted(t[i])
    again = sample_worlds(traces, seed=3)
    np.testing.assert_array_equal(worlds.lengths, again.lengths)
