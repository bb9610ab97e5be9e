"""Batch files: a priced plan as OpenAI Batch API input, and its output back as graded results.

**Out.** :func:`batch_requests` writes one input line per funded query, the shape the OpenAI
Batch API, ``vllm run-batch`` and LiteLLM's batches read::

    {"custom_id": "<query id>", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": ..., "messages": [...], <the allowance in the provider's fields>}}

The messages are the ones ``run`` sends (:func:`shadowprice.engine.planning.build_items`);
the allowance goes into the fields of a :class:`shadowprice.providers.Preset`. Abandoned
queries get no line, or the direct-answer fallback ``run`` gives them
(:func:`shadowprice.engine.forcing.fallback_messages`) when a fallback allowance is asked for.

**Back.** :func:`read_batch` reads the batch's output lines::

    {"id": ..., "custom_id": ..., "response": {"status_code": 200, "request_id": ...,
     "body": {<chat completion with usage>}}, "error": null}

together with the input file (each request's allowance) and the queries' gold answers, and
returns per-query result rows like ``run``'s (graded with :mod:`shadowprice.engine.grading`)
and a trace set (:mod:`shadowprice.traces.schema`). Tokens are charged by the project's one
counting rule (:mod:`shadowprice.usage`): what cannot be counted is charged in full, never
under-counted. A completion is charged its reported usage (its allowance where usage is
missing or unbelievable, at least its allowance when it stopped on its cap); a non-200 line
by :func:`shadowprice.usage.error_charge` (0 for a refusal before generating); an error line,
a 200 whose body is not a completion and a request with no output line its whole allowance.
A line that is not a batch line, a custom_id the input file or the queries do not
have, or a custom_id seen twice is a :class:`BatchFileError` naming the file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..providers import Preset
from ..traces.schema import TraceSet
from ..usage import completion_problem, count_completion, error_charge
from .forcing import FALLBACK_PROMPT, fallback_messages
from .grading import Grader, get_grader
from .run import PlanItem, summarize

__all__ = [
    "BATCH_URL",
    "EMIT_FORMATS",
    "BatchFileError",
    "BatchReport",
    "BatchRequest",
    "BatchRequests",
    "batch_requests",
    "read_batch",
    "read_batch_requests",
]

#: The endpoint every line targets.
BATCH_URL = "/v1/chat/completions"
#: Batch file formats ``allocate --emit`` writes.
EMIT_FORMATS: tuple[str, ...] = ("openai-batch",)
_CAPS = ("max_tokens", "max_completion_tokens")
#: Why a query was sent as a fallback, or not at all.
FALLBACK_REASON = "abandoned by the allocation"


class BatchFileError(ValueError):
    """A batch input or output file is malformed.

    The message reads ``<file> line <n>: field "<field>" <what is wrong and the fix>``.

    Attributes
    ----------
    path : str
    line : int or None
        1-based line, None when the problem is the whole file.
    field : str or None
    reason : str
        The message without the location.
    """

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = path if line is None else f"{path} line {line}"
        body = f'field "{field}" {message}' if field else message
        super().__init__(f"{where}: {body}")


# -- out: a plan as batch input lines ---------------------------------------------------------


@dataclass(frozen=True)
class BatchRequests:
    """The input lines of a batch, and the queries that got none.

    Attributes
    ----------
    lines : list of dict
        One Batch API input line per request, in plan order.
    abandoned : list of str
        Ids of abandoned queries without a line.
    fallback : list of str
        Ids of abandoned queries sent as a direct-answer fallback.
    tokens : int
        Sum of the requests' allowances: the most the batch can generate.
    """

    lines: list[dict[str, Any]]
    abandoned: list[str]
    fallback: list[str]
    tokens: int

    def jsonl(self) -> str:
        """The lines as JSONL text, one line per request.

        ASCII only (other characters as ``\\uXXXX``): a reader that also breaks lines at
        U+0085, U+2028 or U+2029 (as Python's ``str.splitlines`` does) still sees one request
        per line.
        """
        return "".join(json.dumps(line) + "\n" for line in self.lines)


def batch_requests(
    items: Sequence[PlanItem],
    *,
    model: str,
    preset: Preset | None = None,
    fallback_tokens: int = 0,
    params: Mapping[str, Any] | None = None,
) -> BatchRequests:
    """Batch API input lines for a plan: one per funded query (and per fallback).

    Parameters
    ----------
    items : sequence of PlanItem
        The plan (``budget`` 0: abandoned), e.g. from
        :func:`shadowprice.engine.planning.build_items`.
    model : str
        The model every request names.
    preset : Preset, optional
        How the allowance is written (default ``Preset("generic")``: ``max_tokens`` and
        ``max_completion_tokens``).
    fallback_tokens : int
        Allowance of a direct-answer request for each abandoned query (0: no line).
    params : mapping, optional
        Other body fields of every request (e.g. ``{"temperature": 0}``); the preset's
        fields win over them.

    Raises
    ------
    ValueError
        For an empty model name, a negative fallback allowance or a bad budget.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model must be a non-empty name (--model)")
    if isinstance(fallback_tokens, bool) or not isinstance(fallback_tokens, int):
        raise ValueError(f"fallback tokens must be a whole number, got {fallback_tokens!r}")
    if fallback_tokens < 0:
        raise ValueError(f"fallback tokens must be >= 0, got {fallback_tokens}")
    preset = preset or Preset()
    base = {**dict(params or {}), "model": model}
    lines: list[dict[str, Any]] = []
    abandoned: list[str] = []
    fallback: list[str] = []
    tokens = 0
    for item in items:
        if item.budget > 0:
            messages, allowance = item.messages, int(item.budget)
        elif fallback_tokens > 0:
            messages, allowance = fallback_messages(item.messages), fallback_tokens
            fallback.append(item.id)
        else:
            abandoned.append(item.id)
            continue
        body = preset.apply({**base, "messages": messages}, allowance)
        lines.append({"custom_id": item.id, "method": "POST", "url": BATCH_URL, "body": body})
        tokens += allowance
    return BatchRequests(lines, abandoned, fallback, tokens)


# -- back: batch output lines as graded results and traces ------------------------------------


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch input file, as read back.

    Attributes
    ----------
    custom_id : str
    allowance : int
        The smallest output cap its body sets (what the server may generate at most).
    model : str
    messages : list of dict
    fallback : bool
        A direct-answer fallback for an abandoned query (its last message ends with the
        fallback instruction).
    line : int
        Its line in the input file.
    """

    custom_id: str
    allowance: int
    model: str
    messages: list[dict[str, Any]]
    fallback: bool
    line: int


def _jsonl(path: str | Path) -> Iterable[tuple[int, Any]]:
    """(line number, decoded object) of every non-blank line; BatchFileError on bad JSON."""
    name = str(path)
    with open(path, encoding="utf-8-sig") as fh:
        for n, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise BatchFileError(name, n, None, f"is not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise BatchFileError(
                    name, n, None, f"is a JSON {type(obj).__name__}, not a batch line object"
                )
            yield n, obj


def _request(name: str, n: int, obj: dict[str, Any]) -> BatchRequest:
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise BatchFileError(name, n, "custom_id", f"must be a non-empty string, got {cid!r:.60}")
    if obj.get("method") != "POST" or not isinstance(obj.get("url"), str):
        raise BatchFileError(
            name, n, "method", "and url must be POST and the endpoint path: not a batch input line"
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        raise BatchFileError(name, n, "body", "must be the request object")
    caps = [body[k] for k in _CAPS if k in body]
    if not caps:
        raise BatchFileError(
            name, n, "body.max_tokens", "is missing: every request needs its allowance"
        )
    for k in _CAPS:
        v = body.get(k)
        if k in body and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise BatchFileError(name, n, f"body.{k}", f"must be a positive integer, got {v!r}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BatchFileError(name, n, "body.messages", "must be a non-empty list of messages")
    last = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    fallback = isinstance(last, str) and last.endswith(FALLBACK_PROMPT)
    return BatchRequest(cid, min(caps), str(body.get("model", "")), messages, fallback, n)


def read_batch_requests(path: str | Path) -> dict[str, BatchRequest]:
    """The requests of a batch input file by custom_id, checked.

    Raises
    ------
    BatchFileError
        For a line that is not a batch input line, a request without an output cap, or a
        custom_id used twice; OSError when the file cannot be read.
    """
    out: dict[str, BatchRequest] = {}
    for n, obj in _jsonl(path):
        req = _request(str(path), n, obj)
        if req.custom_id in out:
            first = out[req.custom_id].line
            raise BatchFileError(
                str(path), n, "custom_id", f"{req.custom_id!r} repeats line {first}"
            )
        out[req.custom_id] = req
    if not out:
        raise BatchFileError(str(path), None, None, "no requests (the file is empty)")
    return out


@dataclass(frozen=True)
class _Outcome:
    """One output line: the server's body for a 200, else why the request failed."""

    body: Any
    error: str
    request_id: str | None
    status: int | None = None


def _outcome(name: str, n: int, obj: dict[str, Any]) -> _Outcome:
    response, error = obj.get("response"), obj.get("error")
    if response is None and error is None:
        raise BatchFileError(
            name, n, "response", "is missing: a batch output line has a response or an error"
        )
    if error is not None:
        detail = error.get("message") or error.get("code") if isinstance(error, dict) else error
        return _Outcome(None, f"batch error: {str(detail)[:300]}", None)  # never ran, or unknown
    if not isinstance(response, dict):
        raise BatchFileError(name, n, "response", f"must be an object, got {response!r:.60}")
    status = response.get("status_code")
    if isinstance(status, bool) or not isinstance(status, int):
        raise BatchFileError(
            name, n, "response.status_code", f"must be an HTTP status, got {status!r:.40}"
        )
    rid = response.get("request_id")
    request_id = rid if isinstance(rid, str) else None
    body = response.get("body")
    if status != 200:
        return _Outcome(None, f"HTTP {status}: {json.dumps(body)[:300]}", request_id, status)
    return _Outcome(body, "", request_id, status)


def _read_outputs(
    paths: Sequence[str | Path], requests: Mapping[str, BatchRequest], input_name: str
) -> dict[str, _Outcome]:
    seen: dict[str, str] = {}
    out: dict[str, _Outcome] = {}
    for path in paths:
        name = str(path)
        for n, obj in _jsonl(path):
            cid = obj.get("custom_id")
            if not isinstance(cid, str) or not cid:
                raise BatchFileError(
                    name, n, "custom_id", f"must be a non-empty string, got {cid!r:.60}"
                )
            if cid not in requests:
                raise BatchFileError(
                    name, n, "custom_id", f"{cid!r} is not a request of {input_name}"
                )
            if cid in seen:
                raise BatchFileError(name, n, "custom_id", f"{cid!r} repeats {seen[cid]}")
            seen[cid] = f"{name} line {n}"
            out[cid] = _outcome(name, n, obj)
    return out


@dataclass
class BatchReport:
    """Graded results of a batch.

    Attributes
    ----------
    records : list of dict
        One row per query, in the queries' order, with ``run``'s fields: ``status`` (done,
        error, abandoned, fallback), ``budget`` (the allowance), ``tokens`` (charged),
        ``finish_reason``, ``completion_tokens``, ``prompt_tokens``, ``reasoning_tokens``,
        ``usage_trusted``, ``answer``, ``correct``, ``text``, ``reason`` where it failed.
    traces : TraceSet or None
        One record per query the batch answered (fallbacks and failed requests left out),
        one sample each; None when none was answered.
    summary : dict
        :func:`shadowprice.engine.run.summarize` over the records (``budget``: the sum of
        the allowances asked for), plus ``requests``, ``answered``, ``missing`` (requests with
        no output line) and ``traces``.
    """

    records: list[dict[str, Any]]
    traces: TraceSet | None
    summary: dict[str, Any] = field(default_factory=dict)


def _text(body: dict[str, Any]) -> str:
    """The answer of a completion body (checked by :func:`completion_problem`)."""
    choice = body["choices"][0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else choice.get("text")
    return content if isinstance(content, str) else ""


def _graded(
    req: BatchRequest, got: _Outcome, gold: str | None, grade: Grader
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(result row, trace sample or None) of one request, by the counting rule."""
    base: dict[str, Any] = {"id": req.custom_id, "budget": req.allowance, "gold": gold}
    if req.fallback:
        base.update(budget=0, reason=FALLBACK_REASON)
    error = got.error or (completion_problem(got.body) if got.status == 200 else "")
    if error:
        charged = (
            req.allowance if got.status in (None, 200) else error_charge(got.status, req.allowance)
        )
        failed = {
            "status": "abandoned" if req.fallback else "error",
            "reason": f"{FALLBACK_REASON}; fallback failed: {error}" if req.fallback else error,
            "tokens": charged,
            "usage_trusted": False,
            "answer": None,
            "correct": False if gold is not None else None,
            "request_id": got.request_id,
        }
        return {**base, **failed}, None
    count = count_completion(got.body, req.allowance)
    text = _text(got.body)
    g = grade(text, gold)
    row = {
        **base,
        "status": "fallback" if req.fallback else "done",
        "finish_reason": count.finish_reason,
        "completion_tokens": count.tokens,
        "reasoning_tokens": count.reasoning_tokens,
        "prompt_tokens": count.prompt_tokens,
        "usage_trusted": count.trusted,
        "forced": False,
        "forcing_tokens": 0,
        "tokens": count.tokens,
        "answer": g.answer,
        "correct": g.correct,
        "text": text,
        "request_id": got.request_id,
    }
    if count.problem:
        row["usage_problem"] = count.problem
    if req.fallback:
        return row, None
    sample = {
        "tokens": count.tokens,
        "correct": bool(g.correct),
        "finish_reason": count.finish_reason,
        "extracted": g.answer,
        "reasoning_tokens": count.reasoning_tokens,
        "prompt_tokens": count.prompt_tokens,
        "max_tokens": req.allowance,
        "usage_trusted": count.trusted,
    }
    return row, sample


def read_batch(
    outputs: Sequence[str | Path],
    requests: str | Path,
    ids: Sequence[str],
    questions: Sequence[str | None],
    golds: Sequence[str | None],
    *,
    grader: Grader | str | None = "math",
) -> BatchReport:
    """Graded results and traces of a batch, from its output file(s) and its input file.

    Parameters
    ----------
    outputs : sequence of paths
        The batch's output file(s) (an OpenAI batch's output and error files both count).
    requests : path
        The batch input file (as :func:`batch_requests` wrote it): each request's allowance.
    ids, questions, golds : sequences
        The queries (parallel columns): every query of the plan, funded or not, with its
        question and gold answer (None where unknown).
    grader : Grader or str
        ``"math"``, ``"exact"``, ``"module:attribute"`` or a callable.

    Returns
    -------
    BatchReport

    Raises
    ------
    BatchFileError
        For a malformed line, a custom_id the input or the queries do not have, or one seen
        twice (naming the file, line and field).
    """
    grade = get_grader(grader)
    reqs = read_batch_requests(requests)
    known = set(ids)
    for r in reqs.values():
        if r.custom_id not in known:
            raise BatchFileError(
                str(requests), r.line, "custom_id", f"{r.custom_id!r} is not a query id"
            )
    got = _read_outputs(outputs, reqs, str(requests))
    records: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    for qid, question, gold in zip(ids, questions, golds, strict=True):
        req = reqs.get(qid)
        if req is None:
            records.append(_abandoned(qid, gold))
            continue
        outcome = got.get(qid) or _Outcome(None, "no result line in the batch output", None)
        row, sample = _graded(req, outcome, gold, grade)
        records.append(row)
        if sample is not None:
            traces.append(_trace(qid, question, gold, sample, req.model))
    summary = summarize(records, sum(r.allowance for r in reqs.values())).summary()
    summary.update(
        requests=len(reqs),
        answered=sum(1 for r in records if r["status"] in ("done", "fallback")),
        missing=len(reqs) - len(got),
        traces=len(traces),
    )
    return BatchReport(records, TraceSet(traces) if traces else None, summary)


def _abandoned(qid: str, gold: str | None) -> dict[str, Any]:
    return {
        "id": qid,
        "budget": 0,
        "gold": gold,
        "reason": f"{FALLBACK_REASON} (no request in the batch)",
        "status": "abandoned",
        "tokens": 0,
        "answer": None,
        "correct": False if gold is not None else None,
    }


def _trace(
    qid: str, question: str | None, gold: str | None, sample: dict[str, Any], model: str
) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": qid}
    if question is not None:
        rec["question"] = question
    if gold is not None:
        rec["answer"] = gold
    rec["samples"] = [sample]
    rec["meta"] = {"model": model, "source": "openai-batch"}
    return rec
