"""Trace-driven traffic through the online decision core, scored against hindsight batch CLEAR.

**Traffic.** Requests arrive over time (:func:`make_traffic`):

- ``steady``: a Poisson process at ``rate`` requests/s, a fixed mix of easy, medium and hard;
- ``bursty``: a Markov-modulated Poisson process (quiet spells at half the rate, bursts at
  three times it, mean rate ``rate``), same mix;
- ``drifting``: the rate swings +-40 % over the run and the mix drifts from mostly easy
  (70/20/10) to mostly hard (10/20/70);
- ``diurnal``: one compressed day over the run, the rate rising from 0.2x to 1.8x and back;
- ``trickle``: 8 requests within a second, then one every 1 / ``rate`` seconds.

``same_question=True`` makes every request the same question (one prompt template: the same
predicted threshold for all, the answers' lengths and correctness drawn for that question).
Each request's outcome comes from a source of real or calibrated behaviour:

- ``synthetic``: the calibrated pools of :mod:`shadowprice.evaluate.streams` (GSM8K-, MATH500-
  and AIME-like): a request is solvable with probability p, and its answer runs tau + Gamma(2,
  beta) tokens if correct (twice as long on average if not); its predicted threshold is
  tau x lognormal noise of width ``noise`` (a text predictor's error);
- ``real``: the bundled real traces (100 MATH problems x 8 Qwen2.5-Math samples; levels 1-3
  easy, 4-5 hard): a request replays one recorded sample (its length and correctness), and its
  threshold is the bundled text predictor's.

**Serving** (:func:`simulate`). Event-driven in simulated time: one or several
:class:`~shadowprice.online.DecisionCore` (the gateway's own decision code, one per replica,
the traffic split among them in turn) in front of one real
:class:`~shadowprice.ledger.MemoryLedger` (periods aligned to the epoch). At arrival the core
decides, the ledger reserves the allowance (partial grants down to the offer's ``least``), the
request decodes at ``speed`` tokens/s and settles what it generated when it finishes: with the
``lengths`` upstream ``min(length, allowance)`` (unused tokens return), with ``spend_all`` the
whole allowance (an upstream that always runs to ``max_tokens``). It is correct iff its answer
is correct and fits in the allowance. Each replica re-prices every ``tick`` from the ledger's
totals; replicas agree on a price like the Redis ledger's ``agree`` (the first to publish in a
tick sets it for all).

**Hindsight.** For each period, batch CLEAR over the same requests with the same predicted
curves and the period's budget (``allocate(..., "clear")``: allowances add up to at most B), and
a stronger ceiling that also knows how many tokens each request will really use: the largest
batch budget B' whose real spending min(length, b_i) stays within B (``hindsight_recycled``).
Expected utility is the sum of the predicted curves' values at the allowances granted.
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
from ..ledger import MemoryLedger, Reservation
from ..online import DecisionCore, Ticket
from ..online.paced import PacedPricer
from ..online.pricer import DualAscentPricer, OnlinePricer
from ..online.prior import PopulationPrior
from ..online.shape import Shape, SurgeShape, shape_terms

__all__ = [
    "MIXES",
    "POLICIES",
    "UPSTREAMS",
    "SimulationResult",
    "Traffic",
    "hindsight",
    "make_traffic",
    "plot_simulation",
    "plot_windows",
    "simulate",
]

Mix = Literal["steady", "bursty", "drifting", "diurnal", "trickle"]
Source = Literal["synthetic", "real"]
Policy = Literal["paced", "reclear", "dual", "fcfs"]
Upstream = Literal["lengths", "spend_all"]

#: Traffic mixes :func:`make_traffic` knows.
MIXES: tuple[Mix, ...] = ("steady", "bursty", "drifting", "diurnal", "trickle")
#: Policies :func:`simulate` knows: the paced core, the unpaced re-clearing one (the gateway's
#: pricer before pacing), dual ascent, and first come first served.
POLICIES: tuple[Policy, ...] = ("paced", "reclear", "dual", "fcfs")
#: Upstreams :func:`simulate` knows.
UPSTREAMS: tuple[Upstream, ...] = ("lengths", "spend_all")

#: (easy, medium, hard) shares of the steady and bursty mixes, and the drifting mix's ends.
STEADY_SHARES = (0.5, 0.3, 0.2)
DRIFT_FROM, DRIFT_TO = (0.7, 0.2, 0.1), (0.1, 0.2, 0.7)
#: The trickle mix: this many requests, this far apart (seconds), before the trickle.
TRICKLE_BURST, TRICKLE_GAP = 8, 0.1

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
    if mix == "trickle":
        k = min(n, TRICKLE_BURST)
        quick = TRICKLE_GAP * np.arange(k, dtype=float)
        after = quick[-1] + np.arange(1, n - k + 1, dtype=float) / rate
        return np.concatenate((quick, after))
    horizon = 1.6 * n / rate
    while True:  # a short run can fall in a quiet spell: draw a longer one until n arrive
        times = _modulated(mix, n, rate, horizon, rng)
        if times.size >= n:
            return times[:n]
        horizon *= 2.0


def _modulated(
    mix: Mix, n: int, rate: float, horizon: float, rng: np.random.Generator
) -> FloatArray:
    """Arrival offsets over ``horizon`` seconds of the mix's time-varying Poisson process."""
    seconds = np.arange(int(horizon) + 1, dtype=float)
    if mix == "bursty":
        # Alternate quiet (mean 40 s at 0.5x) and burst (mean 10 s at 3x) spells: mean rate 1x.
        level = np.empty_like(seconds)
        t, burst = 0, False
        while t < seconds.size:
            span = max(1, int(rng.exponential(10.0 if burst else 40.0)))
            level[t : t + span] = 3.0 if burst else 0.5
            t, burst = t + span, not burst
    elif mix == "diurnal":
        level = 1.0 - 0.8 * np.cos(2 * np.pi * seconds / (n / rate))
    else:
        level = 1.0 + 0.4 * np.sin(2 * np.pi * seconds / (n / rate / 2.0))
    counts = rng.poisson(rate * level)
    times = np.repeat(seconds, counts) + rng.random(int(counts.sum()))
    times.sort()
    return times


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
    same_question: bool = False,
    seed: int = 0,
) -> Traffic:
    """Draw ``n`` requests of traffic ``mix`` from ``source`` (see the module docstring).

    Parameters
    ----------
    mix : {'steady', 'bursty', 'drifting', 'diurnal', 'trickle'}
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
    same_question : bool
        Every request is the same (medium) question, asked with ``max_tokens = cap``.
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
    if same_question:
        pool[:] = 1
        caps[:] = cap
    if source == "synthetic":
        tau_hat, length, correct = _synthetic(pool, noise, rng, same_question)
    else:
        tau_hat, length, correct = _real(pool, rng, same_question)
    return Traffic(arrival, tau_hat, length, correct, caps, pool == 2, mix, source)


def _synthetic(
    pool: IntArray, noise: float, rng: np.random.Generator, same: bool
) -> tuple[Any, Any, Any]:
    from .streams import MAX_SAMPLE_TOKENS, POOL_ORDER, POOLS

    n = pool.size
    tau, beta, p = np.empty(n), np.empty(n), np.empty(n)
    if same:  # one question: its curve's parameters and its predicted threshold, n times
        tau[:], beta[:], p[:] = (v[0] for v in POOLS[POOL_ORDER[1]].sample(1, rng))
    else:
        for k, name in enumerate(POOL_ORDER):
            m = pool == k
            tau[m], beta[m], p[m] = POOLS[name].sample(int(m.sum()), rng)
    correct = rng.random(n) < p
    rate = np.where(correct, beta, 0.5 * beta)
    length = np.minimum(np.rint(tau + rng.gamma(2.0, 1.0, n) / rate), MAX_SAMPLE_TOKENS)
    error = np.exp(noise * rng.standard_normal(1 if same else n))
    tau_hat = tau * error
    return tau_hat, length.astype(np.int64), correct


def _real(pool: IntArray, rng: np.random.Generator, same: bool) -> tuple[Any, Any, Any]:
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
    if same:
        q[:] = q[0]
    k = rng.integers(0, ts.n_samples()[q])
    length = tokens[q, k].astype(np.int64)
    return predicted[q], length, correct[q, k].astype(bool)


#: Refusal codes of :attr:`SimulationResult.status` (0: admitted).
PRICED_OUT, EXHAUSTED, CAP_TOO_SMALL = 1, 2, 3
_CODES = {"priced_out": PRICED_OUT, "budget_exhausted": EXHAUSTED, "cap_too_small": CAP_TOO_SMALL}


@dataclass
class SimulationResult:
    """Per-period and per-request outcome of one simulated run.

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
        Requests refused by the price (or as ``cap_too_small``) and by an empty budget.
    utility, utility_hindsight : ndarray (K,)
        Expected utility (the predicted curves' values at the allowances) online and of batch
        CLEAR in hindsight.
    times, prices : ndarray (U,)
        The price after each update (of the first replica, after agreeing).
    arrival, granted, status : ndarray (N,)
        Per request: arrival time, tokens reserved (0 if refused), and 0 if admitted or the
        refusal's code (:data:`PRICED_OUT`, :data:`EXHAUSTED`, :data:`CAP_TOO_SMALL`).
    behind : ndarray of bool (N,)
        Spending lagged the pace line when the request arrived: the ledger's settled plus
        reserved tokens were below budget x elapsed share of the period.
    over_budget : int
        Tokens settled beyond any period's budget plus tokens charged beyond reservations.
    budget : int
    period_s, tick : float
        Period length and price-update interval, seconds.
    mix, policy : str
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
    utility: FloatArray
    utility_hindsight: FloatArray
    times: FloatArray
    prices: FloatArray
    arrival: FloatArray
    granted: IntArray
    status: NDArray[np.int8]
    behind: NDArray[np.bool_]
    over_budget: int
    budget: int
    period_s: float
    tick: float
    mix: str
    policy: str
    summary: dict[str, Any] = field(default_factory=dict)

    def summarise(self, skip: int = 1) -> dict[str, Any]:
        """Totals over all periods but the first ``skip`` (the pricer's warm-up) and the last
        (cut short by the end of the traffic; kept when it is the only one after ``skip``)."""
        s = slice(skip, max(skip + 1, self.period.size - 1))
        req = max(1, int(self.requests[s].sum()))
        scarce = self.demand[s] > self.budget
        used = self.spent[s] / self.budget
        kept = np.isin(self.arrival // self.period_s, self.period[s])
        out = {
            "mix": self.mix,
            "policy": self.policy,
            "periods": int(self.period[s].size),
            "requests": int(self.requests[s].sum()),
            "accuracy_online": float(self.online[s].sum() / req),
            "accuracy_hindsight": float(self.hindsight[s].sum() / req),
            "accuracy_hindsight_recycled": float(self.hindsight_recycled[s].sum() / req),
            "ratio_vs_hindsight": float(self.online[s].sum() / max(1, self.hindsight[s].sum())),
            "ratio_vs_recycled": float(
                self.online[s].sum() / max(1, self.hindsight_recycled[s].sum())
            ),
            "utility_per_request": float(self.utility[s].sum() / req),
            "utility_vs_hindsight": float(
                self.utility[s].sum() / max(1e-9, self.utility_hindsight[s].sum())
            ),
            "max_spent_share": float(used.max()) if used.size else 0.0,
            "min_spent_share_when_scarce": float(used[scarce].min()) if scarce.any() else None,
            "mean_spent_share_when_scarce": float(used[scarce].mean()) if scarce.any() else None,
            "scarce_periods": int(scarce.sum()),
            "over_budget_periods": int((self.spent > self.budget).sum()),
            "tokens_over_budget": int(self.over_budget),
            "priced_out_share": float(self.priced_out[s].sum() / req),
            "exhausted_share": float(self.exhausted[s].sum() / req),
            "granted_share": float((self.status[kept] == 0).mean()) if kept.any() else 0.0,
            "longest_lockout_behind_s": self.lockout(kept)[0],
            "lockout_refusals": self.lockout(kept)[1],
            "refused_windows_behind": int(self.windows(10.0, kept)["refused_behind"].sum()),
        }
        self.summary = out
        return out

    def lockout(self, mask: NDArray[np.bool_] | None = None) -> tuple[float, int]:
        """The longest stretch of total refusal while spending lagged the pace line.

        A stretch is a run of consecutive arrivals (of one period, among ``mask``) that were all
        refused while :attr:`behind`; its length runs from its first refused arrival to its
        last. Returns (seconds, refused arrivals) of the longest one, (0, 0) if none.
        """
        idx = np.flatnonzero(np.ones(self.arrival.size, bool) if mask is None else mask)
        best, best_n = 0.0, 0
        start, count, last_period = 0.0, 0, -1
        for i in idx:
            t = float(self.arrival[i])
            k = int(t // self.period_s)
            if self.status[i] == 0 or not self.behind[i] or k != last_period:
                count = 0
            last_period = k
            if self.status[i] != 0 and self.behind[i]:
                if count == 0:
                    start = t
                count += 1
                if count > best_n or t - start > best:
                    best, best_n = max(best, t - start), max(best_n, count)
        return best, best_n

    def windows(self, width: float = 10.0, mask: NDArray[np.bool_] | None = None) -> dict[str, Any]:
        """Arrivals and grants per window of ``width`` seconds, aligned to periods.

        Returns a dict of arrays (W,): ``start`` (seconds since the epoch), ``arrivals``,
        ``granted`` (admitted requests), ``share`` (granted / arrivals; NaN without arrivals),
        ``refused_behind`` (every arrival refused, each while spending lagged the pace line).
        """
        m = np.ones(self.arrival.size, bool) if mask is None else mask
        t = self.arrival[m]
        if t.size == 0:
            empty = np.zeros(0)
            keys = ("start", "arrivals", "granted", "share", "refused_behind")
            return {k: empty for k in keys}
        first = math.floor(float(t[0]) / self.period_s) * self.period_s
        w = ((t - first) // width).astype(np.int64)
        size = int(w.max()) + 1
        arrivals = np.bincount(w, minlength=size)
        ok = np.bincount(w, weights=(self.status[m] == 0), minlength=size).astype(np.int64)
        refused_behind = np.bincount(
            w, weights=(self.status[m] != 0) & self.behind[m], minlength=size
        ).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = ok / arrivals
        return {
            "start": first + width * np.arange(size),
            "arrivals": arrivals,
            "granted": ok,
            "share": share,
            "refused_behind": (arrivals > 0) & (refused_behind == arrivals),
        }


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Agreement:
    """Replicas' price agreement as the Redis ledger's ``agree``: a value published within the
    last ``hold`` seconds is the one everyone uses; otherwise the caller's is published."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.value = 0.0
        self.at = -math.inf

    def __call__(self, value: float, now: float) -> float:
        if now - self.at >= self.hold:
            self.value, self.at = value, now
        return self.value


def _make_pricer(  # type: ignore[no-untyped-def]
    policy: Policy,
    budget: int,
    period: float,
    shape: Shape,
    learn_scale: bool,
    margin: float,
    seed: int,
):
    prior = PopulationPrior(short_excess=shape.short_excess, learn_scale=learn_scale)
    if policy == "paced":
        return PacedPricer(budget, period, shape, prior=prior, margin=margin, seed=seed)
    if policy == "dual":
        return DualAscentPricer(budget, period, shape, prior=prior)
    return OnlinePricer(budget, period, shape, prior=prior)


def simulate(
    traffic: Traffic,
    budget: int,
    period: float = 60.0,
    *,
    policy: Policy = "paced",
    shape: Shape | None = None,
    tick: float = 1.0,
    speed: float = 100.0,
    learn_scale: bool = False,
    replicas: int = 1,
    upstream: Upstream = "lengths",
    margin: float = 0.2,
    seed: int = 0,
    skip: int = 1,
) -> SimulationResult:
    """Serve ``traffic`` through the decision core and a ledger; score per period.

    Parameters
    ----------
    traffic : Traffic
    budget : int
        Tokens per period.
    period : float
        Period length, seconds.
    policy : {'paced', 'reclear', 'dual', 'fcfs'}
        The core over a :class:`~shadowprice.online.PacedPricer` (the gateway's price), over
        the unpaced :class:`~shadowprice.online.OnlinePricer` (the baseline it replaced) or
        :class:`~shadowprice.online.DualAscentPricer`, or first come first served at price 0
        (what a counting gateway does: everyone gets its curve's peak until the budget runs
        out).
    shape : Shape, optional
        The predicted curves' shape (default :class:`SurgeShape`).
    tick : float
        Seconds between a replica's price updates.
    speed : float
        Decode speed, tokens/s (a request finishes ``used / speed`` seconds after arriving).
    learn_scale : bool
        Let the population prior rescale predicted thresholds (off by default: with the
        surge shape it costs accuracy on these pools, see ``docs/benchmarks.md``).
    replicas : int
        Decision cores sharing the ledger (>= 1); request i goes to replica i mod ``replicas``.
    upstream : {'lengths', 'spend_all'}
        Requests spend their answer's length (capped by the allowance), or every allowance.
    margin : float
        The paced pricer's margin ahead of the pace line (share of the budget).
    seed : int
        Seeds the paced pricers' rationing strides (replica j uses ``seed + j``).
    skip : int
        Periods left out of the summary at the start (the pricer's warm-up).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if upstream not in UPSTREAMS:
        raise ValueError(f"upstream must be one of {UPSTREAMS}, got {upstream!r}")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be an integer >= 1, got {replicas!r}")
    shape = shape or SurgeShape()
    run = _Run(traffic, budget, period, tick, speed, upstream == "spend_all")
    cores = [
        DecisionCore(
            _make_pricer(policy, budget, period, shape, learn_scale, margin, seed + j), tick=tick
        )
        for j in range(replicas)
    ]
    run.serve(cores, priced=policy != "fcfs")
    return _score(run, shape, policy, skip)


class _Run:
    """The event loop of :func:`simulate`: arrivals, price ticks and finishing requests."""

    def __init__(
        self,
        t: Traffic,
        budget: int,
        period: float,
        tick: float,
        speed: float,
        spend_all: bool,
    ) -> None:
        self.t, self.budget, self.period, self.tick = t, budget, period, tick
        self.speed, self.spend_all = speed, spend_all
        self.clock = _Clock()
        self.ledger = MemoryLedger(budget, period=period, clock=self.clock)
        self.granted = np.zeros(t.n, dtype=np.int64)
        self.status = np.zeros(t.n, dtype=np.int8)
        self.behind = np.zeros(t.n, dtype=bool)
        self.spent: dict[int, int] = {}
        self.overrun = 0
        self.times: list[float] = []
        self.prices: list[float] = []
        self._running: list[tuple[float, int, Reservation, Ticket, DecisionCore]] = []

    def used(self, i: int, tokens: int) -> int:
        """Tokens request ``i`` generates with an allowance of ``tokens``."""
        return tokens if self.spend_all else int(min(self.t.length[i], tokens))

    def finish_until(self, now: float) -> None:
        while self._running and self._running[0][0] <= now:
            end, i, res, ticket, core = heapq.heappop(self._running)
            self.clock.t = end
            used = self.used(i, res.tokens)
            self.overrun += self.ledger.settle_now(res, used).overrun
            self.spent[res.period] = self.spent.get(res.period, 0) + used
            reason = "length" if self.spend_all or self.t.length[i] > res.tokens else "stop"
            core.settled(ticket, used, reason)

    def serve(self, cores: list[DecisionCore], *, priced: bool) -> None:
        t, k = self.t, len(cores)
        agree = _Agreement(self.tick)
        first = float(t.arrival[0])
        next_tick = [first + j * self.tick / k for j in range(k)]
        for i in range(t.n):
            now = float(t.arrival[i])
            self.finish_until(now)
            self.clock.t = now
            j = i % k
            core = cores[j]
            state = self.ledger.state_now()
            if priced and now >= next_tick[j]:
                price = core.update(now, state.spent, state.reserved, state.period)
                if k > 1:
                    price = core.agree(agree(price, now))
                if j == 0:
                    self.times.append(now)
                    self.prices.append(price)
                next_tick[j] = now + self.tick
            elapsed = (now % self.period) / self.period
            self.behind[i] = state.spent + state.reserved < self.budget * elapsed
            self.decide(i, now, core)
        self.finish_until(math.inf)

    def decide(self, i: int, now: float, core: DecisionCore) -> None:
        offer = core.arrive(now, float(self.t.tau_hat[i]), int(self.t.cap[i]))
        if offer.admitted:
            res = self.ledger.reserve_now(offer.allowance, min_tokens=offer.least, tag=str(i))
            if res is not None:
                ticket = core.granted(offer, res.tokens, period=res.period)
                self.granted[i] = res.tokens
                end = now + self.used(i, res.tokens) / self.speed
                heapq.heappush(self._running, (end, i, res, ticket, core))
                return
            offer = core.refused_by_ledger(now, offer)
        self.status[i] = _CODES[offer.status]


def _score(run: _Run, shape: Shape, policy: str, skip: int) -> SimulationResult:
    t, budget, period = run.t, run.budget, run.period
    index = (t.arrival // period).astype(np.int64)
    peak = np.minimum(t.cap, t.tau_hat + shape_terms(shape, 0.0)[0])
    periods = np.unique(index)
    granted = run.granted
    ok_online = t.correct & (t.length <= granted) & (granted > 0)
    value = shape.curves(t.tau_hat).value(granted)
    used_at_peak = peak if run.spend_all else np.minimum(t.length, peak)
    keys = ("req", "on", "hs", "hr", "sp", "dem", "po", "ex")
    rows: dict[str, list[int]] = {k: [] for k in keys}
    util: list[float] = []
    util_h: list[float] = []
    for k in periods:
        m = index == k
        h = hindsight(t, m, budget, shape, spend_all=run.spend_all)
        rows["req"].append(int(m.sum()))
        rows["on"].append(int(ok_online[m].sum()))
        rows["hs"].append(h.correct)
        rows["hr"].append(h.correct_recycled)
        rows["sp"].append(run.spent.get(int(k), 0))
        rows["dem"].append(int(used_at_peak[m].sum()))
        rows["po"].append(int(np.isin(run.status[m], (PRICED_OUT, CAP_TOO_SMALL)).sum()))
        rows["ex"].append(int((run.status[m] == EXHAUSTED).sum()))
        util.append(float(value[m].sum()))
        util_h.append(h.utility)
    arr = {k: np.array(v, dtype=np.int64) for k, v in rows.items()}
    over = sum(max(0, v - budget) for v in run.spent.values()) + run.overrun
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
        np.array(util),
        np.array(util_h),
        np.array(run.times),
        np.array(run.prices),
        t.arrival,
        granted,
        run.status,
        run.behind,
        int(over),
        budget,
        float(period),
        float(run.tick),
        t.mix,
        policy,
    )
    result.summarise(skip)
    return result


@dataclass(frozen=True)
class Hindsight:
    """Batch CLEAR over one period's requests, knowing them all in advance.

    Attributes
    ----------
    correct : int
        Requests answered correctly with CLEAR's allowances (summing to at most B).
    correct_recycled : int
        The same on the largest batch budget whose real spending fits in B.
    utility : float
        Expected utility of CLEAR's allowances under the predicted curves (its leftover kept,
        not spread).
    """

    correct: int
    correct_recycled: int
    utility: float


def hindsight(
    t: Traffic,
    mask: NDArray[np.bool_],
    budget: int,
    shape: Shape,
    steps: int = 14,
    *,
    spend_all: bool = False,
) -> Hindsight:
    """Batch CLEAR over the requests in ``mask`` (allowances sum <= B), and the
    recycling-aware ceiling (the largest batch budget whose real use fits in B; the same as
    CLEAR when the upstream spends every allowance)."""
    tau, cap = t.tau_hat[mask], t.cap[mask]
    length, correct = t.length[mask], t.correct[mask]
    curves = shape.curves(tau)

    def solved_and_used(b_total: int) -> tuple[int, int]:
        b = allocate(curves, b_total, "clear", max_tokens=cap).budgets
        solved = int((correct & (length <= b) & (b > 0)).sum())
        used = int(b.sum()) if spend_all else int(np.minimum(length, b).sum())
        return solved, used

    plain, _ = solved_and_used(budget)
    # The expected utility of CLEAR's own allowances: the leftover it spreads for headroom
    # lies past the surge's peak, where the model's utility declines.
    utility = float(allocate(curves, budget, "clear", max_tokens=cap, leftover="keep").utility)
    if spend_all:
        return Hindsight(plain, plain, utility)
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
    return Hindsight(plain, best, utility)


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
    return _save(fig, path)


def plot_windows(
    runs: dict[str, dict[str, SimulationResult]],
    path: str | Path,
    widths: dict[str, float] | None = None,
) -> Path:
    """Granted share per window of each scenario (one panel each), one line per policy,
    with the windows where every arrival was refused while spending lagged the pace line
    marked; written as PNG (headless).

    Parameters
    ----------
    runs : dict of str to (dict of str to SimulationResult)
        Scenario name -> policy -> its run (on the same arrivals).
    path : str or Path
    widths : dict of str to float, optional
        Window width per scenario, seconds (default 10).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.4), squeeze=False)
    for ax, (name, by_policy) in zip(axes[0], runs.items(), strict=True):
        width = (widths or {}).get(name, 10.0)
        for policy, r in by_policy.items():
            w = r.windows(width)
            x = (w["start"] - w["start"][0]) / (60.0 if width >= 60 else 1.0)
            (line,) = ax.step(x, 100 * w["share"], where="post", label=policy)
            bad = w["refused_behind"]
            ax.plot(x[bad], np.zeros(int(bad.sum())), "x", color=line.get_color(), ms=6)
        ax.set_title(name)
        ax.set_ylim(-5, 105)
        ax.set_xlabel("minutes" if width >= 60 else "seconds")
        ax.set_ylabel(f"granted % per {width:g} s")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders made as needed) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
