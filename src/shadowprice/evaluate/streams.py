"""Calibrated synthetic query pools and traffic streams (ground truth known exactly).

Every synthetic query i has a true success curve (a :class:`~shadowprice.GammaSCurve`):

    P_i(correct within b tokens) = p_i [1 - (1 + beta_i x) e^(-beta_i x)],  x = max(b - tau_i, 0)

i.e. the query is solvable with probability p_i, and a correct solution has length
tau_i + Gamma(2, beta_i): nothing below the emergence threshold tau_i, the mode of the correct
lengths 1/beta_i above it, the mean 2/beta_i above it.

**Pools.** Three pools stand in for the paper's GSM8K, MATH500 and AIME/AMC (the solution
recall table of Fig. 1 of the CLEAR paper): log tau ~ Normal(mu_tau, sigma_tau) and
log beta ~ Normal(mu_beta, sigma_beta), independent, with the four constants per pool fitted
by ``tools/calibrate_pools.py`` (scipy Nelder-Mead) so that the pool's *solution recall*,
mean_i p_i F_i(b) / mean_i p_i, matches the paper's table. Fit (percentage points, model
minus table, at 256 / 512 / 1k / 2k / 4k tokens):

    gsm8k-like     +0.0 -0.4 +0.7 +2.7 +2.5
    math500-like   -0.2 +0.3 -0.9 +1.4 +2.2
    aime-like      +0.8 -0.2 +0.2 -0.8 -0.0

(the 2k/4k misses are the paper's long tail of a few % of solutions beyond 4k tokens, which a
Gamma(2) length cannot produce without distorting the surge).

**Solvable probability p.** The paper's figure gives only recall (normalised to solved
queries), not accuracy, so p is *our assumption*: p_i ~ Beta with mean 0.9 (gsm8k-like),
0.75 (math500-like), 0.35 (aime-like) and concentration a + b = 5, independent of tau and beta
(independence keeps the recall calibration exact). These levels are roughly a strong 7B math
model's pass rates; the paper's own absolute accuracies are lower (e.g. Balanced ~29 % at 1k
tokens/query), so compare shapes and ratios with the paper, not absolute levels.

**Streams.** Mixtures of (easy, medium, hard) = (gsm8k-like, math500-like, aime-like); the
paper does not publish its proportions, these are ours: see :data:`STREAMS`. A stream of n
queries gets exactly the largest-remainder rounding of n x proportions per pool, in a
seeded random order.

**Long-reasoning pools (synthetic, our assumption).** ``gsm8k-long``, ``math-long`` and
``aime-long`` (:data:`LONG_POOL_ORDER`) stand in for a long chain-of-thought ("thinking")
model. Nothing here is measured: each is its short pool with tau and 1/beta multiplied by
:data:`LONG_SCALE` (x6, x8, x16), i.e. the short pool's recall table with every budget
multiplied by that factor, and the *same* p. The factors put the median correct length near
~1.8k (GSM8K), ~3.6k (MATH500) and ~12k (AIME) tokens, roughly the response lengths reported
for R1-distilled reasoning models; evaluate them at 1k-16k tokens per query. Streams over
them: ``make_stream(name, n, seed, family="long")``; samples need
``sample_traces(..., max_tokens=MAX_SAMPLE_TOKENS_LONG)``.

Everything is vectorised: a 10^5-query stream takes a few milliseconds.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..curves import GammaSCurve
from ..traces import TraceSet

__all__ = [
    "BUNDLED_STREAMS",
    "LONG_POOL_ORDER",
    "LONG_SCALE",
    "MAX_SAMPLE_TOKENS_LONG",
    "POOLS",
    "POOL_FAMILIES",
    "POOL_ORDER",
    "STREAMS",
    "PoolSpec",
    "SyntheticStream",
    "largest_remainder",
    "load_stream",
    "make_stream",
    "pool_recall",
    "sample_seed",
]


@dataclass(frozen=True)
class PoolSpec:
    """Distribution of the true-curve parameters of one pool.

    Attributes
    ----------
    mu_log_tau, sigma_log_tau : float
        log tau ~ Normal(mu, sigma); tau in tokens.
    mu_log_beta, sigma_log_beta : float
        log beta ~ Normal(mu, sigma); beta in 1/tokens.
    p_mean : float
        Mean solvable probability (our assumption, see module docstring).
    p_concentration : float
        a + b of the Beta distribution of p.
    label : str
        What the pool imitates.
    """

    mu_log_tau: float
    sigma_log_tau: float
    mu_log_beta: float
    sigma_log_beta: float
    p_mean: float
    p_concentration: float
    label: str

    @property
    def median_tau(self) -> float:
        """Median threshold in tokens."""
        return float(np.exp(self.mu_log_tau))

    @property
    def median_beta(self) -> float:
        """Median decay in 1/tokens (1/median_beta = mode of correct length above tau)."""
        return float(np.exp(self.mu_log_beta))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[NDArray[np.float64], ...]:
        """Draw the true-curve parameters of ``n`` queries.

        Parameters
        ----------
        n : int
            Queries to draw.
        rng : numpy.random.Generator
            Source of randomness (tau, then beta, then p are drawn from it).

        Returns
        -------
        tau, beta, p : ndarray of float64, shape (n,)
            Thresholds (tokens), decays (1/tokens) and solvable probabilities.
        """
        tau = np.exp(rng.normal(self.mu_log_tau, self.sigma_log_tau, n))
        beta = np.exp(rng.normal(self.mu_log_beta, self.sigma_log_beta, n))
        a = self.p_mean * self.p_concentration
        p = rng.beta(a, self.p_concentration - a, n)
        return tau, beta, p


#: Fitted by ``tools/calibrate_pools.py`` to the paper's Fig. 1 recall table (see module
#: docstring); do not edit by hand, re-run the script.
POOLS: dict[str, PoolSpec] = {
    "gsm8k-like": PoolSpec(
        5.3875, 0.2000, -3.8178, 1.0000, 0.90, 5.0, "easy: GSM8K-like (grade-school word problems)"
    ),
    "math500-like": PoolSpec(
        5.6875, 0.4485, -4.5363, 1.0000, 0.75, 5.0, "medium: MATH500-like (competition math)"
    ),
    "aime-like": PoolSpec(
        5.9740, 0.5042, -5.3299, 0.0200, 0.35, 5.0, "hard: AIME/AMC-like (olympiad)"
    ),
}

#: (easy, medium, hard) order used by :data:`STREAMS`.
POOL_ORDER: tuple[str, str, str] = ("gsm8k-like", "math500-like", "aime-like")


def _scaled(spec: PoolSpec, factor: float, label: str) -> PoolSpec:
    """``spec`` with tau and 1/beta multiplied by ``factor`` (same p, same spreads)."""
    return PoolSpec(
        spec.mu_log_tau + float(np.log(factor)),
        spec.sigma_log_tau,
        spec.mu_log_beta - float(np.log(factor)),
        spec.sigma_log_beta,
        spec.p_mean,
        spec.p_concentration,
        label,
    )


#: Long-reasoning pool -> (short pool it scales, length factor). SYNTHETIC: an assumption,
#: see the module docstring.
LONG_SCALE: dict[str, tuple[str, float]] = {
    "gsm8k-long": ("gsm8k-like", 6.0),
    "math-long": ("math500-like", 8.0),
    "aime-long": ("aime-like", 16.0),
}

POOLS.update(
    {
        name: _scaled(
            POOLS[base],
            f,
            f"SYNTHETIC long-reasoning: {POOLS[base].label} x{f:g} lengths (assumed, not measured)",
        )
        for name, (base, f) in LONG_SCALE.items()
    }
)

#: (easy, medium, hard) order of the long-reasoning pools.
LONG_POOL_ORDER: tuple[str, str, str] = ("gsm8k-long", "math-long", "aime-long")

#: Pool family name -> (easy, medium, hard) pools a stream mixes.
POOL_FAMILIES: dict[str, tuple[str, str, str]] = {"short": POOL_ORDER, "long": LONG_POOL_ORDER}

#: Stream name -> (easy, medium, hard) proportions. Our choice: the paper names the four
#: streams but does not publish their proportions.
STREAMS: dict[str, tuple[float, float, float]] = {
    "balanced": (1 / 3, 1 / 3, 1 / 3),
    "mostly-easy": (0.7, 0.2, 0.1),
    "mostly-hard": (0.1, 0.2, 0.7),
    "u-shaped": (0.45, 0.1, 0.45),
}

#: Streams shipped in ``shadowprice/data/streams`` (built by ``tools/build_stream.py``).
BUNDLED_STREAMS: dict[str, tuple[str, int, int]] = {
    # file stem -> (stream name, n, seed)
    "balanced-500": ("balanced", 500, 2026),
}

#: Length cap of simulated samples (the sampling run's max_tokens); longer correct solutions
#: are recorded as truncated, i.e. incorrect at the cap, like a real length stop.
MAX_SAMPLE_TOKENS = 16384
#: Length cap for simulated samples of the long-reasoning pools.
MAX_SAMPLE_TOKENS_LONG = 65536


@dataclass(frozen=True)
class SyntheticStream:
    """N synthetic queries with known true success curves.

    Attributes
    ----------
    ids : list of str, length N
        Unique query ids.
    pool : ndarray of str, shape (N,)
        Pool name of each query (one of :data:`POOLS`).
    truth : GammaSCurve
        The true curve of each query (tau, beta, p arrays of shape (N,)).
    name : str
        Stream name (one of :data:`STREAMS`, or a custom label).
    """

    ids: list[str]
    pool: NDArray[np.str_]
    truth: GammaSCurve
    name: str

    @property
    def n(self) -> int:
        """Number of queries N."""
        return len(self.ids)

    def __len__(self) -> int:
        return self.n

    @property
    def tau(self) -> NDArray[np.float64]:
        """True emergence thresholds in tokens, shape (N,)."""
        return self.truth.tau

    def accuracy(self, budgets: Any) -> float:
        """Expected accuracy of per-query budgets, exactly, from the true curves.

        Parameters
        ----------
        budgets : array_like, shape (N,)
            Tokens per query.

        Returns
        -------
        float
            Mean true success probability, in [0, 1].
        """
        return float(np.mean(self.truth.value(np.asarray(budgets, dtype=float))))

    def subset(self, index: Any) -> SyntheticStream:
        """Queries selected by a mask, indices or slice.

        Parameters
        ----------
        index : bool mask (N,), int indices or slice
            Which queries to keep, in that order.

        Returns
        -------
        SyntheticStream
        """
        idx = np.arange(self.n)[index]
        t = self.truth
        return SyntheticStream(
            [self.ids[i] for i in idx],
            self.pool[idx],
            GammaSCurve(t.tau[idx], t.beta[idx], t.p[idx]),
            self.name,
        )

    def sample_traces(
        self, samples: int, seed: int = 0, *, max_tokens: int = MAX_SAMPLE_TOKENS
    ) -> TraceSet:
        """Simulate ``samples`` independent rollouts per query from the true model.

        Each sample is correct with probability p_i; a correct one has length
        tau_i + Gamma(2, beta_i). An incorrect one has length tau_i + Gamma(2, beta_i / 2)
        (twice as long on average: wrong reasoning tends to wander), so wrong answers also
        start at the threshold and are not a free signal. Lengths are rounded to integers and
        capped at ``max_tokens``; a correct sample past the cap becomes incorrect (truncated).

        Parameters
        ----------
        samples : int
            Rollouts per query (>= 1).
        seed : int
            Seeds the rollouts.
        max_tokens : int
            Length cap of a rollout (the sampling run's ``max_tokens``).

        Returns
        -------
        TraceSet
            N records with ``samples`` rollouts each and meta ``{"pool", "tau", "beta", "p",
            "synthetic"}``.

        Raises
        ------
        ValueError
            When ``samples`` is below 1.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        rng = np.random.default_rng(seed)
        n, t = self.n, self.truth
        correct = rng.random((n, samples)) < t.p[:, None]
        rate = np.where(correct, t.beta[:, None], 0.5 * t.beta[:, None])
        length = t.tau[:, None] + rng.gamma(2.0, 1.0, (n, samples)) / rate
        tokens = np.minimum(np.rint(length), max_tokens).astype(np.int64)
        correct &= length <= max_tokens
        tok_rows = tokens.tolist()
        cor_rows = correct.tolist()
        pools = self.pool.tolist()
        tau, beta, p = t.tau.tolist(), t.beta.tolist(), t.p.tolist()
        # Records are built directly (valid by construction) and handed to the trusted
        # constructor: re-validating 10^6 samples one by one would dominate the run time.
        records = [
            {
                "id": self.ids[i],
                "samples": [
                    {"tokens": a, "correct": c}
                    for a, c in zip(tok_rows[i], cor_rows[i], strict=True)
                ],
                "meta": {
                    "pool": pools[i],
                    "tau": tau[i],
                    "beta": beta[i],
                    "p": p[i],
                    "synthetic": True,
                },
            }
            for i in range(n)
        ]
        return TraceSet._trusted(records)

    def to_records(self) -> list[dict[str, Any]]:
        """The stream as plain records (the bundled streams' format).

        Returns
        -------
        list of dict
            One per query: ``id``, ``pool``, ``tau``, ``beta``, ``p`` (JSON-ready).
        """
        t = self.truth
        return [
            {"id": i, "pool": str(pl), "tau": float(a), "beta": float(b), "p": float(c)}
            for i, pl, a, b, c in zip(self.ids, self.pool, t.tau, t.beta, t.p, strict=True)
        ]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], name: str) -> SyntheticStream:
        """Inverse of :meth:`to_records`.

        Parameters
        ----------
        records : iterable of mapping
            With ``id``, ``pool``, ``tau``, ``beta``, ``p`` each.
        name : str
            The stream's name.

        Returns
        -------
        SyntheticStream
        """
        rows = list(records)
        return cls(
            [str(r["id"]) for r in rows],
            np.array([str(r["pool"]) for r in rows]),
            GammaSCurve(
                np.array([r["tau"] for r in rows], dtype=float),
                np.array([r["beta"] for r in rows], dtype=float),
                np.array([r["p"] for r in rows], dtype=float),
            ),
            name,
        )

    def write_jsonl_gz(self, path: str | Path) -> None:
        """Write :meth:`to_records` as reproducible gzip JSONL (no name/mtime in the header).

        Parameters
        ----------
        path : path
            File to write (``.jsonl.gz``).
        """
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in self.to_records())
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        ):
            gz.write(data.encode("utf-8"))


