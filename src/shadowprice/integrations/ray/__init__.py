"""Ray Data: allocate a dataset's queries across its blocks, run them with per-row budgets.

``pip install 'shadowprice[ray]'`` (Ray Data). :func:`allocate_dataset` adds ``max_tokens``
and ``funded`` columns to every row, with one clearing price for the whole dataset found
block by block (:mod:`shadowprice.solve.sharded`); :mod:`.llm` turns the rows into the
per-row sampling parameters or request bodies of ``ray.data.llm`` processors;
:class:`RayExecutor` (``run --executor ray``) runs a batch's queries on Ray workers, each
block through the project's own run, sharing one budget in Redis.
"""

from __future__ import annotations

try:
    import ray.data  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "shadowprice.integrations.ray needs Ray Data: pip install 'shadowprice[ray]'"
    ) from exc

from .allocate import PARAMETER_COLUMNS, DatasetAllocation, allocate_dataset, price_dataset
from .executor import RayExecutor
from .llm import chat_payload, http_preprocess, sampling_params, vllm_preprocess

__all__ = [
    "PARAMETER_COLUMNS",
    "DatasetAllocation",
    "RayExecutor",
    "allocate_dataset",
    "chat_payload",
    "http_preprocess",
    "price_dataset",
    "sampling_params",
    "vllm_preprocess",
]
