"""``shadowprice bench``: every policy on every stream, one report folder.

For each stream the bench evaluates every policy at every average budget (held out: fitted
on one random half of each query's samples, replayed on the other) and writes into
``out_dir``:

* ``report.md``: accuracy with 95 % CI, ratio to uniform, share of the hindsight oracle,
  abandonment, tokens, the paper's numbers side by side, and a *targets* section that checks
  each claim about CLEAR programmatically (MET / MISSED with the reason);
* ``results.csv``: one row per (stream, policy, budget), :data:`RESULT_COLUMNS`;
* ``frontier.png``: accuracy vs average tokens per query, per policy per stream;
* ``paper_style.png``: the paper's 4-panel results figure re-drawn with our numbers, the
  paper's digitised numbers overlaid;
* ``ratio.png``: CLEAR / uniform accuracy ratio vs budget;
* ``prediction.csv`` (with the real set): CLEAR with thresholds predicted from text,
  cross-fitted over folds of the real set;
* ``results_spent.csv`` and ``spent.png`` (``spent=True``): uniform, ``clear``,
  ``clear-spent``, ``clear-live`` and the spent ceiling under *spent* accounting (tokens
  generated, through the serving-engine simulator), accuracy vs tokens spent, and the live
  policy's targets in the report.

One module per job: :mod:`.streams` (which traces, which budgets, what "scarce" is),
:mod:`.run` (driving the evaluation, :func:`run_bench`), :mod:`.targets` (the checks),
:mod:`.report` (markdown), :mod:`.figures` (plots).

"CLEAR" in the targets is the ``clear`` evaluation policy (one market price over
empirical-Bayes curves: shadowprice's recommendation); ``clear-paper`` is the paper's own
recipe (shifted surge, closed form), reported beside it. See
:mod:`shadowprice.evaluate.policies` for what every policy name means.
"""

from ...traces import load_paper_results
from .figures import plot_frontier, plot_paper_style, plot_ratio, plot_spent
from .report import PREDICTION_POLICIES, prediction_section, render_report, spent_section
from .run import (
    DEFAULT_POLICIES,
    RESULT_COLUMNS,
    SPENT_COLUMNS,
    SPENT_POLICIES,
    BenchResult,
    evaluate_stream,
    run_bench,
    run_prediction,
)
from .streams import (
    LONG_BUDGETS,
    PAPER_STREAMS,
    SCARCE_LONG,
    SCARCE_SHORT,
    SHORT_BUDGETS,
    TRUE_CLEAR,
    BenchStream,
    build_streams,
    format_budget,
    real_mixture,
)
from .targets import Target, check_prediction_targets, check_spent_targets, check_targets

__all__ = [
    "DEFAULT_POLICIES",
    "LONG_BUDGETS",
    "PAPER_STREAMS",
    "PREDICTION_POLICIES",
    "RESULT_COLUMNS",
    "SCARCE_LONG",
    "SCARCE_SHORT",
    "SHORT_BUDGETS",
    "SPENT_COLUMNS",
    "SPENT_POLICIES",
    "TRUE_CLEAR",
    "BenchResult",
    "BenchStream",
    "Target",
    "build_streams",
    "check_prediction_targets",
    "check_spent_targets",
    "check_targets",
    "evaluate_stream",
    "format_budget",
    "load_paper_results",
    "plot_frontier",
    "plot_paper_style",
    "plot_ratio",
    "plot_spent",
    "prediction_section",
    "real_mixture",
    "render_report",
    "run_bench",
    "run_prediction",
    "spent_section",
]