def largest_remainder(n: int, weights: Sequence[float]) -> NDArray[np.int64]:
    """Split ``n`` items over groups in proportion to ``weights``, as exactly as integers allow.

    Each group gets the floor of its exact share ``n * w / sum(w)``; the items left over go,
    one each, to the groups with the largest remainders (ties to the earlier group). This is
    how a stream of n queries gets its pool counts, so that every stream of a mixture has the
    mixture's proportions up to one query per pool.

    Parameters
    ----------
    n : int
        Items to split (>= 0).
    weights : sequence of float, length G
        Non-negative proportions, not all zero (need not sum to 1).

    Returns
    -------
    ndarray of int64, shape (G,)
        Counts that sum to ``n``.

    Raises
    ------
    ValueError
        When ``n`` is negative or the weights are empty, negative, non-finite or all zero.

    Examples
    --------
    >>> largest_remainder(10, (1 / 3, 1 / 3, 1 / 3)).tolist()
    [4, 3, 3]
    """
    w = np.asarray(weights, dtype=float)
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative whole number, got {n!r}")
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"weights must be a non-empty 1-D sequence of non-negative proportions, not all "
            f"zero; got {list(np.atleast_1d(w))}"
        )
    n = int(n)
    exact = n * w / w.sum()
    c = np.floor(exact).astype(np.int64)
    short = n - int(c.sum())
    if short:
        c[np.argsort(-(exact - c), kind="stable")[:short]] += 1
    return c


