"""Text features for threshold prediction: TF-IDF n-grams plus simple problem structure.

Everything here is a scikit-learn transformer, so it pickles with the model and runs the same
at fit and predict time. Output is a sparse matrix of shape (N, F).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "STRUCTURE_NAMES",
    "StructuralFeatures",
    "check_texts",
    "make_text_features",
    "structure_row",
]

_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_SENTENCE = re.compile(r"[.?!](?:\s|$)")
# The lookahead on the first letters only skips positions where no word can start (3x faster
# than trying every alternative at every word boundary); the matches are the same.
_HARD_WORDS = re.compile(
    r"\b(?=[pfhmlsi])(prove|show that|find all|how many|maximum|minimum|largest|"
    r"smallest|sum of all|probability|integer[s]?|prime)\b",
    re.IGNORECASE,
)

#: Names of the columns :class:`StructuralFeatures` produces, in order.
STRUCTURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_numbers",
    "max_number_digits",
    "digit_share",
    "latex_per_100_chars",
    "dollar_per_100_chars",
    "log_sentences",
    "has_frac",
    "has_sqrt",
    "has_sum_or_prod",
    "has_trig",
    "has_exponent",
    "has_equation",
    "hard_words",
    "has_figure",
    "has_choices",
)


def check_texts(texts: Iterable[object], what: str = "texts") -> list[str]:
    """Validate query texts at the boundary: a sequence of non-empty strings.

    Parameters
    ----------
    texts : iterable of str, length N
        Query texts.
    what : str
        The argument's name in error messages.

    Returns
    -------
    list of str, length N

    Raises
    ------
    TypeError
        For a bare string (a common slip: one text, not a list) or a non-string entry.
    ValueError
        Naming the first empty (or all-whitespace) entry.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] is {type(t).__name__}, expected a string")
        if not t.strip():
            raise ValueError(f"{what}[{i}] is empty")
    return [str(t) for t in out]


class StructuralFeatures(BaseEstimator, TransformerMixin):
    """Dense per-text structure: length, numbers, LaTeX density, a few keyword flags.

    ``transform(texts)`` returns an array of shape (N, len(STRUCTURE_NAMES)); lengths and
    counts are log1p-scaled because difficulty grows roughly with their logarithm.
    """

    def fit(self, texts: Sequence[str], y: object = None) -> StructuralFeatures:
        """Nothing to learn (stateless); returns self."""
        return self

    def transform(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Structural features of N texts.

        Parameters
        ----------
        texts : sequence of str, length N

        Returns
        -------
        ndarray (N, len(STRUCTURE_NAMES))
            One :func:`structure_row` per text.
        """
        rows = [structure_row(t) for t in texts]
        return np.asarray(rows, dtype=float).reshape(len(rows), len(STRUCTURE_NAMES))

    def get_feature_names_out(self, input_features: object = None) -> NDArray[np.str_]:
        """Column names, :data:`STRUCTURE_NAMES`."""
        return np.asarray(STRUCTURE_NAMES)


def structure_row(t: str) -> list[float]:
    """The structural features of one text, in :data:`STRUCTURE_NAMES` order.

    Parameters
    ----------
    t : str
        A query text.

    Returns
    -------
    list of float, length ``len(STRUCTURE_NAMES)``
        Unscaled values (log1p of lengths and counts, shares, densities per 100 characters,
        0/1 flags).
    """
    n = max(len(t), 1)
    nums = _NUMBER.findall(t)
    # A number matches -?digits([.,]digits)*, so its digits are all but its signs and separators.
    digits = max((len(x) - x.count("-") - x.count(".") - x.count(",") for x in nums), default=0)
    log_chars, log_words, log_numbers, log_sentences = np.log1p(
        [len(t), len(t.split()), len(nums), len(_SENTENCE.findall(t))]
    ).tolist()
    return [
        log_chars,
        log_words,
        log_numbers,
        float(digits),
        sum(c.isdigit() for c in t) / n,
        100.0 * len(_LATEX_CMD.findall(t)) / n,
        100.0 * t.count("$") / n,
        log_sentences,
        float("\\frac" in t),
        float("\\sqrt" in t),
        float("\\sum" in t or "\\prod" in t),
        float(any(k in t for k in ("\\sin", "\\cos", "\\tan", "\\log"))),
        float("^" in t),
        float("=" in t),
        float(len(_HARD_WORDS.findall(t))),
        float("[asy]" in t or "diagram" in t.lower()),
        float("(A)" in t or "\\textbf{(A)" in t),
    ]


def make_text_features(
    word_features: int = 50_000, char_features: int = 50_000, min_df: int = 2
) -> FeatureUnion:
    """The default text featuriser: word 1-2 grams, char 3-5 grams (within words), structure.

    Parameters
    ----------
    word_features, char_features : int
        Vocabulary caps (most frequent n-grams kept); 0 drops that block.
    min_df : int
        An n-gram must occur in at least this many training texts (drops one-off noise).

    Returns
    -------
    FeatureUnion mapping N texts to a sparse (N, F) matrix. TF-IDF rows are L2-normalised with
    sublinear term frequency; structural columns are standardised.
    """
    blocks: list[tuple[str, object]] = []
    if word_features:
        blocks.append(
            (
                "word",
                TfidfVectorizer(
                    ngram_range=(1, 2),
                    min_df=min_df,
                    sublinear_tf=True,
                    max_features=word_features,
                    dtype=np.float32,
                ),
            )
        )
    if char_features:
        blocks.append(
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(3, 5),
                    min_df=min_df,
                    sublinear_tf=True,
                    max_features=char_features,
                    dtype=np.float32,
                ),
            )
        )
    blocks.append(("structure", make_pipeline(StructuralFeatures(), StandardScaler())))
    return FeatureUnion(blocks)
