"""Named traffic scenarios for the online decision core, each run through :func:`simulate`.

A scenario fixes the arrival process, the budget (tokens per request on average, or the
*pressure*: the demand at price 0 over the budget), the period and the number of replicas;
:func:`run_scenario` draws its traffic from a source (calibrated synthetic pools or the bundled
real traces), serves it with a policy and an upstream, and returns the
:class:`~.traffic.SimulationResult`. The same seeds give the same figures on any machine.

:data:`SCENARIOS`:

- ``steady``, ``bursty``, ``drifting``, ``diurnal``: the mixes of :func:`make_traffic` at 25
  requests/s, 60 s periods, 300 tokens per request on average;
- ``repeated``: one question asked over and over (every request the same curve) at 3x the
  budget;
- ``flood``: the steady mix with a budget of 30 tokens per request, far below demand;
- ``below``: the steady mix with 1000 tokens per request, more than it asks for;
- ``replicas2``, ``replicas4``: the steady mix split among 2 and 4 replicas sharing one
  ledger;
- three short runs from a fresh start (no history, price 0 until 8 requests are seen):
  ``repeat_3x`` (one question at 5 requests/s and 3x the budget, one 60 s period),
  ``replicas2_fresh`` (the same on 2 replicas at 2.3x) and ``trickle`` (8 requests within a
  second, then one every 5 s, under an hourly budget 3x below demand).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..online.shape import Shape, SurgeShape, shape_terms
from .traffic import (
    Mix,
    Policy,
    SimulationResult,
    Source,
    Traffic,
    Upstream,
    make_traffic,
    simulate,
)

__all__ = ["SCENARIOS", "Scenario", "budget_for", "run_scenario"]


@dataclass(frozen=True)
class Scenario:
    """A traffic scenario (see the module docstring).

    Attributes
    ----------
    name : str
    mix : str
        The arrival process (:func:`make_traffic`).
    n : int
        Requests in a full run.
    rate : float
        Mean arrivals per second.
    period : float
        Budget period, seconds.
    per_request : int or None
        Budget per period = ``rate * period * per_request``; else set by ``pressure``.
    pressure : float or None
        Budget per period = demand at price 0 per period / ``pressure``.
    replicas : int
        Decision cores sharing the ledger.
    same_question : bool
        Every request is the same question.
    skip : int
        Warm-up periods left out of the summary (0 for runs from a fresh start).
    """

    name: str
    mix: Mix
    n: int
    rate: float = 25.0
    period: float = 60.0
    per_request: int | None = 300
    pressure: float | None = None
    replicas: int = 1
    same_question: bool = False
    skip: int = 1

    def traffic(
        self, source: Source = "synthetic", n: int | None = None, seed: int = 7, noise: float = 0.5
    ) -> Traffic:
        """This scenario's requests (``n`` overrides the full run's count; ``noise`` is the
        synthetic predictor's error)."""
        return make_traffic(
            self.mix,
            self.n if n is None else n,
            rate=self.rate,
            source=source,
            noise=noise,
            same_question=self.same_question,
            seed=seed,
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("steady", "steady", 100_000),
        Scenario("bursty", "bursty", 100_000),
        Scenario("drifting", "drifting", 100_000),
        Scenario("diurnal", "diurnal", 100_000),
        Scenario("repeated", "steady", 100_000, per_request=None, pressure=3.0, same_question=True),
        Scenario("flood", "steady", 100_000, per_request=30),
        Scenario("below", "steady", 100_000, per_request=1000),
        Scenario("replicas2", "steady", 100_000, replicas=2),
        Scenario("replicas4", "steady", 100_000, replicas=4),
        Scenario(
            "repeat_3x",
            "steady",
            300,
            rate=5.0,
            per_request=None,
            pressure=3.0,
            same_question=True,
            skip=0,
        ),
        Scenario(
            "replicas2_fresh",
            "steady",
            230,
            rate=5.0 * 230 / 300,
            per_request=None,
            pressure=2.3,
            replicas=2,
            same_question=True,
            skip=0,
        ),
        Scenario(
            "trickle",
            "trickle",
            8 + 720,
            rate=0.2,
            period=3600.0,
            per_request=None,
            pressure=3.0,
            same_question=True,
            skip=0,
        ),
    )
}


def budget_for(
    scenario: Scenario,
    traffic: Traffic,
    upstream: Upstream = "lengths",
    shape: Shape | None = None,
    per_request: int | None = None,
) -> int:
    """Tokens per period of ``scenario`` on ``traffic`` (see :class:`Scenario`);
    ``per_request`` overrides the tokens per request of a scenario budgeted by them."""
    if scenario.per_request is not None:
        per = scenario.per_request if per_request is None else per_request
        return int(scenario.rate * scenario.period * per)
    assert scenario.pressure is not None
    peak = np.minimum(traffic.cap, traffic.tau_hat + shape_terms(shape or SurgeShape(), 0.0)[0])
    used = peak if upstream == "spend_all" else np.minimum(traffic.length, peak)
    start = np.floor(traffic.arrival[0] / scenario.period) * scenario.period
    periods = max(1.0, (float(traffic.arrival[-1]) - start) / scenario.period)
    return int(float(used.sum()) / periods / scenario.pressure)


def run_scenario(
    name: str,
    policy: Policy = "paced",
    *,
    source: Source = "synthetic",
    upstream: Upstream = "lengths",
    n: int | None = None,
    tick: float = 0.25,
    margin: float = 0.2,
    seed: int = 7,
    noise: float = 0.5,
    per_request: int | None = None,
) -> SimulationResult:
    """Serve scenario ``name`` with ``policy``; see :func:`simulate` for the options.

    ``n`` shortens a long scenario to that many requests (the fresh-start ones are short);
    ``noise`` is the synthetic predictor's error and ``per_request`` overrides the budget of a
    scenario budgeted in tokens per request (:func:`budget_for`).
    """
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {sorted(SCENARIOS)}, got {name!r}")
    sc = SCENARIOS[name]
    traffic = sc.traffic(source, sc.n if n is None else min(n, sc.n), seed, noise)
    return simulate(
        traffic,
        budget_for(sc, traffic, upstream, per_request=per_request),
        sc.period,
        policy=policy,
        tick=tick,
        replicas=sc.replicas,
        upstream=upstream,
        margin=margin,
        seed=seed,
        skip=sc.skip,
    )
