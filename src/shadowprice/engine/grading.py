"""Answer extraction and grading: ``\\boxed{}``, "Answer:", last number; math-verify checks.

Graders are pluggable: anything with ``__call__(text, gold) -> Grade`` works (see
:class:`Grader`); :func:`get_grader` also loads ``module:attribute`` specs.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Grade:
    """The answer found in a response and whether it matches the gold answer."""

    answer: str | None
    correct: bool | None  # None when there is no gold answer to compare with


@runtime_checkable
class Grader(Protocol):
    """Turns a model response and a gold answer into a :class:`Grade`."""

    def __call__(self, text: str, gold: str | None) -> Grade: ...


_ANSWER_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*\**\s*([^\n]+)", flags=re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unclosed: truncated mid-answer


def last_number(text: str) -> str | None:
    """The last number in ``text``, thousands separators removed."""
    found = _NUMBER_RE.findall(text)
    return found[-1].replace(",", "") if found else None


def extract_answer(text: str) -> str | None:
    """Best-effort final answer: last ``\\boxed{}``, else "Answer: ...", else last number."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    matches = _ANSWER_RE.findall(text)
    if matches:
        tail = matches[-1].strip().rstrip(".").strip("*$ ")
        if tail:
            return tail
    return last_number(text)


def gold_answer(gold: str) -> str:
    """Normalise a gold answer: GSM8K solutions keep only what follows ``####``."""
    if "####" in gold:
        gold = gold.rsplit("####", 1)[1]
    return gold.strip()


def _as_latex(answer: str) -> str:
    answer = answer.strip()
    return answer if answer.startswith("$") else f"${answer}$"


def _plain_number(s: str) -> float | None:
    s = s.strip().strip("$").replace(",", "").rstrip(".")
    s = re.sub(r"^\\?\$|\\%$|%$", "", s).strip()
    try:
        return float(s)
    except ValueError:
        return None


class MathGrader:
    """Extracts the final answer and checks it against the gold with math-verify."""

    def __init__(self, timeout_seconds: int | None = 5) -> None:
        self.timeout_seconds = timeout_seconds

    def __call__(self, text: str, gold: str | None) -> Grade:
        answer = extract_answer(text)
        if gold is None or str(gold).strip() == "":
            return Grade(answer, None)
        if answer is None:
            return Grade(None, False)
        g = gold_answer(str(gold))
        # Cheap exact numeric check first: most GSM8K answers are plain numbers.
        a_num, g_num = _plain_number(answer), _plain_number(g)
        if a_num is not None and g_num is not None:
            return Grade(answer, abs(a_num - g_num) <= 1e-6 * max(1.0, abs(g_num)))
        return Grade(answer, self._verify(answer, g))

    def _verify(self, answer: str, gold: str) -> bool:
        import threading

        from math_verify import parse, verify

        # math-verify's timeouts use signals, which only work in the main thread.
        in_main = threading.current_thread() is threading.main_thread()
        timeout = self.timeout_seconds if in_main else None
        try:
            parsed_gold = parse(_as_latex(gold), parsing_timeout=timeout)
            parsed_answer = parse(_as_latex(answer), parsing_timeout=timeout)
            if not parsed_gold or not parsed_answer:
                return answer.strip() == gold.strip()
            return bool(verify(parsed_gold, parsed_answer, timeout_seconds=timeout))
        except Exception:
            return answer.strip() == gold.strip()


class ExactGrader:
    """Case- and whitespace-insensitive string match of the extracted answer."""

    def __call__(self, text: str, gold: str | None) -> Grade:
        answer = extract_answer(text)
        if gold is None:
            return Grade(answer, None)
        if answer is None:
            return Grade(None, False)
        return Grade(answer, _norm(answer) == _norm(gold_answer(str(gold))))


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


GRADERS: dict[str, type] = {"math": MathGrader, "exact": ExactGrader}


def get_grader(spec: str | Grader | None = "math") -> Grader:
    """A grader by name (``math``, ``exact``), ``module:attribute`` spec, or instance."""
    if spec is None:
        return MathGrader()
    if not isinstance(spec, str):
        return spec
    if spec in GRADERS:
        return GRADERS[spec]()
    if ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"grader {spec!r} cannot be loaded ({exc})") from None
        grader = obj() if isinstance(obj, type) else obj
        if not callable(grader):
            raise ValueError(f"grader {spec!r} is not callable")
        return grader
    raise ValueError(f"unknown grader {spec!r}: use one of {sorted(GRADERS)} or module:attribute")
