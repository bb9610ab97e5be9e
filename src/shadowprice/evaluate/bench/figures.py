"""The bench's figures: accuracy frontiers, the paper's 4-panel figure redrawn, CLEAR / uniform."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..policies import policy_info
from .streams import PAPER_STREAMS, TRUE_CLEAR, BenchStream

__all__ = ["plot_frontier", "plot_paper_style", "plot_ratio", "plot_spent"]

_STYLE: dict[str, tuple[str, str, str]] = {
    "clear": ("C0", "o", "-"),
    "clear-paper": ("C9", "v", "-"),
    "uniform": ("0.45", "s", "--"),
    "proportional": ("C2", "^", "-"),
    "length": ("C4", "P", "-"),
    "oracle": ("k", "D", ":"),
    TRUE_CLEAR: ("C3", "*", ":"),
    "clear-live": ("C1", "o", "-"),
    "clear-spent": ("C5", "x", "-"),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: headless, never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_frontier(results: pd.DataFrame, sts: Sequence[BenchStream], path: Path) -> Path:
    """Accuracy vs average allotted tokens per query, one panel per stream.

    Parameters
    ----------
    results : DataFrame
        The bench's results, one row per (stream, policy, budget).
    sts : sequence of BenchStream
        The streams, one panel each.
    path : Path
        PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    return _panels(
        results,
        sts,
        path,
        x="tokens_allotted",
        xlabel="tokens per query (allotted)",
        title="Accuracy vs average budget (held out, split half); synthetic streams are SYNTHETIC",
        log_x=lambda st: st.kind == "long",
    )


