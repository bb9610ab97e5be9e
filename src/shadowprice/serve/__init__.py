"""``shadowprice serve``: an OpenAI-compatible gateway that prices live traffic.

- :class:`Gateway` (:mod:`.app`): the ASGI app (Starlette), its ledger, pricer and upstreams;
- :class:`GatewayConfig`, :func:`load_keys` (:mod:`.config`): configuration and client keys;
- :class:`Decider` (:mod:`.decision`): price, reserve, settle, without HTTP;
- :mod:`.relay`: what is forwarded and how usage is counted; :mod:`.upstreams`: balancing,
  health checks, ejection; :mod:`.metrics`: Prometheus; :mod:`.server`: uvicorn;
- :mod:`.testing`: a fake upstream and a load generator; :mod:`.localredis`: a loopback
  redis-server.
"""

from .app import Gateway
from .config import GatewayConfig, KeyTable, Tenant, load_keys
from .decision import Decider, Grant, Refusal

__all__ = [
    "Decider",
    "Gateway",
    "GatewayConfig",
    "Grant",
    "KeyTable",
    "Refusal",
    "Tenant",
    "load_keys",
]
