"""The gateway's configuration, validated once where it is built, and its API-key table."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..providers import Preset

__all__ = ["GatewayConfig", "KeyTable", "Tenant", "load_keys"]

Balance = Literal["round-robin", "least-busy"]
TokenParam = Literal["both", "max_tokens", "max_completion_tokens"]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option and the fix."""


@dataclass(frozen=True)
class Tenant:
    """Who a client key belongs to.

    Attributes
    ----------
    name : str
        Tenant name (metrics label; never the key).
    budget : int or None
        The tenant's own tokens per period (on top of the gateway's budget); None: no own cap.
    floor : int
        Guaranteed tokens of each request (0: none); a tenant with a floor is never priced out.
    classes : frozenset of str
        Priority classes the tenant may select with the ``x-shadowprice-class`` header.
    metrics : bool
        The key may read ``/metrics`` on the gateway's own listener (an operator's key).
    """

    name: str
    budget: int | None = None
    floor: int = 0
    classes: frozenset[str] = frozenset()
    metrics: bool = False


class KeyTable:
    """Client API keys, stored as SHA-256 hashes, looked up in constant time.

    Parameters
    ----------
    entries : list of (bytes, Tenant)
        (SHA-256 digest of the key, tenant) pairs.
    """

    def __init__(self, entries: list[tuple[bytes, Tenant]]) -> None:
        if not entries:
            raise ConfigError("--keys: the key file lists no keys")
        self._entries = entries

    @property
    def tenants(self) -> list[Tenant]:
        return [t for _, t in self._entries]

    def lookup(self, key: str) -> Tenant | None:
        """The tenant of ``key`` or None. Every entry is compared (no early exit), each with
        :func:`hmac.compare_digest`, so the time taken says nothing about which key matched."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found: Tenant | None = None
        for stored, tenant in self._entries:
            if hmac.compare_digest(stored, digest):
                found = tenant
        return found


def load_keys(path: str | Path) -> KeyTable:
    """Read a key file: JSON Lines, one object per key.

    Each line: ``{"sha256": "<hex digest of the key>", "tenant": "acme", "budget": 50000,
    "floor": 256, "classes": ["interactive"], "metrics": false}``; only ``sha256`` and
    ``tenant`` are required (``metrics: true`` lets the key read ``/metrics``).
    Plain keys are never stored (``printf %s "$KEY" | sha256sum`` makes the digest).

    Raises
    ------
    ConfigError
        Naming the file, line and field of the first bad entry.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--keys {p}: cannot read ({exc.strerror})") from exc
    entries: list[tuple[bytes, Tenant]] = []
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            entries.append(_key_entry(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--keys {p}:{no}: not JSON ({exc.msg})") from exc
        except ConfigError as exc:
            raise ConfigError(f"--keys {p}:{no}: {exc}") from exc
    return KeyTable(entries)


def _key_entry(obj: Any) -> tuple[bytes, Tenant]:
    if not isinstance(obj, dict):
        raise ConfigError("each line must be a JSON object")
    digest = obj.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ConfigError("field 'sha256' must be the 64-hex-digit SHA-256 of the key")
    try:
        raw = bytes.fromhex(digest)
    except ValueError as exc:
        raise ConfigError("field 'sha256' is not hexadecimal") from exc
    name = obj.get("tenant")
    if not isinstance(name, str) or not name:
        raise ConfigError("field 'tenant' must be a non-empty string")
    budget = obj.get("budget")
    if budget is not None and (not isinstance(budget, int) or budget <= 0):
        raise ConfigError("field 'budget' must be a positive integer of tokens per period")
    floor = obj.get("floor", 0)
    if not isinstance(floor, int) or floor < 0:
        raise ConfigError("field 'floor' must be a non-negative integer of tokens")
    classes = obj.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ConfigError("field 'classes' must be a list of class names")
    metrics = obj.get("metrics", False)
    if not isinstance(metrics, bool):
        raise ConfigError("field 'metrics' must be true or false")
    return raw, Tenant(name, budget, floor, frozenset(classes), metrics)


class BudgetShares:
    """The parts of a period's budget its settings set aside: what the gateway's settings and
    the LiteLLM plugin's derive alike (each defines ``budget``, ``fail_open_budget`` and
    ``floor_share``)."""

    budget: int
    fail_open_budget: int | None
    floor_share: float

    @property
    def float_tokens(self) -> int:
        """Tokens each replica holds for an outage when it fails open."""
        if self.fail_open_budget is not None:
            return self.fail_open_budget
        return max(1, self.budget // 100)

    @property
    def floor_tokens(self) -> int:
        """Tokens of each period kept for requests with a floor."""
        return int(self.budget * self.floor_share)


@dataclass
class GatewayConfig(BudgetShares):
    """Everything ``shadowprice serve`` is told (see the README's serving section).

    Attributes
    ----------
    upstreams : list of str
        Base URLs of OpenAI-compatible servers (``http://host:port`` or ``.../v1``); fixed
        here, no request can choose where the gateway connects.
    budget : int
        Completion tokens per period (all replicas together with a shared state).
    period : float
        Budget period, seconds. Periods are aligned to the Unix epoch (a 3600 s budget renews
        on the hour, UTC), so every replica and every restart agrees on the boundaries.
    state : str, optional
        ``redis://HOST:PORT/DB`` to share the ledger and the price between replicas; None:
        in-process.
    namespace : str
        Name of the budget inside Redis.
    predictor : str, optional
        Threshold predictor directory or ``default`` (bundled); None with ``route_tau`` set
        uses that fixed threshold for every request.
    route_tau : float, optional
        Threshold (tokens) of every request when no predictor is used; the population prior
        then learns its scale from observed lengths.
    alpha, beta : float
        Shape of the predicted curves (the paper's shifted surge).
    window : int
        Requests the price forecast looks back on.
    tick : float
        Seconds between price updates.
    pace_margin : float
        Share of the budget spending may run ahead of the period's pace line, in [0, 1]
        (see :mod:`shadowprice.online.pace`): 0 paces strictly, 1 lets a burst take the whole
        budget.
    min_tokens : int
        Smallest allowance sent.
    max_tokens_ceiling : int
        Client ``max_tokens`` above this are clamped to it; requests without one get it.
    fallback_tokens : int
        Priced-out requests get this small allowance instead of a 429 (0: off).
    classes : dict of str to int
        Priority classes selectable with the ``x-shadowprice-class`` header -> floor tokens.
    floor_share : float
        Share of each period's budget kept for requests with a floor (a class or a tenant
        floor), in [0, 1): they draw on it first and on the rest when it is spent, other
        requests only on the rest. 0: floors are never priced out but get nothing once the
        budget is spent.
    keys : KeyTable, optional
        Client keys; None: no authentication.
    upstream_key : str, optional
        Bearer token sent upstream (from the environment, never from clients).
    provider : str, optional
        The upstreams' API (one of :data:`shadowprice.providers.PROVIDERS`): the allowance is
        sent in its fields, split into a thinking cap and an answer reserve. None: the generic
        per-field options below.
    reserve : int, optional
        Tokens of each allowance kept to answer after a capped thought (default: the
        provider's rule, :data:`shadowprice.providers.DEFAULT_RESERVE`).
    token_param : {'both', 'max_tokens', 'max_completion_tokens'}
        Which allowance fields are sent upstream (generic).
    thinking_field : str, optional
        Also send the allowance in this field (generic; vLLM: ``thinking_token_budget``).
    effort_levels : tuple of int, optional
        (low, medium) allowance limits mapping to ``reasoning_effort`` low / medium / high.
    balance : {'round-robin', 'least-busy'}
    health_interval : float
        Seconds between upstream health checks.
    eject_after : int
        Consecutive failures that take an upstream out of rotation until a check succeeds.
    upstream_timeout : float
        Seconds an upstream may take to answer (and between streamed chunks).
    max_body : int
        Largest request body accepted, bytes (413 beyond).
    max_upstream_body : int
        Largest upstream answer (or stream event) relayed, bytes; past it the request is a
        502, charged its whole allowance.
    ttl : float
        Seconds a reservation lives without renewal; running requests renew theirs, so only
        those of a request that ended without settling (or of a dead replica) lapse.
    release_lapsed : bool
        A lapsed reservation returns its tokens to the pool instead of being charged in full
        (the default: its server may have generated every token). Allows overspend.
    fail_open : bool
        Redis unreachable: serve from the float this replica holds in Redis for outages (see
        :mod:`shadowprice.serve.decision`) instead of answering 503.
    fail_open_budget : int, optional
        Tokens of that float, held each period (default: 1 % of ``budget``); held floats are
        not available to ordinary requests.
    metrics_port : int, optional
        Port of a separate listener serving only ``/metrics`` and ``/healthz`` without a key
        (0: any free port); None: ``/metrics`` on the main listener (with keys, only for a key
        with ``"metrics": true``).
    metrics_host : str
        Address of that listener.
    """

    upstreams: list[str]
    budget: int
    period: float
    state: str | None = None
    namespace: str = "default"
    predictor: str | None = "default"
    route_tau: float | None = None
    alpha: float = 1.5
    beta: float = 0.005
    window: int = 1024
    tick: float = 0.25
    pace_margin: float = 0.2
    min_tokens: int = 16
    max_tokens_ceiling: int = 32768
    fallback_tokens: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    floor_share: float = 0.0
    keys: KeyTable | None = None
    upstream_key: str | None = None
    provider: str | None = None
    reserve: int | None = None
    token_param: TokenParam = "both"
    thinking_field: str | None = None
    effort_levels: tuple[int, int] | None = None
    balance: Balance = "least-busy"
    health_interval: float = 5.0
    eject_after: int = 3
    upstream_timeout: float = 600.0
    max_body: int = 1 << 20
    max_upstream_body: int = 1 << 26
    ttl: float = 120.0
    release_lapsed: bool = False
    fail_open: bool = False
    fail_open_budget: int | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self._check_upstreams()
        self._check_amounts()
        self._check_choices()

    def _check_upstreams(self) -> None:
        if not self.upstreams:
            raise ConfigError("--upstream: give at least one upstream URL")
        for url in self.upstreams:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"--upstream {url!r}: must be an http(s)://HOST[:PORT] URL")

    def _check_amounts(self) -> None:
        _positive_int("--budget", self.budget)
        _positive("--period", self.period)
        _positive("--tick", self.tick)
        _positive("--ttl", self.ttl)
        _positive("--upstream-timeout", self.upstream_timeout)
        _positive_int("--max-tokens-ceiling", self.max_tokens_ceiling)
        _positive_int("--max-body", self.max_body)
        _positive_int("--max-upstream-body", self.max_upstream_body)
        _positive_int("--min-tokens", self.min_tokens)
        if self.fail_open_budget is not None:
            _positive_int("--fail-open-budget", self.fail_open_budget)
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"--metrics-port must be in 0..65535, got {self.metrics_port}")
        if self.route_tau is not None:
            _positive("--route-tau", self.route_tau)
        if self.fallback_tokens < 0:
            raise ConfigError("--fallback-tokens must be >= 0")
        if not (isinstance(self.pace_margin, (int, float)) and 0 <= self.pace_margin <= 1):
            raise ConfigError(f"--pace-margin must be in [0, 1], got {self.pace_margin!r}")
        if not (isinstance(self.floor_share, (int, float)) and 0 <= self.floor_share < 1):
            raise ConfigError(f"--floor-share must be in [0, 1), got {self.floor_share!r}")
        if self.floor_share > 0 and self.floor_tokens == 0:
            raise ConfigError("--floor-share is larger than 0 but rounds to 0 tokens of --budget")
        for name, floor in self.classes.items():
            if not name or floor < 0:
                raise ConfigError(f"--class {name}={floor}: need NAME=FLOOR with FLOOR >= 0")

    def _check_choices(self) -> None:
        if self.state is not None and not self.state.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(f"--state must be a redis://HOST:PORT/DB URL, got {self.state!r}")
        if self.predictor is None and self.route_tau is None:
            raise ConfigError("give --predictor PATH|default or a fixed --route-tau TOKENS")
        if self.balance not in ("round-robin", "least-busy"):
            raise ConfigError("--balance must be round-robin or least-busy")
        if self.token_param not in ("both", "max_tokens", "max_completion_tokens"):
            raise ConfigError("--token-param must be both, max_tokens or max_completion_tokens")
        if self.effort_levels is not None and not 0 < self.effort_levels[0] < self.effort_levels[1]:
            raise ConfigError("--effort-levels must be two increasing token counts LOW,MEDIUM")
        self.preset()

    def preset(self) -> Preset:
        """The provider preset these settings name (how an allowance is written into a
        request); ConfigError naming ``--provider`` when its options do not fit."""
        from ..providers import make_preset

        try:
            return make_preset(
                self.provider,
                thinking_field=self.thinking_field,
                effort_levels=self.effort_levels,
                token_param=self.token_param,
                reserve=self.reserve,
            )
        except ValueError as exc:
            raise ConfigError(f"--provider {self.provider}: {exc}") from exc


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
