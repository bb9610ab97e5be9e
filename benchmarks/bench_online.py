"""Online pricing on simulated traffic vs hindsight batch CLEAR (10^5 requests per mix).

    .venv/bin/python benchmarks/bench_online.py [--n 100000] [--noise 0.5] [--per-request 300]
        [--sources synthetic,real] [--mixes steady,bursty,drifting] [--out docs/figures/online.png]

Prints one JSON line per (source, mix, policy) with the summary of
:func:`shadowprice.evaluate.traffic.simulate` and writes the price / spend / accuracy figure.
Budget: 300 tokens per request on average (25 requests/s, 60 s periods), a scarce regime.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from shadowprice.evaluate.traffic import MIXES, make_traffic, plot_simulation, simulate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=25.0)
    ap.add_argument("--per-request", type=int, default=300)
    ap.add_argument("--noise", type=float, default=0.5, help="synthetic predictor's error")
    ap.add_argument("--sources", default="synthetic,real")
    ap.add_argument("--mixes", default=",".join(MIXES))
    ap.add_argument("--policies", default="reclear,dual,fcfs")
    ap.add_argument("--out", default="docs/figures/online.png")
    args = ap.parse_args()
    period = 60.0
    budget = int(args.rate * period * args.per_request)
    print(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                      "n": args.n, "budget_per_period": budget, "period_s": period}))  # fmt: skip
    shown = []
    for source in args.sources.split(","):
        for mix in args.mixes.split(","):
            traffic = make_traffic(
                mix,
                args.n,
                rate=args.rate,
                source=source,
                noise=args.noise,
                seed=7,
            )
            for policy in args.policies.split(","):
                t0 = time.perf_counter()
                r = simulate(traffic, budget, period, policy=policy)
                row = dict(
                    r.summary,
                    source=source,
                    noise=args.noise,
                    per_request=args.per_request,
                    seconds=round(time.perf_counter() - t0, 1),
                )
                print(
                    json.dumps(
                        {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                    ),
                    flush=True,
                )
                if source == "synthetic" and policy == "reclear":
                    shown.append(r)
    if shown and args.out:
        print(json.dumps({"figure": str(plot_simulation(shown, args.out, period))}))


if __name__ == "__main__":
    main()