def sample_seed(seed: int, salt: int) -> int:
    """A seed for a stream's simulated samples that shares no random numbers with the
    stream's own draws (made with ``seed``) nor with other samples (another ``salt``)."""
    return int(np.random.SeedSequence([seed, salt]).generate_state(1)[0])


def make_stream(name: str, n: int, seed: int = 0, *, family: str = "short") -> SyntheticStream:
    """Draw an n-query stream ``name`` with a fixed seed.

    Pool counts are the largest-remainder rounding of n x proportions
    (:func:`largest_remainder`); parameters are drawn per pool and the queries shuffled. The
    same (name, n, seed, family) gives the identical stream.

    Parameters
    ----------
    name : str
        A mixture of :data:`STREAMS`.
    n : int
        Queries (>= 1).
    seed : int
        Seeds the draws and the order.
    family : {'short', 'long'}
        ``"long"`` mixes the long-reasoning pools (:data:`LONG_POOL_ORDER`) instead; the
        stream is then named ``"<name>-long"``.

    Returns
    -------
    SyntheticStream

    Raises
    ------
    ValueError
        For an unknown name or family, or ``n`` below 1.
    """
    if name not in STREAMS:
        raise ValueError(f"unknown stream {name!r}; choose one of {', '.join(STREAMS)}")
    if family not in POOL_FAMILIES:
        raise ValueError(
            f"unknown pool family {family!r}; choose one of {', '.join(POOL_FAMILIES)}"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    order_of_pools = POOL_FAMILIES[family]
    label = name if family == "short" else f"{name}-{family}"
    rng = np.random.default_rng(seed)
    counts = largest_remainder(n, STREAMS[name])
    parts = [
        POOLS[pool].sample(int(k), rng) for pool, k in zip(order_of_pools, counts, strict=True)
    ]
    tau, beta, p = (np.concatenate([part[j] for part in parts]) for j in range(3))
    labels = np.repeat(np.array(order_of_pools), counts)
    order = rng.permutation(n)
    width = len(str(n - 1))
    ids = [f"{label}-{i:0{width}d}" for i in range(n)]
    return SyntheticStream(
        ids, labels[order], GammaSCurve(tau[order], beta[order], p[order]), label
    )


def load_stream(stem: str = "balanced-500") -> SyntheticStream:
    """Load a bundled synthetic stream.

    Parameters
    ----------
    stem : str
        A key of :data:`BUNDLED_STREAMS` (file stem under ``shadowprice/data/streams``).

    Returns
    -------
    SyntheticStream

    Raises
    ------
    KeyError
        For a stream that is not bundled, naming those that are.
    """
    if stem not in BUNDLED_STREAMS:
        raise KeyError(f"no bundled stream {stem!r}; available: {sorted(BUNDLED_STREAMS)}")
    res = files("shadowprice") / "data" / "streams" / f"{stem}.jsonl.gz"
    with res.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return SyntheticStream.from_records(rows, BUNDLED_STREAMS[stem][0])


def pool_recall(truth: GammaSCurve, budgets: Any) -> NDArray[np.float64]:
    """Solution recall of a set of queries: the share of solvable work done within b tokens.

    Parameters
    ----------
    truth : GammaSCurve
        True curves of the queries; p F(b) = ``truth.value(b)`` with F the length CDF of
        correct solutions.
    budgets : array_like, shape (K,)
        Tokens.

    Returns
    -------
    ndarray of float64, shape (K,)
        The recall mean_i p_i F_i(b) / mean_i p_i at each budget, in [0, 1].
    """
    b = np.asarray(budgets, dtype=float)
    vals = truth.value(np.broadcast_to(b, (truth.n, b.size)))
    return vals.mean(axis=0) / float(np.mean(truth.p))
