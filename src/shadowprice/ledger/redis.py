"""One token budget shared by many processes and machines: the ledger in Redis.

Every operation is one Lua script, so it runs atomically on the server and costs one round
trip: two gateway replicas (or two ``run`` workers) that reserve at the same instant can never
both take the last tokens. The semantics are exactly :class:`~shadowprice.ledger.MemoryLedger`'s
(partial grants, periods aligned to the epoch, reservations that lapse after a TTL and return
their tokens, idempotent settling with ``late`` and ``duplicate`` statuses, overruns charged in
full); the shared contract tests run against both.

Layout (every key starts with ``shadowprice:{NAMESPACE}:``; the braces are a Redis hash tag):

- ``p:<period>``: hash ``spent``, ``reserved``, ``overrun`` of one budget period;
- ``open``: hash reservation id -> ``tokens:period``; ``exp``: sorted set id -> expiry time;
- ``l:<period>``: hash reservation id -> tokens of the reservations that lapsed in a period
  and were charged in full (``on_lapse="spend"``), until a late settlement corrects them;
- ``s:<period>``: set of the ids settled in a period (idempotent settling);
- ``lapse``: the namespace's lapse policy (``spend`` or ``release``), set by its first reserve;
- ``price``: the price the processes agreed on for the current tick.

Period hashes and settled sets expire after :data:`PERIODS_KEPT` periods (the same memory the
in-process ledger keeps). Time comes from the Redis server (``TIME``) so replicas with skewed
clocks still agree on period boundaries and expiries; tests may pass their own clock.

Crashes: a reservation whose holder died lapses after its ``ttl`` and is charged in full (or,
with ``on_lapse="release"``, its tokens return; see :mod:`shadowprice.ledger.base`). A
request that outlives its TTL (a long stream) renews it with :meth:`RedisLedger.extend`. Keys
are built inside the scripts, so the ledger needs a single Redis (or a Sentinel-managed
primary), not Redis Cluster. Durability across a Redis restart is Redis's: run it with
``appendonly yes`` and ``appendfsync always`` to lose no settled token (``everysec`` may lose
the last second of bookings, i.e. allow a small overshoot after a crash of Redis itself).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from .base import (
    LedgerError,
    LedgerState,
    OnLapse,
    Reservation,
    Settlement,
    check_on_lapse,
    check_reservation,
    check_tokens,
)

__all__ = ["PERIODS_KEPT", "RedisLedger"]

#: Period hashes and settled-id sets live this many periods (idempotent settling window).
PERIODS_KEPT = 4

#: Expired reservations swept per script call (bounds the script's run time).
_SWEEP = 512

_PRELUDE = """
local prefix = ARGV[1]
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function index(now, period)
  if period <= 0 then return '0' end
  return string.format('%.0f', math.floor(now / period))
end
local function sweep(now)
  local lapsed = redis.call('ZRANGEBYSCORE', prefix .. 'exp', '-inf', now, 'LIMIT', 0, SWEEP)
  for _, id in ipairs(lapsed) do
    redis.call('ZREM', prefix .. 'exp', id)
    local rec = redis.call('HGET', prefix .. 'open', id)
    if rec then
      redis.call('HDEL', prefix .. 'open', id)
      local tokens, period = string.match(rec, '^(%d+):(%-?%d+)$')
      local book = prefix .. 'p:' .. period
      if redis.call('EXISTS', book) == 1 then
        redis.call('HINCRBY', book, 'reserved', -tonumber(tokens))
        if redis.call('GET', prefix .. 'lapse') ~= 'release' then
          redis.call('HINCRBY', book, 'spent', tonumber(tokens))
          redis.call('HINCRBY', book, 'lapsed', tonumber(tokens))
          local held = prefix .. 'l:' .. period
          redis.call('HSET', held, id, tokens)
          if KEEP > 0 then redis.call('EXPIRE', held, KEEP) end
        end
      end
    end
  end
end
local function totals(book)
  local v = redis.call('HMGET', book, 'spent', 'reserved', 'overrun', 'lapsed')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0'),
    tonumber(v[4] or '0')
end
""".replace("SWEEP", str(_SWEEP))

# ARGV: prefix, now|'', period, total, want, least, ttl|'', id, keep, on_lapse
_RESERVE = (
    _PRELUDE
    + """
