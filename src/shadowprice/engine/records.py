"""Typed results: one :class:`QueryRecord` per query, one :class:`RunSummary` per run.

Every result of the package reports the same core quantities under the same names
(:class:`Scored`): ``budget`` (the total), ``accuracy``, ``tokens_spent`` (generated),
``tokens_allotted`` (the sum of caps), ``abandonment`` (the share of queries never sent) and
``within_budget``; and each has one ``summary()``, its JSON. A run's summary, the evaluation's
per-world :class:`~shadowprice.evaluate.simulate.WorldResult` and replay's
:class:`~shadowprice.evaluate.replay.ReplayResult` all do.

The JSON keeps the field names scripts read (a run's ``tokens_used``, ``allocated`` and
``abandoned`` count), and a record or a summary can still be read like that JSON
(``report.summary["tokens_used"]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

__all__ = ["QueryRecord", "RunSummary", "Scored"]


@runtime_checkable
class Scored(Protocol):
    """The core every result shares (see the module docstring)."""

    @property
    def budget(self) -> float:
        """The total budget, tokens."""
        ...

    @property
    def accuracy(self) -> float | None:
        """Share of the queries answered right (None: nothing to grade)."""
        ...

    @property
    def tokens_spent(self) -> float:
        """Tokens generated."""
        ...

    @property
    def tokens_allotted(self) -> float:
        """Tokens reserved: the sum of the caps."""
        ...

    @property
    def abandonment(self) -> float:
        """Share of the queries never sent."""
        ...

    @property
    def within_budget(self) -> bool:
        """Whether the budget held."""
        ...

    def summary(self) -> dict[str, Any]:
        """The JSON of this result."""
        ...


class _ReadsAsJson(Mapping[str, Any]):
    """A typed result that can also be read like its JSON (``result["field"]``)."""

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.summary()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary())

    def __len__(self) -> int:
        return len(self.summary())


#: Statuses of a query's record.
STATUSES = ("done", "error", "abandoned", "fallback")


@dataclass(frozen=True, eq=False)
class QueryRecord(_ReadsAsJson):
    """One query's outcome: one line of ``results.jsonl``.

    Attributes
    ----------
    id : str
    status : {'done', 'error', 'abandoned', 'fallback'}
        ``error`` is retried when the run is re-run; the others are final.
    budget : int
        Its cap (0 for an unfunded query).
    tokens : int
        Every token charged to it (all its attempts, forcing and fallbacks, earlier runs').
    correct : bool or None
        Whether its answer is right (None without a gold answer).
    answer : str or None
    gold : str or None
    reason : str
        Why it failed or was abandoned.
    line : mapping
        The whole JSON line (also ``finish_reason``, ``text``, usage, meta fields, ...).
    """

    id: str
    status: str
    budget: int
    tokens: int
    correct: bool | None
    answer: str | None
    gold: str | None
    reason: str
    line: Mapping[str, Any] = field(repr=False)

    @classmethod
    def of(cls, line: Mapping[str, Any]) -> QueryRecord:
        """The record of a JSON line (one written by a run, or read back from its file)."""
        if isinstance(line, QueryRecord):
            return line
        return cls(
            id=str(line["id"]),
            status=str(line.get("status", "")),
            budget=int(line.get("budget", 0) or 0),
            tokens=int(line.get("tokens", 0) or 0),
            correct=line.get("correct"),
            answer=line.get("answer"),
            gold=line.get("gold"),
            reason=str(line.get("reason", "") or ""),
            line=dict(line),
        )

    def summary(self) -> dict[str, Any]:
        """The JSON line."""
        return dict(self.line)


#: The summary's JSON name of each field whose Python name differs.
_JSON_NAMES = {"tokens_spent": "tokens_used", "tokens_allotted": "allocated"}


@dataclass(eq=False)
class RunSummary(_ReadsAsJson):
    """What a run did, in total (``results.summary.json``; ``run --format json``).

    Attributes
    ----------
    queries, funded, abandoned, fallback, errors, graded, correct : int
        Counts of queries (``abandoned`` includes those given a fallback).
    accuracy : float or None
        Correct over graded queries (abandoned and failed ones count as wrong).
    budget : int
        The run's budget.
    accounting : str
        Always ``spent``: the budget bounds what is generated.
    tokens_spent : int
        Tokens charged (JSON ``tokens_used``), failed attempts and unsettled requests
        included.
    within_budget : bool
    tokens_allotted : int
        The queries' caps summed (JSON ``allocated``).
    prompt_tokens, truncated, forced, forcing_tokens : int
    extra : dict
        What the run adds, in order (settled and unsettled tokens, overrun, resume counts,
        wall time, the live planner's summary, an interruption, ...).
    """

    queries: int
    funded: int
    abandoned: int
    fallback: int
    errors: int
    graded: int
    correct: int
    accuracy: float | None
    budget: int
    accounting: str
    tokens_spent: int
    within_budget: bool
    tokens_allotted: int
    prompt_tokens: int
    truncated: int
    forced: int
    forcing_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def abandonment(self) -> float:
        """Share of the queries abandoned (a fallback included)."""
        return self.abandoned / self.queries if self.queries else 0.0

    def update(self, **values: Any) -> None:
        """Set fields by their JSON names (a name the summary does not have goes to
        :attr:`extra`)."""
        names = {_JSON_NAMES.get(f.name, f.name): f.name for f in fields(self)}
        for key, value in values.items():
            if key in names and key != "extra":
                setattr(self, names[key], value)
            else:
                self.extra[key] = value

    def summary(self) -> dict[str, Any]:
        """The JSON: the counts, then :attr:`extra` in order."""
        out = {
            _JSON_NAMES.get(f.name, f.name): getattr(self, f.name)
            for f in fields(self)
            if f.name != "extra"
        }
        out.update(self.extra)
        return out
