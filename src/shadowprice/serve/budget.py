"""A replica's budget machinery, built from its settings: ledgers, price, decision core, decider.

The gateway (:class:`~shadowprice.serve.app.Gateway`) and the LiteLLM plugin
(:mod:`shadowprice.integrations.litellm`) build the same machinery from the same settings, so a
LiteLLM proxy and ``serve`` replicas naming one ``state`` share one budget and one price.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..ledger import Ledger, MemoryLedger, OnLapse
from ..online import DecisionCore, PacedPricer, PopulationPrior, SurgeShape
from .config import KeyTable
from .decision import Decider

__all__ = ["BudgetSettings", "build_decider", "every"]


class BudgetSettings(Protocol):
    """The settings the budget machinery reads (:class:`~.config.GatewayConfig` has them all;
    see it for their meaning)."""

    budget: int
    period: float
    state: str | None
    namespace: str
    predictor: str | None
    alpha: float
    beta: float
    window: int
    tick: float
    pace_margin: float
    min_tokens: int
    fallback_tokens: int
    keys: KeyTable | None
    ttl: float
    release_lapsed: bool
    fail_open: bool

    @property
    def floor_tokens(self) -> int: ...

    @property
    def float_tokens(self) -> int: ...


def make_ledger(c: BudgetSettings, total: int, namespace: str) -> Ledger:
    """One budget of ``total`` tokens per period: in Redis under ``namespace`` when ``c.state``
    names a store, else in this process."""
    on_lapse: OnLapse = "release" if c.release_lapsed else "spend"
    if c.state:
        from ..ledger.redis import RedisLedger

        return RedisLedger.from_url(
            c.state, total, period=c.period, namespace=namespace, on_lapse=on_lapse
        )
    return MemoryLedger(total, period=c.period, on_lapse=on_lapse)


def build_decider(c: BudgetSettings, *, ledger: Ledger | None = None) -> Decider:
    """The decider of one replica: the shared budget (less the floor share) in ``ledger`` or
    a new one, the floor share, the tenants' own budgets, a paced price.

    Parameters
    ----------
    c : BudgetSettings
    ledger : Ledger, optional
        The shared budget to use instead of making one (tests, embedding); its total should be
        the budget less the floor share.
    """
    shared = c.budget - c.floor_tokens
    shape = SurgeShape(c.alpha, c.beta)
    # Without a text predictor the prior learns the population's threshold scale.
    prior = PopulationPrior(short_excess=shape.short_excess, learn_scale=c.predictor is None)
    pricer = PacedPricer(
        shared,
        c.period,
        shape,
        window=c.window,
        min_tokens=c.min_tokens,
        prior=prior,
        margin=c.pace_margin,
    )
    core = DecisionCore(pricer, fallback_tokens=c.fallback_tokens, tick=c.tick)
    tenants = c.keys.tenants if c.keys is not None else []
    return Decider(
        core,
        ledger if ledger is not None else make_ledger(c, shared, c.namespace),
        floor_ledger=make_ledger(c, c.floor_tokens, f"{c.namespace}.floor")
        if c.floor_tokens
        else None,
        tenant_ledgers={
            t.name: make_ledger(c, t.budget, f"{c.namespace}.tenant.{t.name}")
            for t in tenants
            if t.budget is not None
        },
        ttl=c.ttl,
        fail_open=c.fail_open and c.state is not None,
        fail_open_budget=c.float_tokens,
    )


async def every(step: Callable[[], Awaitable[Any]], seconds: float, log: logging.Logger) -> None:
    """Run ``step`` every ``seconds`` until cancelled (a replica's price and renewal loops, in
    the gateway and the LiteLLM plugin alike); a failing step is logged on ``log``, not fatal
    (a dead price loop would freeze the price).

    A cancellation that arrives while ``step`` waits on a timeout of its own can be swallowed
    inside the library that waits (the Redis client turns it into a timeout error): the task
    is still marked as being cancelled, so it stops then, instead of looping on for ever and
    holding up the shutdown.
    """
    task = asyncio.current_task()
    while True:
        try:
            await step()
        except Exception:
            log.exception("background step %s failed", getattr(step, "__name__", step))
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        await asyncio.sleep(seconds)
