"""The one result type every allocation policy returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Status codes, in the spirit of ``scipy.optimize.OptimizeResult.status``.
STATUS_OK = 0  #: budget scarce, price found, invariants hold
STATUS_NOT_SCARCE = 1  #: every query got all it can use; price is 0 and tokens are left over
STATUS_INFEASIBLE = 2  #: guaranteed floors alone exceed the budget; nothing allocated


@dataclass(frozen=True)
class Allocation:
    """Token budgets for N queries, with the price that produced them.

    Attributes
    ----------
    budgets : ndarray of int64, shape (N,)
        ``max_tokens`` for each query; 0 means the query is abandoned (not sent).
    price : float
        The clearing shadow price lambda, in utility per token. ``nan`` for policies that have
        no price (uniform, proportional, length); 0 when the budget is not scarce.
    funded : ndarray of bool, shape (N,)
        True where the query receives tokens.
    utility : float
        Total expected utility of the allocation under the curves it was computed on.
    budget : int
        The total token budget B.
    policy : str
        Name of the policy that produced the allocation.
    status : int
        0 ok, 1 not scarce, 2 infeasible (see module constants).
    message : str
        Human-readable account of what the solver did.
    samples : ndarray of int64, shape (N,), optional
        Parallel samples per query when the policy chose over (samples x length) menus;
        budgets are then the per-sample ``max_tokens`` and cost is ``samples * budgets``.
    info : dict
        Solver diagnostics (iterations, grid size, leftover hand-out, ...).
    """

    budgets: NDArray[np.int64]
    price: float
    funded: NDArray[np.bool_]
    utility: float
    budget: int
    policy: str
    status: int = STATUS_OK
    message: str = ""
    samples: NDArray[np.int64] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of queries N."""
        return int(self.budgets.size)

    @property
    def abandoned(self) -> NDArray[np.bool_]:
        """Queries given no tokens, shape (N,): the complement of ``funded``."""
        return ~self.funded

    @property
    def cost(self) -> NDArray[np.int64]:
        """Tokens each query may consume: budgets times parallel samples."""
        if self.samples is None:
            return self.budgets
        return self.budgets * self.samples

    @property
    def spent(self) -> int:
        """Tokens committed, at most :attr:`budget`: the caps, or for an allocation planned
        on expected spend (``info["accounting"] == "spent"``) what they should generate."""
        if self.info.get("accounting") == "spent":
            return round(float(self.info["expected_spend"]))
        return int(self.cost.sum())

    @property
    def leftover(self) -> int:
        """Tokens of the budget that no query was given (expected to be left unspent, for
        an allocation planned on expected spend)."""
        return int(self.budget - self.spent)

    @property
    def abandonment_rate(self) -> float:
        """Share of queries abandoned, in [0, 1] (0 for no queries)."""
        return float(np.mean(~self.funded)) if self.n else 0.0

    @property
    def success(self) -> bool:
        """True unless the limits could not be met (status ``ok`` or ``not_scarce``)."""
        return self.status in (STATUS_OK, STATUS_NOT_SCARCE)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no per-query arrays).

        Returns
        -------
        dict
            ``policy``, ``queries``, ``budget``, ``price`` (None where there is none),
            ``funded``, ``abandoned``, ``expected_utility``, ``spent``, ``leftover``,
            ``status``, ``message``.
        """
        return {
            "policy": self.policy,
            "queries": self.n,
            "budget": self.budget,
            "price": None if np.isnan(self.price) else float(self.price),
            "funded": int(self.funded.sum()),
            "abandoned": int((~self.funded).sum()),
            "expected_utility": float(self.utility),
            "spent": self.spent,
            "leftover": self.leftover,
            "status": self.status,
            "message": self.message,
        }

    def __repr__(self) -> str:
        s = self.summary()
        price = "none" if s["price"] is None else f"{s['price']:.6g}"
        return (
            f"Allocation(policy={self.policy!r}, n={self.n}, budget={self.budget}, "
            f"price={price}, funded={s['funded']}, utility={self.utility:.6g}, "
            f"leftover={self.leftover}, status={self.status})"
        )


def infeasible(n: int, budget: int, policy: str, message: str) -> Allocation:
    """The result when no allocation satisfies the limits: nothing allocated, no price.

    Parameters
    ----------
    n : int
        Number of queries.
    budget : int
        Total tokens B.
    policy : str
        The policy that was asked.
    message : str
        Why, and how to fix it (prefixed with ``"infeasible: "``).

    Returns
    -------
    Allocation
        All budgets 0, price NaN, status ``infeasible``.
    """
    return Allocation(
        budgets=np.zeros(n, dtype=np.int64),
        price=float("nan"),
        funded=np.zeros(n, dtype=bool),
        utility=0.0,
        budget=budget,
        policy=policy,
        status=STATUS_INFEASIBLE,
        message=f"infeasible: {message}",
    )


def floors_exceed_budget(n: int, committed: int, budget: int, policy: str) -> Allocation:
    """The infeasible result when the protected queries' floors alone exceed the budget.

    Parameters
    ----------
    n : int
        Number of queries.
    committed : int
        Tokens the protected queries need at their floors.
    budget : int
        Total tokens B.
    policy : str
        The policy that was asked.

    Returns
    -------
    Allocation
        See :func:`infeasible`; the message says to raise the budget or lower the floors.
    """
    return infeasible(
        n,
        budget,
        policy,
        f"protected queries need {committed} tokens at their "
        f"floors but the budget is {budget}; raise the budget or lower the floors",
    )
