"""Robustness of CLEAR to noise in the thresholds (the paper's robustness study, extended).

Each query's true threshold tau is replaced by tau * exp(sigma * eps), eps ~ N(0, 1), for
sigma in {0, 0.1, 0.25, 0.5, 1.0}; the policies allocate on the noisy thresholds and are scored
on the truth:

- ``clear``: closed-form CLEAR on GammaSCurve(noisy tau, beta, p) -- beta and p shared
  (the model-level constants; only tau is per query, as in the paper);
- ``clear-uncertain``: CLEAR on the expected curve under log tau ~ N(log noisy tau, sigma)
  (the allocator is told the noise size);
- ``proportional``: caps proportional to the noisy thresholds; ``uniform``: B / N.

Data: the calibrated synthetic Balanced stream (truth known exactly; accuracy = mean true
success probability) and the bundled real traces (tau = shortest correct sample; accuracy by
replay of the recorded samples under the caps).

    .venv/bin/python tools/robustness.py [--n 1500] [--repeats 5] [--out docs/figures]

Writes ``robustness.csv`` and ``robustness.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from shadowprice import allocate
from shadowprice.curves import GammaSCurve, UtilityCurve
from shadowprice.evaluate.replay import replay
from shadowprice.evaluate.streams import make_stream
from shadowprice.fit import SurgeFitter
from shadowprice.predict import expected_curves
from shadowprice.traces import load_traces

SIGMAS = (0.0, 0.1, 0.25, 0.5, 1.0)
POLICIES = ("clear", "clear-uncertain", "proportional", "uniform")


def run_policy(
    policy: str, tau: np.ndarray, sigma: float, beta: float, p: float, budget: int
) -> np.ndarray:
    """Integer caps (N,) of one policy given (noisy) thresholds."""
    if policy == "clear-uncertain" and sigma > 0:
        c: UtilityCurve = expected_curves(tau, sigma, "gamma", beta=beta, p=p)
        return allocate(c, budget, "clear", grid=c.grid).budgets  # type: ignore[attr-defined]
    pol = {"clear-uncertain": "clear"}.get(policy, policy)
    return allocate(GammaSCurve(tau, beta, p), budget, pol).budgets


def study(
    name: str,
    tau: np.ndarray,
    beta: float,
    p: float,
    score: Callable[[np.ndarray], float],
    budgets: list[int],
    repeats: int,
    seed: int,
) -> list[dict[str, object]]:
    rows = []
    n = tau.size
    for b in budgets:
        for s in SIGMAS:
            accs: dict[str, list[float]] = {k: [] for k in POLICIES}
            for r in range(repeats if s > 0 else 1):
                rng = np.random.default_rng([seed, r, int(1000 * s)])
                noisy = tau * np.exp(s * rng.standard_normal(n))
                for pol in POLICIES:
                    accs[pol].append(score(run_policy(pol, noisy, s, beta, p, b * n)))
            for pol, v in accs.items():
                rows.append(
                    {
                        "data": name,
                        "budget": b,
                        "sigma": s,
                        "policy": pol,
                        "accuracy": float(np.mean(v)),
                        "sd_over_repeats": float(np.std(v)),
                    }
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1500, help="queries in the synthetic stream")
    ap.add_argument("--repeats", type=int, default=5, help="noise draws per sigma")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)

    stream = make_stream("balanced", a.n, a.seed)
    t = stream.truth
    rows = study(
        "balanced stream (synthetic)",
        t.tau,
        float(np.median(t.beta)),
        float(np.mean(t.p)),
        stream.accuracy,
        [200, 500, 1000],
        a.repeats,
        a.seed,
    )
    ts = load_traces("qwen25-math-math100")
    f = SurgeFitter().fit(ts)
    rows += study(
        "qwen25-math-math100 (real traces)",
        f.tau_,
        f.beta_,
        float(np.mean(f.p_)),
        lambda caps: replay(caps, ts, n_boot=0).accuracy,
        [200, 300],
        a.repeats,
        a.seed,
    )
    df = pd.DataFrame(rows)
    df.to_csv(a.out / "robustness.csv", index=False, float_format="%.4f")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = df[["data", "budget"]].drop_duplicates().to_numpy().tolist()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), sharey=False)
    for ax, (data, b) in zip(np.atleast_1d(axes), panels, strict=True):
        d = df[(df["data"] == data) & (df["budget"] == b)]
        for pol in POLICIES:
            q = d[d["policy"] == pol]
            ax.plot(q["sigma"], 100 * q["accuracy"], marker="o", label=pol)
        ax.set_title(f"{data.split(' ')[0]}\n{b} tokens/query", fontsize=9)
        ax.set_xlabel("threshold noise sigma (log scale)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out / "robustness.png", dpi=120)
    piv = df.pivot_table(
        index=["data", "budget", "sigma"], columns="policy", values="accuracy"
    ).reindex(columns=list(POLICIES))
    print((100 * piv).round(1).to_string())
    print(f"wrote {a.out / 'robustness.csv'} and {a.out / 'robustness.png'}")


if __name__ == "__main__":
    main()
