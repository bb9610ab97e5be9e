"""A run's books: every reservation it holds, and every token charged to the query that spent it.

Both engines (fixed caps, :mod:`.run`; the live planner, :mod:`.live`) reserve and settle
through :class:`Books`, so that

- each query's ``tokens`` in the results is everything charged to it: every attempt, failed
  ones included, answer forcing and fallbacks, and what earlier runs of the same journal
  charged it (a failed query retried on resume keeps the bill of its failed attempts); the
  rows' tokens therefore add up to the run's total charged;
- a run that is stopped (SIGTERM, Ctrl-C, a cancelled task) can settle every reservation it
  still holds: a request whose answer was never read is counted as spent in full, as a crash
  would count it (:meth:`Books.settle_open`).

:class:`UnreadableStreak` is the rule that keeps an endpoint that answers garbage from eating
the budget: an answer that cannot be read (or a request cut off after the server took it) is
charged its whole allowance, since the server may have generated and billed it; once the
answers to :data:`UNREADABLE_LIMIT` different queries in a row could not be read, with no
readable answer in between, the run stops sending. With ``concurrency`` C and each failed
query sent at most R + 1 times, at most (UNREADABLE_LIMIT - 1) (R + 1) + C requests reach an
endpoint that only answers garbage: C + 2 for the fixed caps (R = 0), C + 6 for clear-live
(its planner retries a failed query twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..ledger import Ledger, Reservation

__all__ = ["UNREADABLE_LIMIT", "Books", "UnreadableStreak", "charges_by_query"]

#: Queries in a row whose answers could not be read (each charged in full) after which a run
#: stops sending (see the module docstring for what that bounds).
UNREADABLE_LIMIT = 3
#: Tag prefixes of requests made for a query besides its own (the fixed-cap engine's).
_SIDE_REQUESTS = ("force:", "fallback:")


def charges_by_query(by_tag: Mapping[str, int], ids: Iterable[str]) -> Counter[str]:
    """Tokens charged per query id from tokens charged per reservation tag.

    A tag is a query id, or a query id behind ``force:`` / ``fallback:`` (the answer-forcing
    and fallback requests made for that query). Tags of no query in ``ids`` are left out.
    """
    known = set(ids)
    out: Counter[str] = Counter()
    for tag, tokens in by_tag.items():
        query = tag
        if query not in known:
            query = next((tag[len(p) :] for p in _SIDE_REQUESTS if tag.startswith(p)), tag)
        if query in known and tokens:
            out[query] += int(tokens)
    return out


class Books:
    """Reservations of one run, and tokens charged per query.

    Parameters
    ----------
    ledger : Ledger
        Where the tokens are reserved and settled.
    prior : mapping, optional
        ``query id -> tokens`` earlier runs charged (from the journal).

    Attributes
    ----------
    charged : Counter
        ``query id -> tokens`` charged to it, ``prior`` included.
    total : int
        Their sum, kept as they grow (a progress bar reads it after every query).
    open : dict
        ``reservation id -> (query id, reservation)`` of requests not settled yet.
    """

    def __init__(self, ledger: Ledger, prior: Mapping[str, int] | None = None) -> None:
        self.ledger = ledger
        self.charged: Counter[str] = Counter(prior or {})
        self.total = sum(self.charged.values())
        self.open: dict[str, tuple[str, Reservation]] = {}

    async def reserve(self, query: str, tokens: int, tag: str | None = None) -> Reservation | None:
        """Reserve ``tokens`` for a request of ``query`` (None: the ledger has too few)."""
        res = await self.ledger.reserve(tokens, tag=query if tag is None else tag)
        if res is not None:
            self.open[res.id] = (query, res)
        return res

    async def settle(self, res: Reservation, used: int) -> int:
        """Settle ``res`` with the tokens its request used; returns the tokens charged."""
        query, _ = self.open.pop(res.id, (res.tag, res))
        out = await self.ledger.settle(res, used)
        self.charged[query] += out.charged
        self.total += out.charged
        return out.charged

    async def settle_open(self) -> Counter[str]:
        """Settle every open reservation in full (its request's answer was never read);
        returns the tokens so counted per query."""
        counted: Counter[str] = Counter()
        for query, res in list(self.open.values()):
            counted[query] += await self.settle(res, res.tokens)
        return counted


@dataclass
class UnreadableStreak:
    """Counts the queries in a row whose answer was charged without being read (see the
    module docstring). Retries of one query count once, so a single query the endpoint
    cannot answer does not stop the run; a readable answer resets the streak; a failure that
    cost nothing (an HTTP error, a refused connection) leaves it as it is.

    Attributes
    ----------
    limit : int
        Queries in the streak that stop the run.
    queries : set of str
        Queries in the current streak.
    last : str
        The last such failure.
    """

    limit: int = UNREADABLE_LIMIT
    queries: set[str] = field(default_factory=set)
    last: str = ""

    def answered(self) -> None:
        """A readable answer came back."""
        self.queries.clear()

    def failed(self, query: str, error: str, charged: int) -> None:
        """A request of ``query`` failed, charged ``charged`` tokens."""
        if charged > 0:
            self.queries.add(query)
            self.last = error

    @property
    def tripped(self) -> bool:
        """Whether the run should stop sending."""
        return len(self.queries) >= self.limit

    def reason(self) -> str:
        """Why a query was not sent, for its error record."""
        return (
            f"not sent: the endpoint's answers to the last {len(self.queries)} queries in a "
            f"row could not be read and were charged in full (last: {self.last[:200]}); fix "
            f"the endpoint and re-run to send it"
        )
