"""Prometheus metrics of one gateway (own registry: several gateways may share a process).

Under ``serve --workers`` (``PROMETHEUS_MULTIPROC_DIR`` set) the values live in files shared by
the worker processes and :meth:`Metrics.render` aggregates them: counters add up, the ledger's
gauges show the latest value any live worker saw.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """The gateway's metrics, names prefixed ``shadowprice_``.

    - ``price``: the shadow price in force (utility per token);
    - ``budget_tokens``, ``spent_tokens``, ``reserved_tokens``: the current period's ledger
      totals (all replicas when the state is shared), ``period``: its index;
    - ``requests_total{outcome}``: granted, floor, fallback, priced_out, budget_exhausted,
      failed (upstream error), rejected (bad input or key), unavailable (ledger store down);
    - ``tokens_settled_total``, ``tokens_allowed_total``: completion tokens charged and granted;
    - ``upstream_latency_seconds{upstream}``: time to the response headers;
    - ``upstream_healthy{upstream}``: 1 while in rotation.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        latest: Final = "livemostrecent"  # how worker processes' gauges combine (else unused)
        self.price = Gauge(
            "shadowprice_price", "Shadow price in force", registry=r, multiprocess_mode=latest
        )
        self.budget = Gauge(
            "shadowprice_budget_tokens", "Tokens per period", registry=r, multiprocess_mode="max"
        )
        self.spent = Gauge(
            "shadowprice_spent_tokens",
            "Tokens settled this period",
            registry=r,
            multiprocess_mode=latest,
        )
        self.reserved = Gauge(
            "shadowprice_reserved_tokens",
            "Tokens held by open reservations",
            registry=r,
            multiprocess_mode=latest,
        )
        self.period = Gauge(
            "shadowprice_period",
            "Index of the current period",
            registry=r,
            multiprocess_mode=latest,
        )
        self.requests = Counter(
            "shadowprice_requests", "Requests by outcome", ["outcome"], registry=r
        )
        self.settled = Counter("shadowprice_tokens_settled", "Tokens charged", registry=r)
        self.allowed = Counter("shadowprice_tokens_allowed", "Tokens granted", registry=r)
        self.latency = Histogram(
            "shadowprice_upstream_latency_seconds",
            "Upstream time to response headers",
            ["upstream"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.healthy = Gauge(
            "shadowprice_upstream_healthy",
            "Upstream in rotation",
            ["upstream"],
            registry=r,
            multiprocess_mode=latest,
        )

    def render(self) -> bytes:
        """Prometheus text exposition (of every worker process under ``serve --workers``)."""
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not folder:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
        return generate_latest(registry)
