"""Driving the bench: evaluate every policy on every stream, then write the report folder."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...allocate import allocate
from ...traces import load_paper_results
from ..policies import EVAL_POLICIES, REFERENCES
from ..replay import replay
from ..runner import COLUMNS, evaluate
from ..splits import split_half
from .figures import plot_frontier, plot_paper_style, plot_ratio, plot_spent
from .report import prediction_section, render_report, spent_section
from .streams import (
    LONG_BUDGETS,
    PAPER_STREAMS,
    SHORT_BUDGETS,
    TRUE_CLEAR,
    BenchStream,
    build_streams,
)
from .targets import RATIO_FLOOR, Target, check_spent_targets, check_targets

__all__ = [
    "DEFAULT_POLICIES",
    "RESULT_COLUMNS",
    "SPENT_COLUMNS",
    "SPENT_POLICIES",
    "BenchResult",
    "evaluate_stream",
    "run_bench",
    "run_prediction",
]

#: CLEAR, the paper's recipe, the baselines and the ceiling.
DEFAULT_POLICIES: tuple[str, ...] = (
    "uniform",
    "clear",
    "clear-paper",
    "proportional",
    "length",
    "oracle",
)

#: Policies of the spent-accounting tables: today's plans run one-shot, the spend-aware
#: one-shot plan, the live policy and the spent ceiling.
SPENT_POLICIES: tuple[str, ...] = ("uniform", "clear", "clear-spent", "clear-live", "oracle")

#: Columns of ``results.csv``, one row per (stream, policy, budget).
RESULT_COLUMNS = [
    "stream",
    "kind",
    *COLUMNS[: COLUMNS.index("vs_uniform_ci_high") + 1],  # evaluate's, policy to vs_uniform
    "ratio_uniform",
    "share_oracle",
    "n_queries",
    "repeats",
]
#: Columns of ``results_spent.csv``: the same, plus the paired difference to ``clear``.
SPENT_COLUMNS = [*RESULT_COLUMNS, "vs_clear", "vs_clear_ci_low", "vs_clear_ci_high"]


@dataclass
class BenchResult:
    """What :func:`run_bench` measured and wrote.

    Attributes
    ----------
    out_dir : Path
        The report folder.
    results : DataFrame
        :data:`RESULT_COLUMNS`, one row per (stream, policy, budget).
    targets : list of Target
        Checks on ``clear`` (the targets section).
    seconds : float
        Wall time of the run (evaluation and writing).
    files : dict of str -> Path
        ``report``, ``csv``, ``frontier``, ``paper_style``, ``ratio`` and, with the
        prediction study, ``prediction``.
    streams : list of str
        Stream keys in order.
    spent : DataFrame, optional
        :data:`SPENT_COLUMNS`, the spent-accounting runs (``spent=True``).
    spent_targets : list of Target
        Checks on ``clear-live`` under spent accounting.
    """

    out_dir: Path
    results: pd.DataFrame
    targets: list[Target]
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    streams: list[str] = field(default_factory=list)
    spent: pd.DataFrame | None = None
    spent_targets: list[Target] = field(default_factory=list)


def run_bench(
    out_dir: str | Path = "shadowprice-bench",
    *,
    streams: Sequence[str] = tuple(PAPER_STREAMS),
    n: int = 1000,
    n_real_mix: int = 300,
    n_long: int = 500,
    budgets: Sequence[int] = SHORT_BUDGETS,
    long_budgets: Sequence[int] = LONG_BUDGETS,
    policies: Sequence[str] = DEFAULT_POLICIES,
    real: bool = True,
    long: bool = True,
    repeats: int = 2,
    real_repeats: int = 5,
    n_boot: int = 500,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    predict: bool = True,
    predict_folds: int = 5,
    spent: bool = True,
    command: str | None = None,
) -> BenchResult:
    """Evaluate ``policies`` on every stream at every budget; write the report folder.

    Each policy is fitted on one random half of each query's samples and replayed on the
    other half (:func:`~shadowprice.evaluate.runner.evaluate`, ``split="half"``), averaged
    over ``repeats`` random splits. The folder gets ``report.md`` (accuracy with intervals,
    ratios, shares of the ceiling, the targets, the paper's numbers side by side),
    ``results.csv``, the figures and, with the prediction study, ``prediction.csv``.

    Parameters
    ----------
    out_dir : path
        Report folder (created).
    streams : sequence of str
        Mixture names from :data:`~shadowprice.evaluate.streams.STREAMS`.
    n, n_real_mix, n_long : int
        Queries per synthetic, real-mix and long-reasoning stream.
    budgets, long_budgets : sequence of int
        Average tokens per query (short streams and real data / long-reasoning pools).
    policies : sequence of str
        Evaluation policies; ``uniform`` and ``oracle`` are always added (ratios, shares).
    real, long : bool
        Include the bundled real set (and its level mixtures) / the long-reasoning pools.
    repeats, real_repeats : int
        Random half-splits averaged per stream / on the 100-query real set.
    n_boot : int
        Bootstrap resamples for the intervals.
    seed : int
        Seeds streams, samples, splits and bootstraps.
    progress : bool
        Show a ``rich`` progress bar (on stderr).
    plots : bool
        Write the PNGs.
    predict, predict_folds : bool, int
        With ``real``: also CLEAR with thresholds predicted from text, cross-fitted over
        ``predict_folds`` folds of the real set (:func:`run_prediction`; ~10 s of training
        per fold).
    spent : bool
        Also run :data:`SPENT_POLICIES` under spent accounting on every stream (the
        serving-engine simulator), with their targets, ``results_spent.csv`` and
        ``spent.png``.
    command : str, optional
        The command line to print in the report.

    Returns
    -------
    BenchResult

    Raises
    ------
    ValueError
        For an unknown policy name.
    """
    start = time.perf_counter()
    pols = _policy_list(policies)
    sts = build_streams(
        streams=streams,
        n=n,
        n_real_mix=n_real_mix,
        n_long=n_long,
        budgets=budgets,
        long_budgets=long_budgets,
        real=real,
        long=long,
        repeats=repeats,
        real_repeats=real_repeats,
        seed=seed,
    )
    frames = _run_all(sts, pols, seed, n_boot, progress)
    results = pd.concat(frames, ignore_index=True)
    targets = check_targets(results, sts)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files_: dict[str, Path] = {"csv": out / "results.csv", "report": out / "report.md"}
    results.to_csv(files_["csv"], index=False, float_format="%.6g")
    spent_df, spent_targets = None, []
    if spent:
        spent_df = pd.concat(
            _run_all(sts, list(SPENT_POLICIES), seed, n_boot, progress, "spent"),
            ignore_index=True,
        )
        spent_targets = check_spent_targets(spent_df, sts)
        files_["spent_csv"] = out / "results_spent.csv"
        spent_df.to_csv(files_["spent_csv"], index=False, float_format="%.6g")
    prediction = None
    if real and predict:
        prediction = run_prediction(budgets, predict_folds, seed, n_boot, progress)
        files_["prediction"] = out / "prediction.csv"
        prediction.to_csv(files_["prediction"], index=False, float_format="%.6g")
    paper = load_paper_results()
    if plots:
        files_["frontier"] = plot_frontier(results, sts, out / "frontier.png")
        files_["paper_style"] = plot_paper_style(results, paper, out / "paper_style.png")
        files_["ratio"] = plot_ratio(results, paper, sts, out / "ratio.png")
        if spent_df is not None:
            files_["spent"] = plot_spent(spent_df, sts, out / "spent.png")
    seconds = time.perf_counter() - start
    ref = check_targets(results, sts, "clear-paper") if "clear-paper" in pols else []
    report = render_report(
        results,
        sts,
        targets,
        ref,
        paper,
        seconds=seconds,
        command=command,
        n_boot=n_boot,
        seed=seed,
    )
    if spent_df is not None:
        report += "\n" + "\n".join(spent_section(spent_df, sts, spent_targets)) + "\n"
    if prediction is not None:
        report += "\n" + "\n".join(prediction_section(prediction, predict_folds)) + "\n"
    files_["report"].write_text(report, encoding="utf-8")
    return BenchResult(
        out, results, targets, seconds, files_, [s.key for s in sts], spent_df, spent_targets
    )


def run_prediction(
    budgets: Sequence[int], folds: int, seed: int, n_boot: int, progress: bool = False
) -> pd.DataFrame:
    """CLEAR with text-predicted thresholds on the real set, cross-fitted over queries.

    Parameters
    ----------
    budgets : sequence of int
        Average tokens per query.
    folds : int
        Folds of the real set; each is allocated by a predictor that never saw it.
    seed, n_boot : int
        Seed of the folds and bootstrap; bootstrap resamples.
    progress : bool
        Say on stderr that training has started (it takes ~10 s per fold).

    Returns
    -------
    DataFrame
        One row per (policy, budget) of the cross-fitted experiment
        (``crossfit_allocation``): accuracy, ``gain_kept``, paired intervals against uniform.
    """
    from ..prediction import crossfit_allocation

    if progress:
        print(
            f"cross-fitting the text predictor on the real set ({folds} folds)...",
            file=sys.stderr,
            flush=True,
        )
    return crossfit_allocation(
        budgets=tuple(float(b) for b in budgets), folds=folds, seed=seed, n_boot=n_boot
    )


def evaluate_stream(
    stream: BenchStream,
    policies: Sequence[str],
    seed: int,
    n_boot: int,
    tick: Callable[[], None] = lambda: None,
    accounting: str = "allotted",
) -> pd.DataFrame:
    """All policies at all budgets of one stream (one evaluate call per budget).

    Parameters
    ----------
    stream : BenchStream
        Its traces, budgets and repeats; with ``truth``, a :data:`TRUE_CLEAR` row is added
        per budget.
    policies : sequence of str
        Evaluation policies, ``uniform`` and ``oracle`` among them.
    seed, n_boot : int
        Seed of the splits and bootstrap; bootstrap resamples.
    tick : callable
        Called after each budget (progress).
    accounting : {'allotted', 'spent'}
        What the budget bounds; under ``spent`` the rows also compare with ``clear``.

    Returns
    -------
    DataFrame
        :data:`RESULT_COLUMNS` (``spent``: :data:`SPENT_COLUMNS`), one row per (policy,
        budget).
    """
    frames = []
    spent = accounting == "spent"
    for b in stream.budgets:
        df = evaluate(
            stream.traces,
            [b],
            policies,
            split="half",
            seed=seed,
            repeats=stream.repeats,
            n_boot=n_boot,
            accounting="spent" if spent else "allotted",
            paired=("uniform", "clear") if spent else ("uniform",),
        )
        if stream.truth is not None and not spent:
            df = pd.concat([df, pd.DataFrame([_true_clear(stream, b, seed)])], ignore_index=True)
        frames.append(df)
        tick()
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "kind", stream.kind)
    df.insert(0, "stream", stream.key)
    df["repeats"] = stream.repeats
    return _derived(df, SPENT_COLUMNS if spent else RESULT_COLUMNS)


def _true_clear(stream: BenchStream, budget: int, seed: int) -> dict[str, Any]:
    """CLEAR on the true curves, replayed on the same held-out halves as the policies."""
    assert stream.truth is not None
    ref = REFERENCES[TRUE_CLEAR]
    ts = stream.traces
    alloc = allocate(stream.truth, int(budget) * ts.n, ref.method)
    acc = allotted = spent = 0.0
    for r in range(stream.repeats):
        _, score = split_half(ts, seed + r)
        res = replay(alloc, score, n_boot=0)
        acc += res.accuracy / stream.repeats
        allotted += res.tokens_allotted / (stream.repeats * ts.n)
        spent += res.tokens_spent / (stream.repeats * ts.n)
    return {
        "policy": TRUE_CLEAR,
        "label": ref.label,
        "budget": float(budget),
        "accuracy": acc,
        "accuracy_ci_low": np.nan,
        "accuracy_ci_high": np.nan,
        "tokens_allotted": allotted,
        "tokens_spent": spent,
        "abandoned": alloc.abandonment_rate,
        "n_queries": ts.n,
    }


def _derived(df: pd.DataFrame, columns: Sequence[str] = tuple(RESULT_COLUMNS)) -> pd.DataFrame:
    """Add ``ratio_uniform`` (NaN where uniform < RATIO_FLOOR) and ``share_oracle``."""
    key = ["stream", "budget"]
    uni = df[df.policy == "uniform"].set_index(key).accuracy
    ora = df[df.policy == "oracle"].set_index(key).accuracy
    idx = pd.MultiIndex.from_frame(df[key])
    u = uni.reindex(idx).to_numpy(float)
    o = ora.reindex(idx).to_numpy(float)
    acc = df.accuracy.to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["ratio_uniform"] = np.where(u >= RATIO_FLOOR, acc / u, np.nan)
        df["share_oracle"] = np.where(o > 0, acc / o, np.nan)
    return df[list(columns)]


def _policy_list(policies: Sequence[str]) -> list[str]:
    unknown = [p for p in policies if p not in EVAL_POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(EVAL_POLICIES)}")
    pols = list(dict.fromkeys(["uniform", *policies, "oracle"]))
    return [p for p in pols if p != "oracle"] + ["oracle"]


def _run_all(
    sts: list[BenchStream],
    pols: list[str],
    seed: int,
    n_boot: int,
    progress: bool,
    accounting: str = "allotted",
) -> list[pd.DataFrame]:
    """Evaluate every stream, with a rich progress bar (one step per stream x budget)."""
    total = sum(len(s.budgets) for s in sts)
    if not progress:
        return [evaluate_stream(s, pols, seed, n_boot, accounting=accounting) for s in sts]
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    frames = []
    with Progress(
        TextColumn("[bold]bench[/] {task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task("", total=total)
        for s in sts:
            bar.update(task, description=s.key if accounting == "allotted" else f"{s.key} (spent)")
            frames.append(
                evaluate_stream(s, pols, seed, n_boot, lambda: bar.advance(task), accounting)
            )
    return frames