local policy = redis.call('GET', prefix .. 'lapse')
if not policy then
  redis.call('SET', prefix .. 'lapse', ARGV[10])
elseif policy ~= ARGV[10] then
  return {-1, policy}
end
if KEEP > 0 then redis.call('EXPIRE', prefix .. 'lapse', KEEP) end
local now = clock(ARGV[2])
local period = tonumber(ARGV[3])
sweep(now)
local idx = index(now, period)
local book = prefix .. 'p:' .. idx
local spent, reserved = totals(book)
local grant = math.min(tonumber(ARGV[5]), tonumber(ARGV[4]) - spent - reserved)
if grant < tonumber(ARGV[6]) then
  return {0, idx, tostring(now), tostring(spent), tostring(reserved)}
end
redis.call('HINCRBY', book, 'reserved', grant)
local keep = tonumber(ARGV[9])
if keep > 0 then redis.call('EXPIRE', book, keep) end
local expires = ''
if ARGV[7] ~= '' then
  expires = now + tonumber(ARGV[7])
  redis.call('ZADD', prefix .. 'exp', expires, ARGV[8])
end
redis.call('HSET', prefix .. 'open', ARGV[8], grant .. ':' .. idx)
return {grant, idx, tostring(now), tostring(spent), tostring(reserved + grant), tostring(expires)}
"""
)

# ARGV: prefix, id, period, used, keep, now|''
_SETTLE = (
    _PRELUDE
    + """
sweep(clock(ARGV[6]))
local id, period, used = ARGV[2], ARGV[3], tonumber(ARGV[4])
local settled = prefix .. 's:' .. period
if redis.call('SADD', settled, id) == 0 then return {0, 'duplicate', 0} end
local keep = tonumber(ARGV[5])
if keep > 0 then redis.call('EXPIRE', settled, keep) end
local rec = redis.call('HGET', prefix .. 'open', id)
if rec then
  redis.call('HDEL', prefix .. 'open', id)
  redis.call('ZREM', prefix .. 'exp', id)
end
local book = prefix .. 'p:' .. period
if redis.call('EXISTS', book) == 0 then return {used, 'late', used} end
local held = redis.call('HGET', prefix .. 'l:' .. period, id)
if held then
  redis.call('HDEL', prefix .. 'l:' .. period, id)
  local tokens = tonumber(held)
  local over = math.max(0, used - tokens)
  redis.call('HINCRBY', book, 'spent', used - tokens)
  redis.call('HINCRBY', book, 'lapsed', -tokens)
  if over > 0 then redis.call('HINCRBY', book, 'overrun', over) end
  return {used, 'late', over}
end
if not rec then
  redis.call('HINCRBY', book, 'spent', used)
  redis.call('HINCRBY', book, 'overrun', used)
  return {used, 'late', used}
end
local tokens = tonumber(string.match(rec, '^(%d+):'))
local over = math.max(0, used - tokens)
redis.call('HINCRBY', book, 'reserved', -tokens)
redis.call('HINCRBY', book, 'spent', used)
if over > 0 then redis.call('HINCRBY', book, 'overrun', over) end
return {used, 'settled', over}
"""
)

# ARGV: prefix, now|'', period
_STATE = (
    _PRELUDE
    + """
local now = clock(ARGV[2])
sweep(now)
local idx = index(now, tonumber(ARGV[3]))
local spent, reserved, overrun, lapsed = totals(prefix .. 'p:' .. idx)
return {spent, reserved, overrun, idx, tostring(now), lapsed}
"""
)

# ARGV: prefix, now|'', id, ttl
_EXTEND = (
    _PRELUDE
    + """
