"""Answer extraction and grading."""

from __future__ import annotations

import pytest

from shadowprice.engine.grading import (
    ExactGrader,
    Grade,
    Grader,
    MathGrader,
    extract_answer,
    get_grader,
    gold_answer,
    last_boxed,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{72}.", "72"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Answer: 1,000", "1,000"),
        ("The final answer is 42.", "42"),
        ("she pays 5 then 3, total 8 dollars", "8"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_last_boxed_nested_and_truncated() -> None:
    assert last_boxed("x \\boxed{\\frac{a}{b}} y") == "\\frac{a}{b}"
    assert last_boxed("cut off \\boxed{12") is None


def test_gold_answer_gsm8k() -> None:
    assert gold_answer("She sells 9 eggs.\n#### 18") == "18"
    assert gold_answer(" 7 ") == "7"


@pytest.mark.parametrize(
    ("text", "gold", "correct"),
    [
        ("\\boxed{72}", "#### 72", True),
        ("\\boxed{18.00}", "18", True),
        ("\\boxed{\\$18}", "18", True),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("\\boxed{x^2+1}", "1+x^2", True),
        ("\\boxed{71}", "72", False),
        ("nothing", "3", False),
    ],
)
def test_math_grader(text: str, gold: str, correct: bool) -> None:
    assert MathGrader()(text, gold).correct is correct


def test_no_gold_means_ungraded() -> None:
    assert MathGrader()("\\boxed{3}", None) == Grade("3", None)


def test_exact_grader_and_registry() -> None:
    assert ExactGrader()("Answer: Paris", "paris").correct is True
    assert isinstance(get_grader("exact"), ExactGrader)
    assert isinstance(get_grader("math"), Grader)
    assert isinstance(get_grader("shadowprice.engine.grading:MathGrader"), MathGrader)
    with pytest.raises(ValueError, match="unknown grader"):
        get_grader("nope")
