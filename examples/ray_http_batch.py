"""A batch on Ray Data: allocate one shared budget across the rows, then send each funded row
to an OpenAI-compatible server capped at its budget (``ray.data.llm``'s HTTP processor).

    .venv/bin/python examples/ray_http_batch.py            # a local fake server, 200 queries
    .venv/bin/python examples/ray_http_batch.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --model my-model                                   # a real server (vLLM, llama.cpp, ...)

Needs ``pip install 'shadowprice[ray]'``. Without ``--url`` it starts shadowprice's fake
model server (``shadowprice.serve.testing``), whose answers run ``LEN:n`` tokens unless the
request's ``max_tokens`` cuts them; each query here asks for a little more than its
threshold, so the budgets decide what is generated.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import numpy as np
import ray
import ray.data
from ray.data.expressions import col
from ray.data.llm import HttpRequestProcessorConfig, build_processor

from shadowprice.integrations.ray import http_preprocess, price_dataset


@contextlib.contextmanager
def fake_server() -> Iterator[str]:
    from shadowprice.serve.testing import ServerThread, fake_upstream

    app, _ = fake_upstream(speed=0)
    with ServerThread(app) as server:
        yield server.url + "/v1/chat/completions"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="chat completions URL (default: a local fake server)")
    ap.add_argument("--model", default="fake", help="model name sent in each request")
    ap.add_argument("--n", type=int, default=200, help="queries")
    ap.add_argument("--per-query", type=int, default=300, help="average budget, tokens")
    args = ap.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rng = np.random.default_rng(0)
    tau = np.round(rng.lognormal(np.log(300), 0.6, args.n))
    rows = [
        {"id": i, "tau": float(t), "question": f"Query {i}. LEN:{int(t) + 100}"}
        for i, t in enumerate(tau)
    ]
    ds = ray.data.from_items(rows, override_num_blocks=4)

    budget = args.n * args.per_query
    priced = price_dataset(ds, budget, granularity=16)
    print(priced.allocation.message)

    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(fake_server())
        processor = build_processor(
            HttpRequestProcessorConfig(url=url, concurrency=1, batch_size=16),
            preprocess=http_preprocess(args.model, temperature=0.6),
            postprocess=lambda row: {
                "id": row["id"],
                "max_tokens": row["max_tokens"],
                "generated": row["http_response"]["usage"]["completion_tokens"],
            },
        )
        funded = priced.dataset.filter(expr=col("funded"))  # abandoned rows are not sent
        done = processor(funded).to_pandas()

    over = done[done["generated"] > done["max_tokens"]]
    print(
        f"{len(done)} of {args.n} queries sent; {int(done['generated'].sum())} tokens "
        f"generated of a budget of {budget} (caps add up to {int(done['max_tokens'].sum())}); "
        f"{len(over)} answers over their cap"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
