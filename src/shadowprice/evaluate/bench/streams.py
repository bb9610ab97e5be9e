"""The bench's streams: which traces are evaluated, at which budgets, and what "scarce" is.

* ``synthetic``: the four paper-calibrated mixtures (Balanced, Mostly-Easy, Mostly-Hard,
  U-Shaped) of :mod:`shadowprice.evaluate.streams`, ``n`` queries x :data:`SAMPLES`
  simulated samples, at :data:`SHORT_BUDGETS`. Their true curves are known, so the bench also
  scores CLEAR on the true curves (:data:`TRUE_CLEAR`): the attainable reference that
  explains the gap to the hindsight oracle.
* ``real``: the bundled real trace set (100 MATH problems x 8 samples of
  Qwen2.5-Math-Instruct).
* ``real-mix``: the same real queries resampled *with replacement* into the four mixtures by
  MATH level (:data:`LEVEL_POOL`). Copies of one problem are not independent, so the
  intervals of these streams understate the uncertainty.
* ``long``: the four mixtures over the SYNTHETIC long-reasoning pools (lengths scaled by
  assumption, see :mod:`shadowprice.evaluate.streams`), at :data:`LONG_BUDGETS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...curves import GammaSCurve
from ...traces import REAL_TRACE_SET, TraceSet, load_traces
from ..streams import (
    MAX_SAMPLE_TOKENS_LONG,
    STREAMS,
    largest_remainder,
    make_stream,
    sample_seed,
)

__all__ = [
    "LEVEL_POOL",
    "LONG_BUDGETS",
    "PAPER_STREAMS",
    "SAMPLES",
    "SCARCE_LONG",
    "SCARCE_SHORT",
    "SHORT_BUDGETS",
    "TRUE_CLEAR",
    "BenchStream",
    "build_streams",
    "format_budget",
    "real_mixture",
]

#: Average tokens per query for the short-reasoning streams (the paper's range).
SHORT_BUDGETS: tuple[int, ...] = (100, 200, 300, 500, 1000, 1500)
#: ... and for the long-reasoning pools.
LONG_BUDGETS: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000)
#: The scarce regime: budgets up to these many tokens per query (short streams and the real
#: set / long-reasoning pools). Every check that speaks of "scarce budgets" uses these.
SCARCE_SHORT = 500
SCARCE_LONG = 4000
#: Samples simulated per synthetic query.
SAMPLES = 8
#: Our stream names -> the paper's (digitised CSV) names.
PAPER_STREAMS: dict[str, str] = {
    "balanced": "Balanced",
    "mostly-easy": "MostlyEasy",
    "mostly-hard": "MostlyHard",
    "u-shaped": "UShaped",
}
#: MATH level -> (easy, medium, hard) pool index for the real-mix streams.
LEVEL_POOL: dict[int, int] = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
#: Name of the true-curve reference rows (streams whose true curves are known); its entry in
#: :data:`shadowprice.evaluate.policies.REFERENCES` says what it is.
TRUE_CLEAR = "true-clear"


@dataclass(frozen=True)
class BenchStream:
    """One stream of the bench: traces plus how to evaluate them.

    Attributes
    ----------
    key : str
        Short name, e.g. ``"balanced"``, ``"real"``, ``"real-balanced"``, ``"balanced-long"``.
    kind : str
        ``"synthetic"``, ``"real"``, ``"real-mix"`` or ``"long"``.
    traces : TraceSet
        Queries with their samples.
    budgets : tuple of int
        Average tokens per query evaluated.
    repeats : int
        Random half-splits averaged.
    truth : GammaSCurve, optional
        True curves (synthetic streams), for the :data:`TRUE_CLEAR` reference.
    note : str
        One line on the data.
    """

    key: str
    kind: str
    traces: TraceSet
    budgets: tuple[int, ...]
    repeats: int
    truth: GammaSCurve | None = None
    note: str = ""

    @property
    def scarce(self) -> int:
        """Largest budget of the scarce regime for this stream (tokens per query)."""
        return SCARCE_LONG if self.kind == "long" else SCARCE_SHORT

    @property
    def scarce_budgets(self) -> list[float]:
        """This stream's budgets in the scarce regime, ascending."""
        return [float(b) for b in self.budgets if b <= self.scarce]

    @property
    def calibrated(self) -> bool:
        """Paper-calibrated synthetic stream (the "calibrated streams" of the targets)."""
        return self.kind in ("synthetic", "long")


def format_budget(b: float) -> str:
    """A budget as the report writes it: ``"300"``, ``"1500"``, ``"2k"``.

    Parameters
    ----------
    b : float
        Tokens per query.

    Returns
    -------
    str
        Thousands as ``"<n>k"`` above 1500 tokens, the plain number otherwise.
    """
    return f"{b / 1000:g}k" if b >= 1000 and b % 1000 == 0 and b > 1500 else f"{b:g}"