def plot_paper_style(results: pd.DataFrame, paper: pd.DataFrame, path: Path) -> Path:
    """The paper's 4-panel results figure with our synthetic streams, paper overlaid.

    Parameters
    ----------
    results : DataFrame
        The bench's results; the four paper-calibrated synthetic streams are drawn.
    paper : DataFrame
        The paper's digitised results (:func:`~shadowprice.traces.load_paper_results`).
    path : Path
        PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4), dpi=100)
    for ax, (ours, theirs) in zip(axes, PAPER_STREAMS.items(), strict=True):
        g = results[results.stream == ours]
        p = paper[paper.stream == theirs].sort_values("budget")
        tw = ax.twinx()
        if not g.empty:
            c = g[g.policy == "clear"].sort_values("budget")
            u = g[g.policy == "uniform"].sort_values("budget")
            ax.plot(
                c.budget,
                100 * c.accuracy,
                "o-",
                color="#4aa3df",
                lw=2.2,
                ms=6,
                label="ours: CLEAR (clear) accuracy",
            )
            ax.plot(
                u.budget,
                100 * u.accuracy,
                "--",
                color="0.4",
                lw=2.2,
                label="ours: uniform accuracy",
            )
            tw.plot(
                c.budget,
                100 * c.abandoned,
                "x:",
                color="#e74c3c",
                lw=2,
                ms=6,
                label="ours: abandonment rate",
            )
        ax.plot(
            p.budget,
            p.clear,
            "o-",
            color="#4aa3df",
            alpha=0.35,
            lw=1.2,
            ms=3,
            label="paper: CLEAR accuracy (digitised)",
        )
        ax.plot(
            p.budget,
            p.uniform,
            "--",
            color="0.4",
            alpha=0.35,
            lw=1.2,
            label="paper: uniform accuracy (digitised)",
        )
        tw.plot(
            p.budget,
            p.abandoned,
            "x:",
            color="#e74c3c",
            alpha=0.35,
            lw=1.2,
            ms=3,
            label="paper: abandonment (digitised)",
        )
        ax.set_title(theirs, fontsize=13, fontweight="bold")
        ax.set_xlabel("Budget per query (tokens)")
        ax.set_ylabel("Accuracy (%)", color="#4aa3df")
        tw.set_ylabel("Abandonment rate (%)", color="#e74c3c")
        tw.set_ylim(-5, 105)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, ls="--")
    h1, l1 = axes[0].get_legend_handles_labels()
    h2, l2 = axes[0].figure.axes[-1].get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="lower center", ncol=6, fontsize=9, frameon=False)
    fig.suptitle(
        "Ours (SYNTHETIC paper-calibrated streams, held out) vs the paper "
        "(Qwen2.5-Math-7B, digitised): compare shapes and ratios, not levels",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_ratio(
    results: pd.DataFrame, paper: pd.DataFrame, sts: Sequence[BenchStream], path: Path
) -> Path:
    """CLEAR / uniform accuracy vs budget per stream (where uniform >= 1 %), paper dashed.

    Parameters
    ----------
    results : DataFrame
        The bench's results (``ratio_uniform`` of the ``clear`` rows).
    paper : DataFrame
        The paper's digitised results, drawn dashed beside the stream of the same name.
    sts : sequence of BenchStream
        The streams, one panel per kind.
    path : Path
        PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    kinds = list(dict.fromkeys(s.kind for s in sts))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.8), dpi=100, squeeze=False)
    for ax, kind in zip(axes.flat, kinds, strict=True):
        for i, st in enumerate(s for s in sts if s.kind == kind):
            c = results[(results.stream == st.key) & (results.policy == "clear")]
            c = c.sort_values("budget")
            ax.plot(c.budget, c.ratio_uniform, "o-", color=f"C{i}", ms=4, label=st.key)
            theirs = PAPER_STREAMS.get(st.key)
            if theirs is not None:
                p = paper[(paper.stream == theirs) & (paper.uniform >= 1.0)]
                ax.plot(
                    p.budget,
                    p.clear / p.uniform,
                    "--",
                    color=f"C{i}",
                    alpha=0.5,
                    label=f"paper {theirs}",
                )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(3.0, color="k", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        if kind == "long":
            ax.set_xscale("log", base=2)
        ax.set_title(f"{kind}: CLEAR / uniform", fontsize=10)
        ax.set_xlabel("tokens per query")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_spent(spent: pd.DataFrame, sts: Sequence[BenchStream], path: Path) -> Path:
    """Accuracy vs tokens *spent* per query, one panel per stream.

    The spent-accounting runs (``uniform`` and ``clear`` one-shot, ``clear-spent``,
    ``clear-live``, the spent ceiling), each point at the tokens it generated rather than at
    its budget: a one-shot plan that leaves part of its budget unspent sits to the left of
    the live policy given the same budget.

    Parameters
    ----------
    spent : DataFrame
        The bench's spent-accounting results.
    sts : sequence of BenchStream
        The streams, one panel each.
    path : Path
        PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    return _panels(
        spent,
        sts,
        path,
        x="tokens_spent",
        xlabel="tokens spent per query",
        title="Accuracy vs tokens generated (held out, split half; spent accounting through a "
        "16-slot engine simulator); synthetic streams are SYNTHETIC",
        log_x=lambda st: True,
        legend_columns=4,
    )


def _panels(
    results: pd.DataFrame,
    sts: Sequence[BenchStream],
    path: Path,
    *,
    x: str,
    xlabel: str,
    title: str,
    log_x: Callable[[BenchStream], bool],
    legend_columns: int = 7,
) -> Path:
    """Accuracy against column ``x`` for every policy, one panel per stream, four a row."""
    plt = _pyplot()
    cols = 4
    rows = math.ceil(len(sts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), dpi=100, squeeze=False)
    for ax, st in zip(axes.flat, sts, strict=False):
        g = results[results.stream == st.key]
        for pol in dict.fromkeys(g.policy):
            sub = g[g.policy == pol].sort_values("budget")
            color, marker, ls = _STYLE.get(pol, (None, ".", "-"))
            ax.plot(
                sub[x],
                100 * sub.accuracy,
                color=color,
                marker=marker,
                ls=ls,
                ms=4,
                lw=1.2,
                label=policy_info(pol).label,
                mfc="none" if pol == "oracle" else None,
            )
        if log_x(st):
            ax.set_xscale("log", base=2)
        ax.set_title(f"{st.key} ({st.kind}, n={st.traces.n})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(sts) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), legend_columns),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path)
    plt.close(fig)
    return path
