"""Curves from traces: empirical, shrunk (empirical Bayes), surge and Gamma fits, fit report."""

from __future__ import annotations

import numpy as np
import pytest

from shadowprice.curves import EmpiricalCurve, GammaSCurve, ShiftedSurge, TabulatedCurve
from shadowprice.fit import (
    UNREACHABLE_TAU,
    GammaFitter,
    ShrunkCurveFitter,
    SurgeFitter,
    empirical_curves,
    fit_beta_binomial,
    fit_gamma,
    fit_shrunk,
    fit_surge,
    goodness_of_fit,
)
from shadowprice.traces import TraceSet


def _synthetic(n: int = 60, s: int = 4, seed: int = 0) -> TraceSet:
    """Queries with log-normal correct lengths around a per-query scale; ~10% unsolvable."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(np.log(300), 0.5, n))
    p = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.5, 1.0, n))
    tok = np.round(scale[:, None] * np.exp(rng.normal(0, 0.25, (n, s))))
    cor = rng.random((n, s)) < p[:, None]
    return TraceSet.from_arrays([f"q{i}" for i in range(n)], tok, cor)


def test_empirical_curves_match_counts() -> None:
    ts = TraceSet(
        [
            {
                "id": "a",
                "samples": [{"tokens": 10, "correct": True}, {"tokens": 30, "correct": False}],
            }
        ]
    )
    c = empirical_curves(ts)
    assert isinstance(c, EmpiricalCurve)
    assert c.value(np.array([9.0])).tolist() == [0.0]
    assert c.value(np.array([10.0])).tolist() == [0.5]


def test_beta_binomial_prior() -> None:
    k = np.array([0, 4, 4, 2, 3, 4, 1, 4])
    n = np.full(8, 4)
    prior = fit_beta_binomial(k, n)
    assert 0 < prior.mean < 1 and prior.strength > 0
    post = prior.posterior_mean(k, n)
    # Shrinkage pulls toward the prior mean, keeps the order, stays inside (0, 1).
    assert np.all(np.abs(post - prior.mean) <= np.abs(k / n - prior.mean) + 1e-12)
    assert np.all(np.diff(post[np.argsort(k, kind="stable")]) >= -1e-12)
    with pytest.raises(ValueError):
        fit_beta_binomial(np.array([5]), np.array([4]))


def test_shrunk_curves_are_monotone_probabilities() -> None:
    ts = _synthetic()
    f = ShrunkCurveFitter().fit(ts)
    c = f.curves_
    assert isinstance(c, TabulatedCurve) and c.n == ts.n
    assert np.all(c.values[:, 0] == 0)
    assert np.all(np.diff(c.values, axis=1) >= 0)
    assert np.all((c.values >= 0) & (c.values <= 1))
    # Unsolved queries keep a small positive chance; fully solved ones stay below 1.
    k = ts.correct().sum(axis=1)
    assert np.all(f.p_[k == 0] > 0) and np.all(f.p_[k == 4] < 1)


def test_shrinkage_helps_on_held_out_samples() -> None:
    fit = _synthetic(n=200, s=4, seed=1)
    held = _synthetic(n=200, s=64, seed=1)  # same queries (same seed), many more samples
    raw = goodness_of_fit(empirical_curves(fit), held)
    shrunk = goodness_of_fit(fit_shrunk(fit), held)
    assert shrunk["brier"] < raw["brier"]
    assert shrunk["log_loss"] < raw["log_loss"]
    assert set(shrunk["per_budget"].columns) >= {"budget", "predicted", "observed", "mae"}


def test_surge_recipe() -> None:
    ts = _synthetic()
    f = SurgeFitter().fit(ts)
    assert isinstance(f.curves_, ShiftedSurge) and f.curves_.shared_shape
    t, c = ts.tokens(), ts.correct()
    solved = c.any(axis=1)
    shortest = np.nanmin(np.where(c, t, np.nan)[solved], axis=1)
    np.testing.assert_allclose(f.tau_[solved], shortest)
    assert np.all(f.tau_[~solved] == UNREACHABLE_TAU)  # unsolved: beyond any budget
    g = SurgeFitter(unsolved_factor=2.0).fit(ts)
    assert np.all(g.tau_[~solved] == 2.0 * np.nanmax(t))
    assert f.beta_ > 0 and np.isfinite(f.r2_)
    assert isinstance(fit_surge(ts), ShiftedSurge)
    with pytest.raises(TypeError, match="as_probability"):
        goodness_of_fit(f.curves_, ts)
    assert goodness_of_fit(f.as_probability(), ts)["mae"] >= 0


def test_gamma_fit() -> None:
    c = fit_gamma(_synthetic())
    assert isinstance(c, GammaSCurve)
    assert np.all(c.tau >= 0) and np.all((c.p > 0) & (c.p < 1))


def test_validation_at_boundary() -> None:
    with pytest.raises(TypeError, match="TraceSet"):
        fit_shrunk([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strength"):
        ShrunkCurveFitter(strength=-1)
    with pytest.raises(ValueError, match="grid"):
        fit_shrunk(_synthetic(), grid=[5, 10])
    # Fitted curves are the curves_ attribute; using a fitter before fit says so.
    with pytest.raises(RuntimeError, match=r"call fit\(traces\) first.*curves_"):
        ShrunkCurveFitter().pool_curve(3)
    with pytest.raises(RuntimeError, match="not fitted"):
        SurgeFitter().as_probability()
    for fitter in (ShrunkCurveFitter(), SurgeFitter(), GammaFitter()):
        assert not hasattr(fitter, "predict_curves")  # the name belongs to real predictions
        assert fitter.fit(_synthetic()).curves_.n == _synthetic().n


@pytest.mark.parametrize("error", [RuntimeError("no convergence"), ValueError("bad bounds")])
def test_surge_fit_falls_back_when_curve_fit_fails(monkeypatch: pytest.MonkeyPatch, error) -> None:
    """When least squares fails, beta is the moment estimate 2 / mean excess length."""
    import shadowprice.fit as fit_module

    ts = _synthetic()
    t, c = ts.tokens(), ts.correct() & ~np.isnan(ts.tokens())
    tau = np.array([row[ok].min() if ok.any() else np.nan for row, ok in zip(t, c, strict=True)])
    excess = (t - tau[:, None])[c]
    excess = excess[excess > 0]

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(fit_module.optimize, "curve_fit", failing)
    f = SurgeFitter().fit(ts)
    assert f.beta_ == pytest.approx(2.0 / excess.mean())
    # The histogram is still reported, against the fallback shape, with its (poor) fit.
    assert len(f.histogram_) == 30 and np.isfinite(f.r2_)
    assert f.curves_.n == ts.n