def real_mixture(traces: TraceSet, name: str, n: int, seed: int = 0) -> TraceSet:
    """Resample real queries with replacement into mixture ``name`` by MATH level.

    Parameters
    ----------
    traces : TraceSet
        Real queries with ``meta.level`` (MATH difficulty 1-5): easy = levels 1-2,
        medium = 3, hard = 4-5.
    name : str
        A mixture of :data:`~shadowprice.evaluate.streams.STREAMS`.
    n : int
        Queries to draw; per class, the largest-remainder rounding of n x the mixture's
        proportions.
    seed : int
        Seeds the draws and their order.

    Returns
    -------
    TraceSet
        ``n`` records; copies get ids ``<id>#<k>`` and ``meta.mixture = name``.

    Raises
    ------
    ValueError
        When a difficulty class has no query.
    """
    levels = traces.meta("level")
    groups: list[list[int]] = [[], [], []]
    for i, lv in enumerate(levels):
        if lv in LEVEL_POOL:
            groups[LEVEL_POOL[int(lv)]].append(i)
    if any(not g for g in groups):
        raise ValueError("real mixtures need queries of every difficulty class (meta.level)")
    rng = np.random.default_rng([seed, 0x3E11])
    picks = np.concatenate(
        [
            rng.choice(g, size=int(k), replace=True)
            for g, k in zip(groups, largest_remainder(n, STREAMS[name]), strict=True)
        ]
    )
    picks = picks[rng.permutation(picks.size)]
    records = []
    for k, i in enumerate(picks.tolist()):
        rec = dict(traces.records[i])
        rec["id"] = f"{rec['id']}#{k}"
        rec["meta"] = {**rec.get("meta", {}), "mixture": name}
        records.append(rec)
    return TraceSet(records)


def build_streams(
    *,
    streams: Sequence[str] = tuple(PAPER_STREAMS),
    n: int = 1000,
    n_real_mix: int = 300,
    n_long: int = 500,
    budgets: Sequence[int] = SHORT_BUDGETS,
    long_budgets: Sequence[int] = LONG_BUDGETS,
    real: bool = True,
    long: bool = True,
    repeats: int = 2,
    real_repeats: int = 5,
    seed: int = 0,
) -> list[BenchStream]:
    """The bench's streams, in report order (see the module docstring).

    Parameters
    ----------
    streams : sequence of str
        Mixture names from :data:`~shadowprice.evaluate.streams.STREAMS`.
    n, n_real_mix, n_long : int
        Queries per synthetic, real-mix and long-reasoning stream.
    budgets, long_budgets : sequence of int
        Average tokens per query (short streams and the real set / long-reasoning pools).
    real, long : bool
        Include the bundled real set and its level mixtures / the long-reasoning pools.
    repeats, real_repeats : int
        Random half-splits to average per stream / on the real set.
    seed : int
        Seeds the streams and their simulated samples.

    Returns
    -------
    list of BenchStream
        Synthetic streams, then (with ``real``) the real set and its level mixtures, then
        (with ``long``) the long-reasoning streams.
    """
    out: list[BenchStream] = []
    bs, lbs = tuple(int(b) for b in budgets), tuple(int(b) for b in long_budgets)
    for name in streams:
        st = make_stream(name, n, seed)
        out.append(
            BenchStream(
                name,
                "synthetic",
                st.sample_traces(SAMPLES, sample_seed(seed, 0x5A)),
                bs,
                repeats,
                st.truth,
                f"SYNTHETIC, paper-calibrated pools, {n} queries x {SAMPLES} simulated samples",
            )
        )
    if real:
        base = load_traces(REAL_TRACE_SET)
        out.append(
            BenchStream(
                "real",
                "real",
                base,
                bs,
                real_repeats,
                None,
                f"REAL: bundled {REAL_TRACE_SET}, {base.n} MATH problems x 8 samples "
                f"of Qwen2.5-Math-Instruct",
            )
        )
        for name in streams:
            out.append(
                BenchStream(
                    f"real-{name}",
                    "real-mix",
                    real_mixture(base, name, n_real_mix, seed),
                    bs,
                    repeats,
                    None,
                    f"REAL queries resampled with replacement into {name} by MATH "
                    f"level, {n_real_mix} draws from {base.n} problems (CIs understate)",
                )
            )
    if long:
        for name in streams:
            st = make_stream(name, n_long, seed, family="long")
            out.append(
                BenchStream(
                    st.name,
                    "long",
                    st.sample_traces(
                        SAMPLES, sample_seed(seed, 0x5B), max_tokens=MAX_SAMPLE_TOKENS_LONG
                    ),
                    lbs,
                    repeats,
                    st.truth,
                    f"SYNTHETIC long-reasoning pools (assumed lengths), "
                    f"{n_long} queries x {SAMPLES} simulated samples",
                )
            )
    return out
