"""Synthetic pools and streams: calibration to the paper's recall table, mixtures, seeds, scale."""

from __future__ import annotations

import numpy as np
import pytest

from shadowprice import GammaSCurve
from shadowprice.evaluate.streams import (
    BUNDLED_STREAMS,
    POOL_ORDER,
    POOLS,
    STREAMS,
    SyntheticStream,
    load_stream,
    make_stream,
    pool_recall,
)
from shadowprice.traces import TraceSet

# Fig. 1 of the CLEAR paper: solution recall (%) at 256, 512, 1k, 2k, 4k tokens.
CHECK_BUDGETS = [256, 512, 1024, 2048, 4096]
PAPER_RECALL = {
    "gsm8k-like": [28, 87, 97, 97, 97.5],
    "math500-like": [9, 52, 89.5, 96.5, 97.5],
    "aime-like": [0, 17, 72, 100, 100],
}


def _pool_curves(name: str, n: int, seed: int = 0) -> GammaSCurve:
    tau, beta, p = POOLS[name].sample(n, np.random.default_rng(seed))
    return GammaSCurve(tau, beta, p)


@pytest.mark.parametrize("pool", list(PAPER_RECALL))
def test_pool_recall_matches_paper_table(pool: str) -> None:
    rec = 100 * pool_recall(_pool_curves(pool, 100_000), CHECK_BUDGETS)
    assert np.abs(rec - np.array(PAPER_RECALL[pool])).max() <= 5.0, rec


@pytest.mark.parametrize("pool", list(PAPER_RECALL))
def test_simulated_traces_reproduce_recall(pool: str) -> None:
    """The recall of sampled correct lengths agrees with the analytic curve."""
    s = SyntheticStream(
        [f"q{i}" for i in range(4000)],
        np.full(4000, pool),
        _pool_curves(pool, 4000, seed=1),
        "custom",
    )
    ts = s.sample_traces(8, seed=3)
    tok, cor = ts.tokens(), ts.correct()
    lengths = tok[cor]
    emp = 100 * np.array([(lengths <= b).mean() for b in CHECK_BUDGETS])
    assert np.abs(emp - np.array(PAPER_RECALL[pool])).max() <= 6.0, emp


def test_pools_ordered_by_difficulty() -> None:
    med = [POOLS[p].median_tau for p in POOL_ORDER]
    width = [1 / POOLS[p].median_beta for p in POOL_ORDER]
    pm = [POOLS[p].p_mean for p in POOL_ORDER]
    assert med == sorted(med) and width == sorted(width) and pm == sorted(pm, reverse=True)


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_mixture_proportions(name: str) -> None:
    n = 1000
    s = make_stream(name, n, seed=5)
    assert s.n == n and len(set(s.ids)) == n and s.truth.n == n
    counts = np.array([(s.pool == p).sum() for p in POOL_ORDER])
    assert counts.sum() == n
    np.testing.assert_allclose(counts / n, STREAMS[name], atol=1.0 / n)
    # Shuffled, not blocks of one pool.
    assert len({str(p) for p in s.pool[:50]}) > 1


def test_stream_parameters_follow_pools() -> None:
    s = make_stream("balanced", 30_000, seed=2)
    for pool in POOL_ORDER:
        m = s.pool == pool
        assert np.median(s.tau[m]) == pytest.approx(POOLS[pool].median_tau, rel=0.05)
        assert s.truth.p[m].mean() == pytest.approx(POOLS[pool].p_mean, abs=0.02)


def test_determinism_by_seed() -> None:
    a, b, c = (
        make_stream("u-shaped", 500, 7),
        make_stream("u-shaped", 500, 7),
        make_stream("u-shaped", 500, 8),
    )
    assert a.ids == b.ids and (a.pool == b.pool).all()
    np.testing.assert_array_equal(a.truth.tau, b.truth.tau)
    np.testing.assert_array_equal(a.truth.p, b.truth.p)
    assert not np.array_equal(a.truth.tau, c.truth.tau)
    ta, tb, tc = a.sample_traces(4, seed=1), a.sample_traces(4, seed=1), a.sample_traces(4, 2)
    np.testing.assert_array_equal(ta.tokens(), tb.tokens())
    np.testing.assert_array_equal(ta.correct(), tb.correct())
    assert not np.array_equal(ta.tokens(), tc.tokens())


