"""The online decision core on simulated traffic: pacing, rationing, utility against hindsight.

    .venv/bin/python benchmarks/bench_online.py [--scenarios steady,bursty,...] [--n 20000]
        [--sources synthetic,real] [--upstreams lengths,spend_all]
        [--policies paced,reclear,fcfs] [--tick 0.25] [--margin 0.2] [--seed 7]
        [--noise 0.5] [--per-request N] [--out docs/figures/online_windows.png]
        [--out-periods docs/figures/online.png]

Runs every scenario of :data:`shadowprice.evaluate.scenarios.SCENARIOS` (long ones cut to
``--n`` requests) through the gateway's decision core and a real in-process ledger, once per
policy on the same arrivals: ``paced`` (the gateway's price), ``reclear`` (the unpaced pricer
it replaced) and ``fcfs`` (price 0 until the budget runs out). Prints one JSON line per
(scenario, source, upstream, policy): budget used when demand exceeds it, the longest stretch
of total refusal while spending lagged the pace line, expected utility against hindsight batch
CLEAR and against fcfs, accuracy, tokens over budget; for the fresh-start scenarios also the
granted share per 10-s window (per 5 minutes for the hourly ``trickle``), drawn in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

from shadowprice.evaluate.scenarios import SCENARIOS, run_scenario
from shadowprice.evaluate.traffic import SimulationResult, plot_simulation, plot_windows

#: Width of the windows the granted share is reported on, per scenario period.
WINDOW = {60.0: 10.0, 3600.0: 300.0}


def row(r: SimulationResult, fcfs: SimulationResult | None, **extra: Any) -> dict[str, Any]:
    """One JSON line: the run's summary, ratios to fcfs on the same arrivals, and ``extra``."""
    s = dict(r.summary)
    if fcfs is not None:
        f = fcfs.summary
        s["utility_vs_fcfs"] = s["utility_per_request"] / max(1e-9, f["utility_per_request"])
        s["accuracy_vs_fcfs"] = s["accuracy_online"] / max(1e-9, f["accuracy_online"])
    s["lockout_ticks"] = s["longest_lockout_behind_s"] / r.tick
    s.update(extra)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names")
    ap.add_argument("--n", type=int, default=20_000, help="requests of a long scenario")
    ap.add_argument("--sources", default="synthetic,real", help="synthetic and/or real")
    ap.add_argument("--upstreams", default="lengths,spend_all", help="lengths and/or spend_all")
    ap.add_argument("--policies", default="paced,reclear,fcfs", help="comma-separated")
    ap.add_argument("--tick", type=float, default=0.25, help="seconds between price updates")
    ap.add_argument("--margin", type=float, default=0.2, help="pace line margin (of budget)")
    ap.add_argument("--seed", type=int, default=7, help="traffic and ration seed")
    ap.add_argument("--noise", type=float, default=0.5, help="synthetic predictor's error")
    ap.add_argument(
        "--per-request", type=int, default=None, help="budget per request (scenarios so set)"
    )
    ap.add_argument("--out", default="docs/figures/online_windows.png", help="window figure")
    ap.add_argument(
        "--out-periods", default="docs/figures/online.png", help="price/spend/accuracy figure"
    )
    args = ap.parse_args()
    unknown = sorted(set(args.scenarios.split(",")) - set(SCENARIOS))
    if unknown:
        ap.error(f"--scenarios: unknown {unknown}; known: {', '.join(SCENARIOS)}")
    return args


def run_group(
    name: str, source: str, upstream: str, args: argparse.Namespace
) -> dict[str, SimulationResult]:
    """Every policy on one scenario's arrivals; prints a JSON line per policy."""
    sc = SCENARIOS[name]
    width = WINDOW.get(sc.period, 10.0)
    runs: dict[str, SimulationResult] = {}
    took: dict[str, float] = {}
    for policy in args.policies.split(","):
        t0 = time.perf_counter()
        runs[policy] = run_scenario(
            name,
            policy,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            upstream=upstream,  # type: ignore[arg-type]
            n=args.n,
            tick=args.tick,
            margin=args.margin,
            seed=args.seed,
            noise=args.noise,
            per_request=args.per_request,
        )
        took[policy] = round(time.perf_counter() - t0, 1)
    for policy, r in runs.items():
        extra: dict[str, Any] = {
            "scenario": name,
            "source": source,
            "upstream": upstream,
            "budget": r.budget,
            "seconds": took[policy],
        }
        if sc.skip == 0:
            w = r.windows(width)
            extra["window_s"] = width
            extra["granted_per_window"] = [
                None if a == 0 else round(float(x), 3)
                for x, a in zip(w["share"], w["arrivals"], strict=True)
            ]
            extra["spent_share"] = [round(float(v) / r.budget, 4) for v in r.spent]
        print(json.dumps(row(r, runs.get("fcfs"), **extra)), flush=True)
    return runs


def main() -> None:
    args = parse()
    print(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                      "n": args.n, "tick": args.tick, "margin": args.margin,
                      "noise": args.noise, "per_request": args.per_request}))  # fmt: skip
    shown: dict[str, dict[str, SimulationResult]] = {}
    periods: list[SimulationResult] = []
    for name in args.scenarios.split(","):
        for source in args.sources.split(","):
            for upstream in args.upstreams.split(","):
                runs = run_group(name, source, upstream, args)
                if source == "synthetic" and upstream == "spend_all" and SCENARIOS[name].skip == 0:
                    shown[name] = runs
                if source == "synthetic" and upstream == "lengths" and "paced" in runs:
                    if name in ("steady", "bursty", "drifting"):
                        periods.append(runs["paced"])
    if shown and args.out:
        widths = {k: WINDOW.get(SCENARIOS[k].period, 10.0) for k in shown}
        print(json.dumps({"figure": str(plot_windows(shown, args.out, widths))}))
    if periods and args.out_periods:
        fig = plot_simulation(periods, args.out_periods, 60.0)
        print(json.dumps({"figure": str(fig)}))


if __name__ == "__main__":
    main()
