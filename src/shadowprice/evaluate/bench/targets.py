"""The bench's targets: each claim about CLEAR checked programmatically, MET or MISSED.

Claims about a policy (``clear`` by default) on every stream (:func:`check_targets`):

1. it beats uniform at every scarce budget (point estimate above uniform's);
2. it reaches at least :data:`RATIO_TARGET` x uniform somewhere in the scarce regime, with
   the paired interval above 0 (calibrated streams; ratios only where uniform reaches
   :data:`RATIO_FLOOR`);
3. it is never below uniform by more than the interval at any budget (the paired 95 %
   interval's upper end is >= 0);
4. it reaches at least :data:`CEILING_SHARE` of the hindsight ceiling at every scarce budget.

Claims about the live policy under *spent* accounting (:func:`check_spent_targets`, on the
spent-accounting results): ``clear-live`` is never below ``clear`` (the same curves run as a
one-shot plan) nor uniform by more than the interval at any budget, and reaches
:data:`LIVE_RATIO_TARGET` x ``clear`` somewhere in the scarce regime with the paired interval
above 0 (required on the balanced and mostly-easy long-reasoning streams; reported on all).

Claims about the cross-fitted prediction from text on the real set
(:func:`check_prediction_targets`): CLEAR on the expected curve under the prediction keeps at
least :data:`GAIN_KEPT_TARGET` of the gain over uniform that CLEAR with each query's own traced
threshold has, at every scarce budget; and neither the predicted nor the expected-curve
policy is below uniform by more than the interval. "Scarce" is the stream's regime
(:attr:`BenchStream.scarce`), defined once in :mod:`.streams`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .streams import SCARCE_SHORT, TRUE_CLEAR, BenchStream, format_budget

__all__ = [
    "CEILING_SHARE",
    "GAIN_KEPT_TARGET",
    "LIVE_RATIO_TARGET",
    "RATIO_FLOOR",
    "RATIO_TARGET",
    "Target",
    "check_prediction_targets",
    "check_spent_targets",
    "check_targets",
]

#: Ratios to uniform are only shown (and claimed) where uniform reaches this accuracy.
RATIO_FLOOR = 0.01
#: "Several-fold": the ratio to uniform claimed somewhere in the scarce regime.
RATIO_TARGET = 3.0
#: Share of the hindsight ceiling claimed at every scarce budget.
CEILING_SHARE = 0.8
#: Share of the hindsight-threshold gain over uniform the text predictor must keep.
GAIN_KEPT_TARGET = 0.5
#: Gain over the one-shot ``clear`` the live policy must reach somewhere scarce (spent
#: accounting).
LIVE_RATIO_TARGET = 1.1


@dataclass(frozen=True)
class Target:
    """One programmatic check of one claim on one stream.

    Attributes
    ----------
    claim : str
        What is claimed, e.g. ``"beats uniform at every scarce budget (<= 500)"``.
    stream : str
        Key of the stream it was checked on.
    met : bool
        Whether the data bear the claim out.
    detail : str
        The numbers behind the verdict and, when missed, where and why.
    """

    claim: str
    stream: str
    met: bool
    detail: str

    @property
    def verdict(self) -> str:
        """``"MET"`` or ``"MISSED"``."""
        return "MET" if self.met else "MISSED"


def check_targets(
    results: pd.DataFrame, streams: Sequence[BenchStream], policy: str = "clear"
) -> list[Target]:
    """Check the claims of the module docstring for ``policy`` on every stream.

    Parameters
    ----------
    results : DataFrame
        The bench's results (:data:`~shadowprice.evaluate.bench.RESULT_COLUMNS`), with
        ``uniform`` and ``oracle`` rows at every budget.
    streams : sequence of BenchStream
        The streams to check; a stream where ``policy`` was not evaluated is skipped.
    policy : str
        The evaluation policy the claims are about.

    Returns
    -------
    list of Target
        Per stream: beats uniform, the ratio claim (calibrated streams only), never below
        uniform, share of the ceiling.
    """
    out: list[Target] = []
    for st in streams:
        g = results[results.stream == st.key].set_index(["policy", "budget"])
        if (policy, float(st.budgets[0])) not in g.index:
            continue
        scarce = st.scarce_budgets
        out.append(_t_beats(g, st, scarce, policy))
        if st.calibrated:
            out.append(_t_ratio(g, st, scarce, policy))
        out.append(_t_never_below(g, st, policy))
        out.append(_t_ceiling(g, st, scarce, policy))
    return out


def _t_beats(g: pd.DataFrame, st: BenchStream, scarce: list[float], pol: str) -> Target:
    d = {b: float(g.loc[(pol, b), "vs_uniform"]) for b in scarce}
    lo = {b: float(g.loc[(pol, b), "vs_uniform_ci_low"]) for b in scarce}
    worst = min(d, key=lambda b: d[b])
    sig = sum(lo[b] > 0 for b in scarce)
    met = all(v > 0 for v in d.values())
    detail = (
        f"{pol} − uniform from {100 * d[worst]:+.1f} pts (at {format_budget(worst)}) to "
        f"{100 * max(d.values()):+.1f} pts; paired CI above 0 at {sig}/{len(scarce)} "
        f"scarce budgets"
    )
    if not met:
        detail += f"; not above uniform at {format_budget(worst)}"
    return Target(
        f"beats uniform at every scarce budget (<= {format_budget(st.scarce)})", st.key, met, detail
    )


def _t_ratio(g: pd.DataFrame, st: BenchStream, scarce: list[float], pol: str) -> Target:
    """Met where the policy reaches RATIO_TARGET x uniform and beats it significantly."""
    acc = {b: float(g.loc[(pol, b), "accuracy"]) for b in scarce}
    uni = {b: float(g.loc[("uniform", b), "accuracy"]) for b in scarce}
    sig = {b: float(g.loc[(pol, b), "vs_uniform_ci_low"]) > 0 for b in scarce}
    hits = [b for b in scarce if sig[b] and acc[b] >= RATIO_TARGET * uni[b]]
    shown = {b: acc[b] / uni[b] for b in scarce if uni[b] >= RATIO_FLOOR}
    parts = []
    if shown:
        best = max(shown, key=lambda b: shown[b])
        parts.append(
            f"best ratio where uniform >= 1 %: {shown[best]:.1f}x at {format_budget(best)}"
        )
    tiny = [b for b in scarce if uni[b] < RATIO_FLOOR]
    if tiny:
        parts.append(
            "uniform < 1 % at "
            + ", ".join(
                f"{format_budget(b)} ({100 * acc[b]:.1f} % vs {100 * uni[b]:.1f} %)" for b in tiny
            )
        )
    met = bool(hits)
    if met:
        parts.append(f">= 3x (CI-significant) at {', '.join(format_budget(b) for b in hits)}")
    else:
        parts.append("never 3x: uniform already funds most solvable queries at these budgets")
    return Target(">= 3x uniform somewhere in the scarce regime", st.key, met, "; ".join(parts))


def _t_never_below(g: pd.DataFrame, st: BenchStream, pol: str) -> Target:
    bs = [float(b) for b in st.budgets]
    d = {b: float(g.loc[(pol, b), "vs_uniform"]) for b in bs}
    hi = {b: float(g.loc[(pol, b), "vs_uniform_ci_high"]) for b in bs}
    worst = min(d, key=lambda b: d[b])
    bad = [b for b in bs if hi[b] < 0]
    met = not bad
    detail = f"lowest {pol} − uniform {100 * d[worst]:+.1f} pts at {format_budget(worst)}"
    if bad:
        detail += (
            f"; significantly below uniform at {', '.join(format_budget(b) for b in bad)} "
            f"(paired CI upper end {100 * min(hi[b] for b in bad):+.1f} pts)"
        )
    return Target("never below uniform by more than the CI (any budget)", st.key, met, detail)


def _t_ceiling(g: pd.DataFrame, st: BenchStream, scarce: list[float], pol: str) -> Target:
    s = {b: float(g.loc[(pol, b), "share_oracle"]) for b in scarce}
    worst = min(s, key=lambda b: s[b])
    met = all(v >= CEILING_SHARE for v in s.values())
    detail = (
        f"{pol} / hindsight oracle {' / '.join(f'{s[b]:.2f}' for b in scarce)} at "
        f"{' / '.join(format_budget(b) for b in scarce)}"
    )
    if not met:
        detail += f"; below {CEILING_SHARE} at {format_budget(worst)}. Why: " + _ceiling_reason(
            g, worst, pol
        )
    return Target(
        ">= 0.8 of the hindsight ceiling at scarce budgets (split half)", st.key, met, detail
    )


def _ceiling_reason(g: pd.DataFrame, b: float, pol: str) -> str:
    if (TRUE_CLEAR, b) in g.index:
        t = float(g.loc[(TRUE_CLEAR, b), "share_oracle"])
        c = float(g.loc[(pol, b), "accuracy"]) / max(
            float(g.loc[(TRUE_CLEAR, b), "accuracy"]), 1e-12
        )
        return (
            f"the ceiling fits the very samples it is scored on; even CLEAR on the TRUE "
            f"curves reaches only {t:.2f} of it here, and {pol} (fitted from 4 samples per "
            f"query) reaches {c:.2f} of that true-curve allocator"
        )
    return (
        "the ceiling picks caps on the 4 scoring samples it is graded on (their luck is "
        "not attainable); the real set has no known true curves to measure the attainable "
        "level"
    )


def check_spent_targets(
    spent: pd.DataFrame, streams: Sequence[BenchStream], policy: str = "clear-live"
) -> list[Target]:
    """Check the live policy's claims (module docstring) on the spent-accounting results.

    Parameters
    ----------
    spent : DataFrame
        The bench's spent-accounting results, with ``uniform`` and ``clear`` rows and the
        paired ``vs_uniform`` and ``vs_clear`` columns.
    streams : sequence of BenchStream
        Streams to check (skipped where ``policy`` was not evaluated).
    policy : str
        The live policy.

    Returns
    -------
    list of Target
        Per stream: never below clear, never below uniform, the ratio to clear.
    """
    out: list[Target] = []
    for st in streams:
        g = spent[spent.stream == st.key].set_index(["policy", "budget"])
        if (policy, float(st.budgets[0])) not in g.index:
            continue
        for ref in ("clear", "uniform"):
            out.append(_t_not_below(g, st, policy, ref))
        out.append(_t_live_ratio(g, st, policy))
    return out


def _t_not_below(g: pd.DataFrame, st: BenchStream, pol: str, ref: str) -> Target:
    col = "vs_" + ref
    bs = [float(b) for b in st.budgets]
    d = {b: float(g.loc[(pol, b), col]) for b in bs}
    hi = {b: float(g.loc[(pol, b), f"{col}_ci_high"]) for b in bs}
    worst = min(d, key=lambda b: d[b])
    bad = [b for b in bs if hi[b] < 0]
    detail = f"lowest {pol} − {ref} {100 * d[worst]:+.1f} pts at {format_budget(worst)}"
    if bad:
        detail += f"; significantly below at {', '.join(format_budget(b) for b in bad)}"
    return Target(
        f"spent accounting: never below {ref} by more than the CI (any budget)",
        st.key,
        not bad,
        detail,
    )


def _t_live_ratio(g: pd.DataFrame, st: BenchStream, pol: str) -> Target:
    scarce = st.scarce_budgets
    ratio = {
        b: float(g.loc[(pol, b), "accuracy"]) / max(float(g.loc[("clear", b), "accuracy"]), 1e-12)
        for b in scarce
    }
    sig = {b: float(g.loc[(pol, b), "vs_clear_ci_low"]) > 0 for b in scarce}
    best = max(ratio, key=lambda b: ratio[b])
    hits = [b for b in scarce if sig[b] and ratio[b] >= LIVE_RATIO_TARGET]
    detail = (
        f"{pol} / clear {' / '.join(f'{ratio[b]:.2f}' for b in scarce)} at "
        f"{' / '.join(format_budget(b) for b in scarce)}; best {ratio[best]:.2f}x at "
        f"{format_budget(best)}"
    )
    return Target(
        f"spent accounting: >= {LIVE_RATIO_TARGET}x clear somewhere scarce (CI > 0)",
        st.key,
        bool(hits),
        detail,
    )


def check_prediction_targets(prediction: pd.DataFrame, scarce: int = SCARCE_SHORT) -> list[Target]:
    """Check the prediction-from-text claims (module docstring) on the cross-fitted study.

    Parameters
    ----------
    prediction : DataFrame
        One row per (policy, budget) with ``policy`` (``clear-expected``, ``clear-predicted``,
        ...), ``budget`` (tokens per query), ``gain_kept`` and ``vs_uniform_ci_high``.
    scarce : int
        Largest scarce budget (tokens per query); the real set's regime by default.

    Returns
    -------
    list of Target
        The gain-kept claim, then the never-below-uniform claim (stream ``"real"``).
    """
    budgets = sorted(float(b) for b in prediction.budget.unique())
    ex = prediction[prediction.policy == "clear-expected"].set_index("budget")
    shares = [(b, float(ex.loc[b].gain_kept)) for b in budgets if b <= scarce]
    kept = Target(
        f"keeps ≥ half of the hindsight-tau gain over uniform at scarce budgets "
        f"(≤ {format_budget(scarce)} tokens/query), expected curve",
        "real",
        all(k >= GAIN_KEPT_TARGET for _, k in shares),
        ", ".join(f"{format_budget(b)}: {k:.0%}" for b, k in shares),
    )
    both = prediction[prediction.policy.isin(["clear-predicted", "clear-expected"])]
    below = both[both.vs_uniform_ci_high < 0]
    never = Target(
        "never below uniform by more than the CI (predicted and expected)",
        "real",
        below.empty,
        f"lowest paired CI upper bound {100 * both.vs_uniform_ci_high.min():+.1f} points"
        if below.empty
        else ", ".join(f"{r.policy} at {format_budget(r.budget)}" for r in below.itertuples()),
    )
    return [kept, never]