def test_sample_traces_shape_and_semantics() -> None:
    s = make_stream("mostly-hard", 300, seed=0)
    ts = s.sample_traces(6, seed=0, max_tokens=4096)
    assert isinstance(ts, TraceSet) and ts.ids == s.ids
    tok, cor = ts.tokens(), ts.correct()
    assert tok.shape == (300, 6) and not np.isnan(tok).any()
    assert (tok == np.rint(tok)).all() and tok.max() <= 4096
    # Nothing, right or wrong, is shorter than its threshold (rounding aside).
    assert (tok >= np.floor(s.tau)[:, None]).all()
    # The correct rate tracks p (up to truncation at the cap).
    assert cor.mean() == pytest.approx(s.truth.p.mean(), abs=0.03)
    assert ts.meta("pool") == s.pool.tolist()
    # Schema-valid although built through the trusted constructor.
    TraceSet(ts.records[:20])


def test_accuracy_and_round_trip(tmp_path) -> None:
    s = make_stream("balanced", 60, seed=4)
    assert s.accuracy(np.zeros(60)) == 0.0
    assert s.accuracy(np.full(60, 1e6)) == pytest.approx(s.truth.p.mean())
    path = tmp_path / "s.jsonl.gz"
    s.write_jsonl_gz(path)
    first = path.read_bytes()
    s.write_jsonl_gz(path)
    assert path.read_bytes() == first  # reproducible gzip
    sub = s.subset(slice(0, 10))
    assert sub.n == 10 and sub.ids == s.ids[:10]


def test_bundled_stream_is_the_seeded_stream() -> None:
    name, n, seed = BUNDLED_STREAMS["balanced-500"]
    b = load_stream("balanced-500")
    m = make_stream(name, n, seed)
    assert b.ids == m.ids and (b.pool == m.pool).all()
    np.testing.assert_allclose(b.truth.tau, m.truth.tau, rtol=1e-12)
    np.testing.assert_allclose(b.truth.beta, m.truth.beta, rtol=1e-12)
    np.testing.assert_allclose(b.truth.p, m.truth.p, rtol=1e-12)
    with pytest.raises(KeyError):
        load_stream("nope")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown stream"):
        make_stream("chaotic", 10)
    with pytest.raises(ValueError, match="n must be"):
        make_stream("balanced", 0)
    with pytest.raises(ValueError, match="samples"):
        make_stream("balanced", 5).sample_traces(0)


def test_scales_to_1e5_queries() -> None:
    # Speed is measured in docs/benchmarks.md; here only that 1e5+ queries work.
    s = make_stream("mostly-easy", 200_000, seed=0)
    assert s.n == 200_000
    ts = s.subset(slice(0, 100_000)).sample_traces(4, seed=0)
    assert ts.n == 100_000


def test_largest_remainder_splits_exactly() -> None:
    from shadowprice.evaluate.streams import largest_remainder

    assert largest_remainder(10, (1 / 3, 1 / 3, 1 / 3)).tolist() == [4, 3, 3]
    assert largest_remainder(7, (0.7, 0.2, 0.1)).tolist() == [5, 1, 1]
    assert largest_remainder(0, (1, 2)).tolist() == [0, 0]
    assert largest_remainder(1000, (2, 1, 1)).sum() == 1000
    for bad_n, weights in [(-1, (1, 1)), (2.5, (1, 1)), (3, ()), (3, (0, 0)), (3, (1, -1))]:
        with pytest.raises(ValueError, match="must be"):
            largest_remainder(bad_n, weights)
