"""Trace-driven traffic against the online pricer, scored against hindsight batch CLEAR.

**Traffic.** Requests arrive over time (:func:`make_traffic`):

- ``steady``: a Poisson process at ``rate`` requests/s, a fixed mix of easy, medium and hard;
- ``bursty``: a Markov-modulated Poisson process (quiet spells at half the rate, bursts at
  three times it, mean rate ``rate``), same mix;
- ``drifting``: the rate swings +-40 % over the run and the mix drifts from mostly easy
  (70/20/10) to mostly hard (10/20/70).

Each request's outcome comes from a source of real or calibrated behaviour:

- ``synthetic``: the calibrated pools of :mod:`shadowprice.evaluate.streams` (GSM8K-, MATH500-
  and AIME-like): a request is solvable with probability p, and its answer runs tau + Gamma(2,
  beta) tokens if correct (twice as long on average if not); its predicted threshold is
  tau x lognormal noise of width ``noise`` (a text predictor's error);
- ``real``: the bundled real traces (100 MATH problems x 8 Qwen2.5-Math samples; levels 1-3
  easy, 4-5 hard): a request replays one recorded sample (its length and correctness), and its
  threshold is the bundled text predictor's.

**Serving.** Event-driven in simulated time with the real :class:`~shadowprice.ledger.MemoryLedger`
(periods aligned to the epoch): at arrival the pricer quotes an allowance, the ledger reserves it
(partial grants down to the quote's ``least``), the request decodes at ``speed`` tokens/s and
settles ``min(length, allowance)`` tokens when it finishes (unused tokens return); it is correct
iff its answer is correct and fits in the allowance. The price is re-cleared every ``tick``.

**Hindsight.** For each period, batch CLEAR over the same requests with the same predicted
curves and the period's budget (``allocate(..., "clear")``: allowances add up to at most B), and
a stronger ceiling that also knows how many tokens each request will really use: the largest
batch budget B' whose real spending min(length, b_i) stays within B (``hindsight_recycled``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..allocate import allocate
from ..ledger import MemoryLedger
from ..online.pricer import DualAscentPricer, OnlinePricer
from ..online.prior import PopulationPrior
from ..online.shape import Shape, SurgeShape, shape_terms

__all__ = [
    "MIXES",
    "SimulationResult",
    "Traffic",
    "hindsight",
    "make_traffic",
    "plot_simulation",
    "simulate",
]

Mix = Literal["steady", "bursty", "drifting"]
Source = Literal["synthetic", "real"]
Policy = Literal["reclear", "dual", "fcfs"]

#: Traffic mixes :func:`make_traffic` knows.
MIXES: tuple[Mix, ...] = ("steady", "bursty", "drifting")

#: (easy, medium, hard) shares of the steady and bursty mixes, and the drifting mix's ends.
STEADY_SHARES = (0.5, 0.3, 0.2)
DRIFT_FROM, DRIFT_TO = (0.7, 0.2, 0.1), (0.1, 0.2, 0.7)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Traffic:
    """N requests in arrival order.

    Attributes
    ----------
    arrival : ndarray (N,)
        Arrival times, seconds since the epoch, ascending.
    tau_hat : ndarray (N,)
        Predicted thresholds, tokens.
    length : ndarray of int (N,)
        Tokens each answer runs when not cut off.
    correct : ndarray of bool (N,)
        Whether that answer is correct (it counts only if it fits in the allowance).
    cap : ndarray of int (N,)
        The client's ``max_tokens``.
    hard : ndarray of bool (N,)
        Request from the hard pool (for reporting the mix).
    mix, source : str
        What generated it.
    """

    arrival: FloatArray
    tau_hat: FloatArray
    length: IntArray
    correct: NDArray[np.bool_]
    cap: IntArray
    hard: NDArray[np.bool_]
    mix: str
    source: str

    @property
    def n(self) -> int:
        return int(self.arrival.size)


def _arrivals(mix: Mix, n: int, rate: float, rng: np.random.Generator) -> FloatArray:
    """n arrival offsets (seconds from 0) of the mix's arrival process."""
    if mix == "steady":
        return np.cumsum(rng.exponential(1.0 / rate, n))
    horizon = 1.6 * n / rate
    seconds = np.arange(int(horizon) + 1, dtype=float)
    if mix == "bursty":
        # Alternate quiet (mean 40 s at 0.5x) and burst (mean 10 s at 3x) spells: mean rate 1x.
        level = np.empty_like(seconds)
        t, burst = 0, False
        while t < seconds.size:
            span = max(1, int(rng.exponential(10.0 if burst else 40.0)))
            level[t : t + span] = 3.0 if burst else 0.5
            t, burst = t + span, not burst
    else:
        level = 1.0 + 0.4 * np.sin(2 * np.pi * seconds / (n / rate / 2.0))
    counts = rng.poisson(rate * level)
    times = np.repeat(seconds, counts) + rng.random(int(counts.sum()))
    times.sort()
    if times.size < n:  # pragma: no cover - the horizon holds 1.6x the expected arrivals
        raise RuntimeError("arrival horizon too short")
    return times[:n]