local now = clock(ARGV[2])
sweep(now)
if redis.call('HEXISTS', prefix .. 'open', ARGV[3]) == 0 then return '' end
local expires = now + tonumber(ARGV[4])
redis.call('ZADD', prefix .. 'exp', expires, ARGV[3])
return tostring(expires)
"""
)

# ARGV: prefix, value, hold_ms. The first replica to publish within a hold sets the value.
_AGREE = """
local key = ARGV[1] .. 'price'
if redis.call('SET', key, ARGV[2], 'PX', ARGV[3], 'NX') then return ARGV[2] end
return redis.call('GET', key) or ARGV[2]
"""


class RedisLedger:
    """Token budget shared through Redis (see :class:`~shadowprice.ledger.Ledger`).

    Parameters
    ----------
    client : redis.asyncio.Redis
        Connection (pool) to the Redis server holding the ledger.
    total : int
        Budget per period, tokens (>= 0). Every process sharing ``namespace`` must use the
        same total and period.
    period : float, optional
        Budget period in seconds, aligned to the epoch (renews at every multiple of
        ``period``); None: one period for the ledger's whole life.
    namespace : str
        Name of this budget inside Redis (several budgets, e.g. one per tenant, share a server).
    clock : callable, optional
        Wall clock in seconds; default: the Redis server's ``TIME`` (one clock for all
        replicas).
    owns_client : bool
        Close ``client`` in :meth:`aclose`.
    on_lapse : {'spend', 'release'}
        What a reservation that lapses costs (see :mod:`shadowprice.ledger.base`). The first
        process to reserve in ``namespace`` records it in Redis; one that reserves with the
        other policy gets a :class:`~shadowprice.ledger.LedgerError` naming the conflict.

    Examples
    --------
    >>> led = RedisLedger.from_url("redis://127.0.0.1:6379/0", 100_000, period=60)  # doctest: +SKIP
    >>> res = await led.reserve(512, min_tokens=128, ttl=30)  # doctest: +SKIP
    """

    def __init__(
        self,
        client: Any,
        total: int,
        *,
        period: float | None = None,
        namespace: str = "default",
        clock: Callable[[], float] | None = None,
        owns_client: bool = False,
        on_lapse: OnLapse = "spend",
    ) -> None:
        self._total = check_tokens("total", total)
        self.on_lapse = check_on_lapse(on_lapse)
        if period is not None and not (isinstance(period, (int, float)) and period > 0):
            raise LedgerError(f"period must be a positive number of seconds, got {period!r}")
        if not namespace or any(c in namespace for c in "{}: \n"):
            raise LedgerError(
                f"namespace must be non-empty without braces, colons or spaces, got {namespace!r}"
            )
        self.period = None if period is None else float(period)
        self.namespace = namespace
        self._prefix = f"shadowprice:{{{namespace}}}:"
        self._clock = clock
        self._client = client
        self._owns = owns_client
        # Seconds period books and settled ids are kept (0: forever, for period-less ledgers).
        self._keep = 0 if self.period is None else max(60, int(self.period * PERIODS_KEPT) + 1)

        def script(text: str) -> Any:  # the keep is a constant of the scripts
            return client.register_script(text.replace("KEEP", str(self._keep)))

        self._reserve_script = script(_RESERVE)
        self._settle_script = script(_SETTLE)
        self._state_script = script(_STATE)
        self._extend_script = script(_EXTEND)
        self._agree_script = script(_AGREE)
        #: Totals seen by the latest reserve or state call (no extra round trip to read them).
        self.last_state: LedgerState | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        total: int,
        *,
        period: float | None = None,
        namespace: str = "default",
        timeout: float = 1.0,
        clock: Callable[[], float] | None = None,
        connections: int = 64,
        on_lapse: OnLapse = "spend",
    ) -> RedisLedger:
        """Connect to ``redis://[:password@]HOST:PORT/DB`` (or ``rediss://`` for TLS).

        Parameters
        ----------
        url : str
            Redis URL; the database number defaults to 0.
        total, period, namespace, clock, on_lapse : see :class:`RedisLedger`.
        timeout : float
            Seconds to connect, to wait for a free connection and per command; past it an
            operation raises :class:`~shadowprice.ledger.LedgerError` (callers fail closed or
            open on it).
        connections : int
            Connections kept open at most; more concurrent calls wait for one.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise LedgerError(
                f"state URL must look like redis://HOST:PORT/DB, got {_redact(url)!r}"
            )
        if not timeout > 0:
            raise LedgerError(f"timeout must be positive, got {timeout!r}")
        if connections < 1:
            raise LedgerError(f"connections must be >= 1, got {connections!r}")
        import redis.asyncio as aioredis

        # A blocking pool: past ``connections`` concurrent calls, callers wait (up to
        # ``timeout``) for a free connection instead of failing at once, as the default pool
        # does past 100 (a gateway under load has hundreds of requests reserving at once).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            health_check_interval=30,
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(
            client,
            total,
            period=period,
            namespace=namespace,
            clock=clock,
            owns_client=True,
            on_lapse=on_lapse,
        )

    @property
    def total(self) -> int:
        """Budget per period, tokens."""
        return self._total

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    async def _call(self, script: Callable[..., Awaitable[Any]], *args: object) -> Any:
        from redis.exceptions import RedisError

        try:
            return await script(keys=[], args=[self._prefix, *args])
        except RedisError as exc:
            raise LedgerError(f"ledger store unreachable ({type(exc).__name__}: {exc})") from exc
        except OSError as exc:
            raise LedgerError(f"ledger store unreachable ({exc})") from exc

    async def reserve(
        self, tokens: int, *, min_tokens: int | None = None, tag: str = "", ttl: float | None = None
    ) -> Reservation | None:
        """See :meth:`shadowprice.ledger.Ledger.reserve` (one atomic round trip)."""
        want, least = check_reservation(tokens, min_tokens, ttl)
        rid = uuid.uuid4().hex
        out = await self._call(
            self._reserve_script,
            self._now(),
            repr(self.period or 0.0),
            self._total,
            want,
            least,
            "" if ttl is None else repr(float(ttl)),
            rid,
            self._keep,
            self.on_lapse,
        )
        if int(out[0]) < 0:
            raise LedgerError(
                f"the budget {self.namespace!r} in Redis charges lapsed reservations as "
                f"{out[1]!r} but this process was started with on_lapse={self.on_lapse!r}: every "
                "process sharing a budget must use the same (gateway: --release-lapsed)"
            )
        grant, index = int(out[0]), int(out[1])
        self.last_state = LedgerState(self._total, int(out[3]), int(out[4]), 0, index)
        if grant <= 0:
            return None
        return Reservation(
            id=rid,
            tokens=grant,
            period=index,
            tag=tag,
            expires_at=float(out[5]) if out[5] else None,
        )

    async def settle(self, reservation: Reservation, used: int) -> Settlement:
        """See :meth:`shadowprice.ledger.Ledger.settle` (one atomic round trip)."""
        used = check_tokens("used", used)
        out = await self._call(
            self._settle_script,
            reservation.id,
            str(reservation.period),
            used,
            self._keep,
            self._now(),
        )
        return Settlement(int(out[0]), out[1], int(out[2]))

    async def release(self, reservation: Reservation) -> Settlement:
        """See :meth:`shadowprice.ledger.Ledger.release`."""
        return await self.settle(reservation, 0)

    async def extend(self, reservation: Reservation, ttl: float) -> Reservation | None:
        """See :meth:`shadowprice.ledger.Ledger.extend` (one atomic round trip)."""
        if not ttl > 0:
            raise LedgerError(f"ttl must be a positive number of seconds, got {ttl!r}")
        out = await self._call(self._extend_script, self._now(), reservation.id, repr(float(ttl)))
        if not out:
            return None
        return Reservation(
            reservation.id, reservation.tokens, reservation.period, reservation.tag, float(out)
        )

    async def state(self) -> LedgerState:
        """See :meth:`shadowprice.ledger.Ledger.state`."""
        out = await self._call(self._state_script, self._now(), repr(self.period or 0.0))
        s = LedgerState(
            self._total, int(out[0]), int(out[1]), int(out[2]), int(out[3]), int(out[5])
        )
        self.last_state = s
        return s

    async def agree(self, value: float, hold: float) -> float:
        """Publish ``value`` (a price) unless another process published one in the last
        ``hold`` seconds; return the value every process now shares."""
        out = await self._call(self._agree_script, repr(float(value)), max(1, int(hold * 1000)))
        return float(out)

    async def ping(self) -> bool:
        """True when the store answers."""
        try:
            return bool(await self._client.ping())
        except Exception:  # any failure means "not reachable" to a health check
            return False

    async def clear(self) -> None:
        """Delete every key of this namespace (tests and ``--reset`` tooling)."""
        keys = [k async for k in self._client.scan_iter(match=self._prefix + "*")]
        if keys:
            await self._client.delete(*keys)

    async def aclose(self) -> None:
        """Close the connection pool if this ledger opened it."""
        if self._owns:
            await self._client.aclose()

    def __repr__(self) -> str:
        return (
            f"RedisLedger(total={self._total}, period={self.period}, namespace={self.namespace!r})"
        )


def _redact(url: str) -> str:
    """The URL without its password (error messages must not leak it)."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "***")
    return url
