"""The paper's experiment in seconds: CLEAR vs uniform vs oracle on real traces.

:func:`run_demo` takes a *setting* (which queries, which curves each policy sees, how an
allocation is scored), allocates each average budget with each policy, scores it, and writes
a JSON table and a PNG. Two settings:

* :class:`TraceSetting` (the default): the bundled REAL trace set ``qwen25-math-math100``
  (100 MATH problems x 8 samples of Qwen2.5-Math-Instruct), split half: each query's samples
  are divided at random, policies are fitted on one half and scored by replaying their caps
  on the other (a sample counts if correct and finished within its cap). Policies: ``clear``
  (one market price over empirical-Bayes curves, shadowprice's recommendation),
  ``clear-paper`` (the paper's shifted surge, closed form), ``uniform`` and the hindsight
  ``oracle`` (exact knapsack on the scoring half itself: a ceiling, not a policy).
* :class:`SyntheticSetting`: the bundled, clearly synthetic 500-query Balanced stream
  (``shadowprice/data/streams``), scored exactly by its known true curves.

Series of the synthetic setting (all on the same stream, scored on the TRUE curves), named
as in the policy registry (:mod:`shadowprice.evaluate.policies`):

* ``clear-paper``: the paper's recipe, closed-form CLEAR on ``ShiftedSurge(tau, alpha=1.5,
  beta_s)`` with the stream's true thresholds tau and one shared beta_s (see
  :func:`surge_beta`), as in the paper's synthetic experiment;
* ``uniform``: B/N tokens each;
* ``true-market``: one price over the concave envelopes of the true curves (a reference: no
  policy knows the true curves);
* ``true-oracle``: the exact optimum on the true curves over budgets that are multiples of
  64 tokens (multiple-choice knapsack); exact on that grid only, so a continuous policy on
  the true curves can edge past it at the tightest budgets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..allocate import allocate
from ..curves import ShiftedSurge
from ..solve.result import Allocation
from ..traces import REAL_TRACE_SET, TraceSet, load_paper_results, load_traces
from .policies import EVAL_POLICIES, REFERENCES, FitContext, run_policy
from .replay import replay
from .splits import split_half
from .streams import SyntheticStream, load_stream

__all__ = [
    "DEFAULT_BUDGETS",
    "DemoPolicy",
    "DemoResult",
    "DemoSetting",
    "SyntheticSetting",
    "TraceSetting",
    "default_setting",
    "paper_balanced",
    "run_demo",
    "surge_beta",
]

#: Average tokens per query evaluated by default (the paper's range).
DEFAULT_BUDGETS: tuple[int, ...] = (100, 200, 300, 500, 1000, 1500)


def paper_balanced() -> dict[int, tuple[float, float, float]]:
    """The paper's Balanced stream, from its bundled digitised results figure (+-0.5 point).

    A different model and accuracy level than our streams: compare shapes and ratios, not
    absolute values.

    Returns
    -------
    dict
        Budget per query (tokens) -> (CLEAR accuracy %, uniform accuracy %, CLEAR
        abandoned %).
    """
    df = load_paper_results()
    df = df[df.stream == "Balanced"]
    return {
        int(r.budget): (float(r.clear), float(r.uniform), float(r.abandoned))
        for r in df.itertuples()
    }


#: Upper quantile of Gamma(2, 1): a correct solution is this many 1/beta above its threshold
#: at the 90th percentile.
GAMMA2_Q90 = 3.8897201698674295

#: Budgets of the oracle's (and the true-curve market's) grid are multiples of this.
ORACLE_GRANULARITY = 64
#: ... up to this many tokens (recall is ~100 % for every pool by 8k, the paper's Fig. 1).
ORACLE_TOP = 8192


@dataclass(frozen=True)
class DemoPolicy:
    """One series of the demo.

    Attributes
    ----------
    key : str
        Short name (JSON key), e.g. ``"clear"``.
    label : str
        Legend / table label.
    run : callable
        Total budget in tokens -> :class:`Allocation` for the setting's N queries.
    """

    key: str
    label: str
    run: Callable[[int], Allocation]


class DemoSetting(Protocol):
    """What :func:`run_demo` needs from a data source (synthetic stream, real traces, ...).

    Attributes
    ----------
    name : str
        Short name for titles, e.g. ``"real traces qwen25-math-math100"``.
    description : str
        One line on the data and how allocations are scored.
    """

    name: str
    description: str

    @property
    def n(self) -> int:
        """Number of queries N."""

    def policies(self) -> list[DemoPolicy]:
        """The series to run, first the headline policy, then ``uniform``, then references."""

    def score(self, allocation: Allocation) -> float:
        """Accuracy in [0, 1] that ``allocation`` achieves (mean over the N queries).

        Parameters
        ----------
        allocation : Allocation
            Budgets for the setting's N queries.

        Returns
        -------
        float
            Mean success probability (true curves) or share of replayed samples correct.
        """


def surge_beta(stream: SyntheticStream, quantile_factor: float = GAMMA2_Q90) -> float:
    """Shared surge decay beta_s (1/tokens) for CLEAR on a stream with known thresholds.

    1/beta_s = mean over queries of ``quantile_factor / beta_i``: the tokens above threshold
    at which a typical query has finished 90 % of its correct solutions. Why not the mode?
    Fitting the surge to the correct-length histogram (the paper's recipe) puts its peak at
    the *mode* of correct lengths (beta_s = 1 / mean(1/beta_i), quantile_factor = 1); CLEAR
    then never buys past it, where a Gamma(2) query has only 26 % of its solutions done, and
    on the Balanced stream accuracy stalls at ~36 % whatever the budget (measured; tokens are
    left unspent). Placing the peak at the 90 % point keeps the surge's entry-cost logic and
    lets funded queries finish. This uses only length statistics, never the accuracy of any
    allocation, so it is not tuned to the scores.

    Parameters
    ----------
    stream : SyntheticStream
        Queries with known true curves (their beta_i, 1/tokens).
    quantile_factor : float
        Tokens above threshold, in units of 1/beta_i, where the surge should peak: the 90 %
        quantile of Gamma(2, 1) by default, 1 for the mode.

    Returns
    -------
    float
        The shared decay beta_s, in 1/tokens.
    """
    return float(1.0 / np.mean(quantile_factor / stream.truth.beta))


@dataclass
class SyntheticSetting:
    """A synthetic stream scored exactly by its true curves (no sampling noise).

    Parameters
    ----------
    stream : SyntheticStream
        Queries with known true GammaSCurves.
    alpha : float
        Surge gain for CLEAR (shared; it only scales utility, the allocation ignores it when
        shared by all queries).
    beta_s : float, optional
        Surge decay for CLEAR; default :func:`surge_beta`.
    """

    stream: SyntheticStream
    alpha: float = 1.5
    beta_s: float | None = None
    name: str = field(init=False)
    description: str = field(init=False)

    def __post_init__(self) -> None:
        if self.beta_s is None:
            self.beta_s = surge_beta(self.stream)
        pools, counts = np.unique(self.stream.pool, return_counts=True)
        mix = ", ".join(f"{c} {p}" for p, c in zip(pools, counts, strict=True))
        self.name = f"synthetic {self.stream.name} stream"
        self.description = (
            f"{self.stream.n} SYNTHETIC queries ({mix}); accuracy = mean true "
            f"success probability; CLEAR surge alpha={self.alpha}, "
            f"beta=1/{1 / self.beta_s:.0f}"
        )

    @property
    def n(self) -> int:
        """Number of queries N."""
        return self.stream.n

    def policies(self) -> list[DemoPolicy]:
        """``clear-paper`` (the headline), ``uniform``, ``true-market``, ``true-oracle``.

        Returns
        -------
        list of DemoPolicy
        """
        truth = self.stream.truth
        assert self.beta_s is not None  # set in __post_init__
        surge = ShiftedSurge(truth.tau, self.alpha, self.beta_s)

        def grid(total: int) -> np.ndarray:
            top = min(ORACLE_TOP, total) // ORACLE_GRANULARITY * ORACLE_GRANULARITY
            return np.arange(0, top + 1, ORACLE_GRANULARITY)

        paper = EVAL_POLICIES["clear-paper"]
        market, oracle = REFERENCES["true-market"], REFERENCES["true-oracle"]
        return [
            DemoPolicy(
                paper.name,
                "CLEAR, paper recipe (surge, true tau)",
                lambda total: allocate(surge, total, paper.method),
            ),
            DemoPolicy(
                "uniform",
                EVAL_POLICIES["uniform"].legend,
                lambda total: allocate(truth, total, "uniform"),
            ),
            DemoPolicy(
                market.name,
                market.legend,
                lambda total: allocate(
                    truth, total, market.method, granularity=ORACLE_GRANULARITY, grid=grid(total)
                ),
            ),
            DemoPolicy(
                oracle.name,
                oracle.legend,
                lambda total: allocate(
                    truth, total, oracle.method, granularity=ORACLE_GRANULARITY, grid=grid(total)
                ),
            ),
        ]

    def score(self, allocation: Allocation) -> float:
        """Mean true success probability of ``allocation``'s budgets.

        Parameters
        ----------
        allocation : Allocation
            Budgets for the stream's N queries.

        Returns
        -------
        float
            Accuracy in [0, 1].
        """
        return self.stream.accuracy(allocation.budgets)


@dataclass
class TraceSetting:
    """Real traces, split half: fit on one half of each query's samples, replay on the other.

    Parameters
    ----------
    traces : TraceSet
        Queries with 2+ samples each (default demo: the bundled ``qwen25-math-math100``).
    seed : int
        Seeds the split (one split; ``shadowprice bench`` averages several).
    label : str
        Name of the trace set for titles.
    """

    traces: TraceSet
    seed: int = 0
    label: str = REAL_TRACE_SET
    name: str = field(init=False)
    description: str = field(init=False)

    def __post_init__(self) -> None:
        fit, score = split_half(self.traces, self.seed)
        self._ctx = FitContext(fit, score)
        k = int(np.median(self.traces.n_samples()))
        self.name = f"real traces {self.label}"
        self.description = (
            f"{self.traces.n} REAL queries ({self.label}), each query's "
            f"samples split at random (seed {self.seed}; {k} -> {k // 2} fit + "
            f"{k - k // 2} scored): policies fitted on one half, scored by "
            f"replaying their caps on the other"
        )

    @property
    def n(self) -> int:
        """Number of queries N."""
        return self.traces.n

    def policies(self) -> list[DemoPolicy]:
        """``clear`` (the headline), ``uniform``, ``clear-paper`` and the hindsight ``oracle``.

        Returns
        -------
        list of DemoPolicy
            Registry entries (:data:`~shadowprice.evaluate.policies.EVAL_POLICIES`), run on
            the fit half.
        """
        ctx = self._ctx

        def run(name: str) -> Callable[[int], Allocation]:
            return lambda total: run_policy(name, ctx, total)

        return [
            DemoPolicy(name, EVAL_POLICIES[name].legend, run(name))
            for name in ("clear", "uniform", "clear-paper", "oracle")
        ]

    def score(self, allocation: Allocation) -> float:
        """Replay ``allocation``'s caps on the scoring half.

        Parameters
        ----------
        allocation : Allocation
            Budgets for the N queries.

        Returns
        -------
        float
            Share of scored samples correct and finished within their cap, in [0, 1].
        """
        return replay(allocation, self._ctx.score, n_boot=0).accuracy


def default_setting(kind: str = "real") -> DemoSetting:
    """The demo's setting: ``"real"`` (bundled traces) or ``"synthetic"`` (bundled stream).

    Parameters
    ----------
    kind : {'real', 'synthetic'}
        The bundled real traces, split half, or the bundled 500-query Balanced stream.

    Returns
    -------
    DemoSetting

    Raises
    ------
    ValueError
        For another ``kind``.
    """
    if kind == "real":
        return TraceSetting(load_traces(REAL_TRACE_SET))
    if kind == "synthetic":
        return SyntheticSetting(load_stream())
    raise ValueError(f"unknown demo setting {kind!r}; choose real or synthetic")


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured and wrote.

    Attributes
    ----------
    setting : str
        Name of the setting (e.g. ``"synthetic balanced stream"``).
    description : str
        One line on the data and how it is scored.
    rows : list of dict
        One per (budget, policy): ``budget_per_query`` (tokens), ``policy``, ``label``,
        ``accuracy`` (%), ``abandoned`` (%), ``spent_per_query`` (tokens), ``price``
        (None where the policy has none), ``seconds`` (allocation time).
    json_path, png_path : Path or None
        Files written (None when not written).
    seconds : float
        Wall time of the whole demo.
    headline : str
        Key of the setting's headline CLEAR policy (``clear`` on real traces,
        ``clear-paper`` on the synthetic stream): the one the ratio and abandonment
        columns of :meth:`table` describe.
    """

    setting: str
    description: str
    rows: list[dict[str, Any]]
    json_path: Path | None
    png_path: Path | None
    seconds: float
    headline: str = "clear"

    def accuracy(self, policy: str) -> dict[int, float]:
        """Accuracy of one series at each budget.

        Parameters
        ----------
        policy : str
            A series key, e.g. ``"clear"``.

        Returns
        -------
        dict of int -> float
            Budget per query (tokens) -> accuracy (%).
        """
        return {r["budget_per_query"]: r["accuracy"] for r in self.rows if r["policy"] == policy}

    def table(self) -> list[dict[str, Any]]:
        """One row per budget, for the printed table and the JSON.

        Returns
        -------
        list of dict
            ``budget_per_query``; each policy's accuracy (%) under its key; the headline
            CLEAR policy's ratio to uniform (``ratio``, None where uniform is below 0.1 %)
            and abandonment (``clear_abandoned``, %); the paper's Balanced CLEAR and uniform
            accuracy (``paper_clear``, ``paper_uniform``, None where it has no such budget).
        """
        balanced = paper_balanced()
        by: dict[int, dict[str, dict[str, Any]]] = {}
        for r in self.rows:
            by.setdefault(r["budget_per_query"], {})[r["policy"]] = r
        out = []
        for b, pol in by.items():
            c, u = pol.get(self.headline), pol.get("uniform")
            row: dict[str, Any] = {"budget_per_query": b}
            for key, r in pol.items():
                row[key] = r["accuracy"]
            if c is not None and u is not None:
                # Below 0.1 % uniform is "nobody solved"; a ratio of thousands says nothing.
                row["ratio"] = c["accuracy"] / u["accuracy"] if u["accuracy"] >= 0.1 else None
            if c is not None:
                row["clear_abandoned"] = c["abandoned"]
            paper = balanced.get(b)
            row["paper_clear"], row["paper_uniform"] = (
                (paper[0], paper[1]) if paper else (None, None)
            )
            out.append(row)
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything above plus :meth:`table`, with paths as strings (what ``demo.json`` holds).

        Returns
        -------
        dict
        """
        d = asdict(self)
        d["json_path"] = None if self.json_path is None else str(self.json_path)
        d["png_path"] = None if self.png_path is None else str(self.png_path)
        d["table"] = self.table()
        return d


def run_demo(
    out_dir: str | Path = "shadowprice-demo",
    *,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    setting: DemoSetting | None = None,
    plot: bool = True,
) -> DemoResult:
    """Allocate each average budget with each policy of ``setting``, score, write files.

    Parameters
    ----------
    out_dir : path
        Folder for ``demo.json`` and ``demo.png`` (created).
    budgets : sequence of int
        Average tokens per query; the total is ``budget x N``.
    setting : DemoSetting, optional
        Default: :class:`TraceSetting` on the bundled real traces (``default_setting()``).
    plot : bool
        Write the PNG (matplotlib, Agg backend).

    Returns
    -------
    DemoResult
    """
    start = time.perf_counter()
    if not budgets or any(int(b) != b or b <= 0 for b in budgets):
        raise ValueError(f"budgets must be positive whole numbers of tokens, got {list(budgets)}")
    st: DemoSetting = setting if setting is not None else default_setting()
    policies = st.policies()
    rows: list[dict[str, Any]] = []
    for b in budgets:
        total = int(b) * st.n
        for pol in policies:
            t0 = time.perf_counter()
            alloc = pol.run(total)
            secs = time.perf_counter() - t0
            rows.append(
                {
                    "budget_per_query": int(b),
                    "policy": pol.key,
                    "label": pol.label,
                    "accuracy": 100.0 * st.score(alloc),
                    "abandoned": 100.0 * alloc.abandonment_rate,
                    "spent_per_query": alloc.spent / st.n,
                    "price": None if np.isnan(alloc.price) else float(alloc.price),
                    "seconds": secs,
                }
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "demo.png" if plot else None
    if png is not None:
        _plot(rows, policies, st, png)
    json_path = out / "demo.json"
    result = DemoResult(
        st.name,
        st.description,
        rows,
        json_path,
        png,
        time.perf_counter() - start,
        headline=policies[0].key,
    )
    json_path.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
    return result


def _plot(
    rows: list[dict[str, Any]], policies: list[DemoPolicy], st: DemoSetting, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: works headless and never opens a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    styles = {
        "clear": ("C0", "o", "-"),
        "uniform": ("C1", "s", "-"),
        "true-market": ("C2", "^", "-"),
        "clear-paper": ("C9", "v", "-"),
        "oracle": ("k", "D", ":"),
        "true-oracle": ("k", "D", ":"),
    }
    for pol in policies:
        pts = sorted((r["budget_per_query"], r["accuracy"]) for r in rows if r["policy"] == pol.key)
        color, marker, ls = styles.get(pol.key, (None, ".", "-"))
        # Hollow ceiling markers: the market often coincides with it and must stay visible.
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker=marker,
            ls=ls,
            color=color,
            label=pol.label,
            mfc="none" if pol.key in ("oracle", "true-oracle") else None,
            ms=7,
        )
    balanced = paper_balanced()
    xs = sorted(balanced)
    ax.plot(
        xs,
        [balanced[x][0] for x in xs],
        color="C0",
        ls="--",
        alpha=0.5,
        marker="x",
        label="paper: CLEAR, Balanced (Qwen2.5-Math-7B)",
    )
    ax.plot(
        xs,
        [balanced[x][1] for x in xs],
        color="C1",
        ls="--",
        alpha=0.5,
        marker="x",
        label="paper: uniform, Balanced",
    )
    ax.set_xlabel("average budget (tokens per query)")
    ax.set_ylabel("accuracy (%)")
    kind = (
        "SYNTHETIC, true curves known"
        if isinstance(st, SyntheticSetting)
        else "held out: fit on half the samples, scored on the other half"
    )
    ax.set_title(f"{st.name}: {st.n} queries\n({kind})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