def _shares(mix: Mix, progress: FloatArray) -> FloatArray:
    """(N, 3) pool probabilities at each request's position in the run, in [0, 1]."""
    if mix != "drifting":
        return np.broadcast_to(np.array(STEADY_SHARES), (progress.size, 3))
    a, b = np.array(DRIFT_FROM), np.array(DRIFT_TO)
    return a[None, :] + progress[:, None] * (b - a)[None, :]


def make_traffic(
    mix: Mix = "steady",
    n: int = 100_000,
    *,
    rate: float = 25.0,
    source: Source = "synthetic",
    noise: float = 0.5,
    cap: int = 4096,
    short_cap: int = 1024,
    short_share: float = 0.2,
    start: float = 0.0,
    seed: int = 0,
) -> Traffic:
    """Draw ``n`` requests of traffic ``mix`` from ``source`` (see the module docstring).

    Parameters
    ----------
    mix : {'steady', 'bursty', 'drifting'}
    n : int
        Requests (>= 1).
    rate : float
        Mean arrivals per second (> 0).
    source : {'synthetic', 'real'}
    noise : float
        Log-normal width of the synthetic predictor's error (>= 0).
    cap, short_cap, short_share : int, int, float
        Clients ask ``max_tokens = cap``, except a ``short_share`` of them ``short_cap``.
    start : float
        Time of the run's start, seconds since the epoch (a period boundary keeps periods whole).
    seed : int
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    if source not in ("synthetic", "real"):
        raise ValueError(f"source must be 'synthetic' or 'real', got {source!r}")
    if n < 1 or not rate > 0 or noise < 0:
        raise ValueError("n must be >= 1, rate > 0 and noise >= 0")
    rng = np.random.default_rng(seed)
    arrival = start + _arrivals(mix, n, rate, rng)
    shares = _shares(mix, np.linspace(0.0, 1.0, n))
    u = rng.random(n)
    pool = (u[:, None] > np.cumsum(shares, axis=1)).sum(axis=1).clip(0, 2)
    caps = np.where(rng.random(n) < short_share, short_cap, cap).astype(np.int64)
    if source == "synthetic":
        tau_hat, length, correct = _synthetic(pool, noise, rng)
    else:
        tau_hat, length, correct = _real(pool, rng)
    return Traffic(arrival, tau_hat, length, correct, caps, pool == 2, mix, source)


def _synthetic(pool: IntArray, noise: float, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    from .streams import MAX_SAMPLE_TOKENS, POOL_ORDER, POOLS

    n = pool.size
    tau, beta, p = np.empty(n), np.empty(n), np.empty(n)
    for k, name in enumerate(POOL_ORDER):
        m = pool == k
        tau[m], beta[m], p[m] = POOLS[name].sample(int(m.sum()), rng)
    correct = rng.random(n) < p
    rate = np.where(correct, beta, 0.5 * beta)
    length = np.minimum(np.rint(tau + rng.gamma(2.0, 1.0, n) / rate), MAX_SAMPLE_TOKENS)
    tau_hat = tau * np.exp(noise * rng.standard_normal(n))
    return tau_hat, length.astype(np.int64), correct


def _real(pool: IntArray, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    from ..predict import load_predictor
    from ..traces import load_traces
    from ..traces.bundled import REAL_TRACE_SET

    ts = load_traces(REAL_TRACE_SET)
    level = np.array([int(v or 3) for v in ts.meta("level")])
    predicted = load_predictor("default").predict([q or "" for q in ts.questions()])
    tokens, correct = ts.tokens(), ts.correct()
    easy, hard = np.flatnonzero(level <= 3), np.flatnonzero(level >= 4)
    # Two real pools: the medium share is split between them.
    hard_req = (pool == 2) | ((pool == 1) & (rng.random(pool.size) < 0.5))
    q = np.where(hard_req, rng.choice(hard, pool.size), rng.choice(easy, pool.size))
    k = rng.integers(0, ts.n_samples()[q])
    length = tokens[q, k].astype(np.int64)
    return predicted[q], length, correct[q, k].astype(bool)


@dataclass
class SimulationResult:
    """Per-period outcome of one simulated run.

    Attributes
    ----------
    period : ndarray of int (K,)
        Period indices (seconds since the epoch // period length).
    requests, online, hindsight, hindsight_recycled : ndarray (K,)
        Requests arriving in each period and how many were answered correctly online, by batch
        CLEAR in hindsight and by the recycling-aware hindsight ceiling.
    spent : ndarray (K,)
        Tokens settled to each period online.
    demand : ndarray (K,)
        Tokens the period's requests would use at price 0 (each granted min(cap, the peak of
        its curve), no budget): "demand exceeds the budget" means this exceeds B.
    priced_out, exhausted : ndarray (K,)
        Requests refused by the price and by an empty ledger.
    times, prices : ndarray (U,)
        The price after each update.
    budget : int
    summary : dict
        Totals and the targets (see :meth:`summarise`).
    """

    period: IntArray
    requests: IntArray
    online: IntArray
    hindsight: IntArray
    hindsight_recycled: IntArray
    spent: IntArray
    demand: IntArray
    priced_out: IntArray
    exhausted: IntArray
    times: FloatArray
    prices: FloatArray
    budget: int
    mix: str
    policy: str
    summary: dict[str, Any] = field(default_factory=dict)

    def summarise(self, skip: int = 1) -> dict[str, Any]:
        """Totals over all periods but the first ``skip`` (the pricer's warm-up) and the last
        (cut short by the end of the traffic)."""
        s = slice(skip, max(skip + 1, self.period.size - 1))
        scarce = self.demand[s] > self.budget
        used = self.spent[s] / self.budget
        out = {
            "mix": self.mix,
            "policy": self.policy,
            "periods": int(self.period[s].size),
            "requests": int(self.requests[s].sum()),
            "accuracy_online": float(self.online[s].sum() / max(1, self.requests[s].sum())),
            "accuracy_hindsight": float(self.hindsight[s].sum() / max(1, self.requests[s].sum())),
            "accuracy_hindsight_recycled": float(
                self.hindsight_recycled[s].sum() / max(1, self.requests[s].sum())
            ),
            "ratio_vs_hindsight": float(self.online[s].sum() / max(1, self.hindsight[s].sum())),
            "ratio_vs_recycled": float(
                self.online[s].sum() / max(1, self.hindsight_recycled[s].sum())
            ),
            "max_spent_share": float(used.max()) if used.size else 0.0,
            "min_spent_share_when_scarce": float(used[scarce].min()) if scarce.any() else None,
            "mean_spent_share_when_scarce": float(used[scarce].mean()) if scarce.any() else None,
            "scarce_periods": int(scarce.sum()),
            "over_budget_periods": int((self.spent > self.budget).sum()),
            "priced_out_share": float(self.priced_out[s].sum() / max(1, self.requests[s].sum())),
            "exhausted_share": float(self.exhausted[s].sum() / max(1, self.requests[s].sum())),
        }
        self.summary = out
        return out


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _make_pricer(policy: Policy, budget: int, period: float, shape: Shape, learn_scale: bool):  # type: ignore[no-untyped-def]
    prior = PopulationPrior(short_excess=shape.short_excess, learn_scale=learn_scale)
    if policy == "dual":
        return DualAscentPricer(budget, period, shape, prior=prior)
    return OnlinePricer(budget, period, shape, prior=prior)


def simulate(
    traffic: Traffic,
    budget: int,
    period: float = 60.0,
    *,
    policy: Policy = "reclear",
    shape: Shape | None = None,
    tick: float = 1.0,
    speed: float = 100.0,
    learn_scale: bool = False,
) -> SimulationResult:
    """Serve ``traffic`` with one pricer and ledger; score per period against hindsight.

    Parameters
    ----------
    traffic : Traffic
    budget : int
        Tokens per period.
    period : float
        Period length, seconds.
    policy : {'reclear', 'dual', 'fcfs'}
        Re-clearing (:class:`OnlinePricer`), dual ascent (:class:`DualAscentPricer`), or first
        come first served at price 0 (what a counting gateway does: everyone gets its curve's
        peak until the budget runs out).
    shape : Shape, optional
        The predicted curves' shape (default :class:`SurgeShape`).
    tick : float
        Seconds between price updates.
    speed : float
        Decode speed, tokens/s (a request finishes ``used / speed`` seconds after arriving).
    learn_scale : bool
        Let the population prior rescale predicted thresholds (off by default: with the
        surge shape it costs accuracy on these pools, see ``docs/benchmarks.md``).
    """
    shape = shape or SurgeShape()
    clock = _Clock()
    ledger = MemoryLedger(budget, period=period, clock=clock)
    pricer = _make_pricer(policy, budget, period, shape, learn_scale)
    t = traffic
    n = t.n
    granted = np.zeros(n, dtype=np.int64)
    refused = np.zeros(n, dtype=np.int8)  # 1 priced out, 2 ledger exhausted
    spent: dict[int, int] = {}
    running: list[tuple[float, int, Any]] = []
    times: list[float] = []
    prices: list[float] = []
    next_tick = float(t.arrival[0])

    def finish_until(now: float) -> None:
        while running and running[0][0] <= now:
            end, i, res = heapq.heappop(running)
            clock.t = end
            used = int(min(t.length[i], res.tokens))
            ledger.settle_now(res, used)
            spent[res.period] = spent.get(res.period, 0) + used
            reason = "stop" if t.length[i] <= res.tokens else "length"
            pricer.learn(float(t.tau_hat[i]), int(res.tokens), used, reason)

    for i in range(n):
        now = float(t.arrival[i])
        finish_until(now)
        clock.t = now
        if now >= next_tick and policy != "fcfs":
            s = ledger.state_now()
            times.append(now)
            prices.append(pricer.update(now, s.spent, s.reserved))
            next_tick = now + tick
        tau_hat, cap = float(t.tau_hat[i]), int(t.cap[i])
        pricer.observe(now, tau_hat, cap)
        q = pricer.quote(tau_hat, cap)
        if q.allowance <= 0:
            refused[i] = 1
            continue
        res = ledger.reserve_now(q.allowance, min_tokens=q.least, tag=str(i))
        if res is None:
            refused[i] = 2
            continue
        granted[i] = res.tokens
        used = min(int(t.length[i]), res.tokens)
        heapq.heappush(running, (now + used / speed, i, res))
    finish_until(math.inf)
    return _score(t, granted, refused, spent, budget, period, shape, times, prices, policy)


def _score(
    t: Traffic,
    granted: IntArray,
    refused: NDArray[np.int8],
    spent: dict[int, int],
    budget: int,
    period: float,
    shape: Shape,
    times: list[float],
    prices: list[float],
    policy: str,
) -> SimulationResult:
    index = (t.arrival // period).astype(np.int64)
    peak = np.minimum(t.cap, t.tau_hat + shape_terms(shape, 0.0)[0])
    periods = np.unique(index)
    ok_online = t.correct & (t.length <= granted) & (granted > 0)
    rows: dict[str, list[int]] = {k: [] for k in ("req", "on", "hs", "hr", "sp", "dem", "po", "ex")}
    for k in periods:
        m = index == k
        hs, hr = hindsight(t, m, budget, shape)
        rows["req"].append(int(m.sum()))
        rows["on"].append(int(ok_online[m].sum()))
        rows["hs"].append(hs)
        rows["hr"].append(hr)
        rows["sp"].append(spent.get(int(k), 0))
        rows["dem"].append(int(np.minimum(t.length[m], peak[m]).sum()))
        rows["po"].append(int((refused[m] == 1).sum()))
        rows["ex"].append(int((refused[m] == 2).sum()))
    arr = {k: np.array(v, dtype=np.int64) for k, v in rows.items()}
    result = SimulationResult(
        periods,
        arr["req"],
        arr["on"],
        arr["hs"],
        arr["hr"],
        arr["sp"],
        arr["dem"],
        arr["po"],
        arr["ex"],
        np.array(times),
        np.array(prices),
        budget,
        t.mix,
        policy,
    )
    result.summarise()
    return result


def hindsight(
    t: Traffic, mask: NDArray[np.bool_], budget: int, shape: Shape, steps: int = 14
) -> tuple[int, int]:
    """Correct answers of batch CLEAR over the requests in ``mask`` (allowances sum <= B), and
    of the recycling-aware ceiling (the largest batch budget whose real use fits in B)."""
    tau, cap = t.tau_hat[mask], t.cap[mask]
    length, correct = t.length[mask], t.correct[mask]
    curves = shape.curves(tau)

    def solved_and_used(b_total: int) -> tuple[int, int]:
        b = allocate(curves, b_total, "clear", max_tokens=cap).budgets
        return int((correct & (length <= b) & (b > 0)).sum()), int(np.minimum(length, b).sum())

    plain, _ = solved_and_used(budget)
    lo, hi = budget, budget
    best = plain
    # Grow until real use exceeds the budget, then bisect on the batch budget.
    while True:
        hi *= 2
        solved, used = solved_and_used(hi)
        if used > budget or hi > 64 * budget:
            break
        lo, best = hi, solved
    for _ in range(steps):
        mid = (lo + hi) // 2
        if mid <= lo:
            break
        solved, used = solved_and_used(mid)
        if used <= budget:
            lo, best = mid, solved
        else:
            hi = mid
    return plain, best


def plot_simulation(results: list[SimulationResult], path: str | Path, period: float) -> Path:
    """Price over time, spend vs budget per period, and accuracy vs hindsight, one column per
    run; written as PNG (headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(results), figsize=(4.2 * len(results), 8.5), squeeze=False)
    for j, r in enumerate(results):
        t0 = float(r.period[0]) * period
        ax = axes[0, j]
        ax.plot((r.times - t0) / 60.0, r.prices, lw=0.8)
        ax.set_title(f"{r.mix} ({r.policy})")
        ax.set_ylabel("shadow price λ")
        ax.set_xlabel("minutes")
        ax = axes[1, j]
        k = np.arange(r.period.size)
        ax.bar(k, r.spent / r.budget, color="tab:blue", label="spent / budget")
        ax.plot(k, np.minimum(r.demand / r.budget, 3.0), "k.", ms=3, label="demand / budget")
        ax.axhline(1.0, color="red", lw=0.8)
        ax.axhline(0.95, color="red", lw=0.5, ls="--")
        ax.set_ylim(0, 3.1)
        ax.set_xlabel("period")
        ax.legend(fontsize=7, loc="upper left")
        ax = axes[2, j]
        req = np.maximum(r.requests, 1)
        ax.plot(k, r.online / req, label="online")
        ax.plot(k, r.hindsight / req, label="hindsight CLEAR")
        ax.plot(k, r.hindsight_recycled / req, label="hindsight + recycling", ls=":")
        ax.set_ylabel("accuracy")
        ax.set_xlabel("period")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
