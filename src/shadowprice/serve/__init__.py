"""``shadowprice serve``: an OpenAI-compatible gateway that prices live traffic.

- :class:`Gateway` (:mod:`.app`): the ASGI app (Starlette), its ledger, pricer and upstreams;
- :class:`GatewayConfig`, :func:`load_keys` (:mod:`.config`): configuration and client keys;
- :class:`Decider` (:mod:`.decision`): price, reserve, renew, settle, without HTTP;
- :mod:`.inbound`: what a client sent (body, key, class) and the errors it gets back;
- :mod:`.relay`: what is forwarded and how usage is counted (the metered stream);
  :mod:`.upstreams`: balancing, health checks, ejection; :mod:`.transport`: the one httpx
  client to upstreams, over aiohttp's transport; :mod:`.predictor`: text ->
  threshold; :mod:`.metrics`: Prometheus; :mod:`.server`: uvicorn;
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
