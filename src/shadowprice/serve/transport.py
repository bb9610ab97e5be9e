"""The gateway's HTTP client to upstreams: the package's one client stack
(:mod:`shadowprice.engine.transport`), under the names the gateway uses."""

from __future__ import annotations

from ..engine.transport import HttpClient as UpstreamClient
from ..engine.transport import Transport as UpstreamTransport

__all__ = ["UpstreamClient", "UpstreamTransport"]
