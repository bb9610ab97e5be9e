"""Single-text threshold prediction without scikit-learn's per-call overhead.

A gateway prices each live request as it arrives, one question at a time. Going through
``ThresholdPredictor.predict`` costs milliseconds per call, nearly all of it fixed overhead
(input validation, sparse-matrix assembly for three feature blocks, a sparse product),
not arithmetic. :class:`CompiledPredictor` applies the same fitted pieces directly: the
TF-IDF vocabularies as dicts, the idf weights and Ridge coefficients as numpy arrays, the
structural features and their scaler, then the calibration line, with an LRU cache for
prompts seen before.

It reproduces scikit-learn's arithmetic step by step (term counts, sublinear tf and idf in
the vectoriser's float32, the L2 norm accumulated in float64 as scikit-learn's kernel does),
so its medians agree with ``ThresholdPredictor.predict`` to rounding (~1e-12 relative), not
just approximately. Build one with :meth:`ThresholdPredictor.compile`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

from .features import STRUCTURE_NAMES, StructuralFeatures, structure_row

__all__ = ["CompiledPredictor"]

FloatArray = NDArray[np.float64]


_WORD_CACHE = 1 << 16  # distinct words whose char n-gram columns are kept per block


def _padded_word_grams(word: str, min_n: int, max_n: int) -> list[str]:
    """scikit-learn's ``char_wb`` n-grams of one word (``min_n <= 3``).

    scikit-learn pads the word with one space each side and slices every n-gram of length
    ``min_n..max_n`` that fits; a padded word is at least 3 characters long, so its special
    case for words shorter than ``min_n`` never applies when ``min_n <= 3``.
    """
    w = " " + word + " "
    out: list[str] = []
    for n in range(min_n, min(max_n, len(w)) + 1):
        out += [w[i : i + n] for i in range(len(w) - n + 1)]
    return out


_DEFAULT_TOKENS = r"(?u)\b\w\w+\b"  # scikit-learn's default token_pattern
_NO_COLUMNS = np.empty(0, dtype=np.intp)


class _TfidfColumns:
    """Columns (with multiplicity) of one fitted TfidfVectorizer's n-grams in one text.

    Column numbers are global (offset into the feature union). ``char_wb`` n-grams never
    cross a word, so their columns are looked up once per distinct word and remembered;
    default word 1-2 grams look bigrams up by token pair, without building their strings.
    """

    def __init__(self, vec: TfidfVectorizer, offset: int) -> None:
        self.vocab: dict[str, int] = {g: j + offset for g, j in vec.vocabulary_.items()}
        self.width = len(self.vocab)
        lo, hi = vec.ngram_range
        self.ngrams = (int(lo), int(hi))
        self.lowercase = bool(vec.lowercase)
        plain = vec.preprocessor is None and vec.strip_accents is None
        self.by_word = plain and vec.analyzer == "char_wb" and lo <= 3
        words = plain and vec.analyzer == "word" and vec.tokenizer is None
        self.pairs: dict[tuple[str, ...], int] | None = None
        if words and vec.stop_words is None and vec.token_pattern == _DEFAULT_TOKENS:
            self.tokens: Callable[[str], list[str]] | None = re.compile(_DEFAULT_TOKENS).findall
            if self.ngrams == (1, 2):
                # Tokens hold no spaces, so a bigram's string splits back into its pair.
                self.pairs = {tuple(g.split(" ")): j for g, j in self.vocab.items() if " " in g}
        else:
            self.tokens = None
        self.analyze: Callable[[str], list[str]] = vec.build_analyzer()
        self._words: dict[str, NDArray[np.intp]] = {}

    def __call__(self, text: str) -> list[NDArray[np.intp]]:
        """Column arrays whose concatenation lists every in-vocabulary n-gram of ``text``."""
        if self.by_word:
            get = self._words.get
            words = (text.lower() if self.lowercase else text).split()
            return [c if (c := get(w)) is not None else self._word(w) for w in words]
        if self.pairs is not None and self.tokens is not None:
            tokens = self.tokens(text.lower() if self.lowercase else text)
            cols = [j for j in map(self.vocab.get, tokens, repeat(-1)) if j >= 0]
            pairs = itertools.pairwise(tokens)
            cols += [j for j in map(self.pairs.get, pairs, repeat(-1)) if j >= 0]
        else:
            grams = self.analyze(text) if self.tokens is None else self._word_ngrams(text)
            cols = [j for j in map(self.vocab.get, grams, repeat(-1)) if j >= 0]
        return [np.array(cols, dtype=np.intp)]

    def _word_ngrams(self, text: str) -> list[str]:
        """scikit-learn's word n-grams: tokens, then space-joined runs of n of them."""
        assert self.tokens is not None
        tokens = self.tokens(text.lower() if self.lowercase else text)
        lo, hi = self.ngrams
        out: list[str] = list(tokens) if lo == 1 else []
        for n in range(max(lo, 2), hi + 1):
            out += map(" ".join, zip(*(tokens[i:] for i in range(n)), strict=False))
        return out

    def clear(self) -> None:
        """Forget the remembered columns of every word."""
        self._words.clear()

    def _word(self, word: str) -> NDArray[np.intp]:
        grams = _padded_word_grams(word, *self.ngrams)
        cols = [j for j in map(self.vocab.get, grams, repeat(-1)) if j >= 0]
        arr = np.array(cols, dtype=np.intp) if cols else _NO_COLUMNS
        if len(self._words) >= _WORD_CACHE:
            self._words.clear()
        self._words[word] = arr
        return arr


def _count_sorted(idx: NDArray[np.intp]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Distinct values of a non-empty array, ascending, with their counts (``np.unique``'s
    result, without its per-call overhead)."""
    idx = np.sort(idx)
    edge = np.empty(idx.size + 1, dtype=bool)
    edge[0] = edge[-1] = True
    np.not_equal(idx[1:], idx[:-1], out=edge[1:-1])
    pos = np.flatnonzero(edge)
    return idx[pos[:-1]], np.diff(pos)


class _Features:
    """A fitted ``make_text_features`` union applied to one text, as in scikit-learn.

    Reproduces scikit-learn's arithmetic step by step: term counts, sublinear tf and idf in
    the vectorisers' dtype (float32), each block's L2 norm accumulated in float64 in column
    order as scikit-learn's row normaliser does, values divided in float64 and stored back
    in float32; the structural block as StructuralFeatures then StandardScaler.
    """

    def __init__(self, features: FeatureUnion, coef: FloatArray) -> None:
        if features.transformer_weights:
            raise ValueError("compile() does not support FeatureUnion transformer_weights")
        self.coef = coef
        self.tfidf: list[_TfidfColumns] = []
        vecs: list[TfidfVectorizer] = []
        self.scaler: StandardScaler | None = None
        start = 0
        for name, tr in features.transformer_list:
            if isinstance(tr, TfidfVectorizer) and self.scaler is None:
                self.tfidf.append(_TfidfColumns(tr, start))
                vecs.append(tr)
                start += len(tr.vocabulary_)
            elif _is_structure(tr) and self.scaler is None:
                self.scaler = tr.steps[1][1]
                self.structure = slice(start, start + len(STRUCTURE_NAMES))
                start += len(STRUCTURE_NAMES)
            else:
                raise ValueError(
                    f"compile() knows the blocks of make_text_features (TF-IDF blocks, then "
                    f"the structural block); block {name!r} is a {type(tr).__name__}"
                )
        if start != coef.size:
            raise ValueError(f"the features have {start} columns but the model has {coef.size}")
        settings = {(v.dtype, v.sublinear_tf, v.use_idf, v.norm, v.binary) for v in vecs}
        if len(settings) > 1 or any(s[3] not in ("l2", None) or s[4] for s in settings):
            raise ValueError(
                "compile() needs TF-IDF blocks with one dtype, sublinear_tf and use_idf "
                "setting, counts (binary=False) and l2 or no norm"
            )
        self.dtype = np.dtype(vecs[0].dtype) if vecs else np.dtype(np.float64)
        self.sublinear = bool(vecs and vecs[0].sublinear_tf)
        self.l2 = bool(vecs and vecs[0].norm == "l2")
        self.idf = (
            np.concatenate([np.asarray(v.idf_, dtype=self.dtype) for v in vecs])
            if vecs and vecs[0].use_idf
            else None
        )
        if self.scaler is not None:
            k = len(STRUCTURE_NAMES)
            mean = self.scaler.mean_ if self.scaler.mean_ is not None else np.zeros(k)
            scale = self.scaler.scale_ if self.scaler.scale_ is not None else np.ones(k)
            self._scaled = (
                np.asarray(mean, dtype=float).tolist(),
                np.asarray(scale, dtype=float).tolist(),
                coef[self.structure].tolist(),
            )
        # First column of each TF-IDF block after the first (block boundaries).
        self.bounds = np.cumsum([b.width for b in self.tfidf])[:-1]

    @property
    def width(self) -> int:
        return int(self.coef.size)

    def linear(self, text: str) -> float:
        """The linear head's output without its intercept: features(text) @ coef."""
        return self._tfidf(text) + self._structure(text)

    def _tfidf(self, text: str) -> float:
        if not self.tfidf:
            return 0.0
        idx = np.concatenate(
            [part for block in self.tfidf for part in block(text)] or [_NO_COLUMNS]
        )
        if idx.size == 0:
            return 0.0
        # Sorted distinct columns with their counts: the CSR row scikit-learn builds.
        cols, counts = _count_sorted(idx)
        v = counts.astype(self.dtype)
        if self.sublinear:
            np.log(v, out=v)
            v += 1.0
        if self.idf is not None:
            v *= self.idf[cols]
        v64 = v.astype(np.float64)
        if self.l2:
            sq = v * v  # squares in the data's dtype, as scikit-learn's kernel
            edges = [0, *np.searchsorted(cols, self.bounds).tolist(), cols.size]
            for lo, hi in itertools.pairwise(edges):
                if hi > lo:
                    norm = math.sqrt(float(np.cumsum(sq[lo:hi], dtype=np.float64)[-1]))
                    if norm != 0.0:
                        v64[lo:hi] = (v64[lo:hi] / norm).astype(self.dtype)
        return float(v64 @ self.coef[cols])

    def _structure(self, text: str) -> float:
        if self.scaler is None:
            return 0.0
        # Elementwise as StandardScaler.transform ((x - mean) / scale), then the dot product;
        # 17 values are cheaper in plain floats than through numpy calls.
        z = 0.0
        for x, m, s, c in zip(structure_row(text), *self._scaled, strict=True):
            z += (x - m) / s * c
        return z


def _is_structure(tr: object) -> bool:
    return (
        isinstance(tr, Pipeline)
        and len(tr.steps) == 2
        and isinstance(tr.steps[0][1], StructuralFeatures)
        and isinstance(tr.steps[1][1], StandardScaler)
    )


class CompiledPredictor:
    """A fitted threshold model applied to one text at a time, in microseconds.

    Build it with :meth:`ThresholdPredictor.compile`; it keeps no reference to the
    estimator and does not change when the estimator is refitted.

    Parameters
    ----------
    features : FeatureUnion
        The fitted text features of :func:`make_text_features` (TF-IDF blocks and the
        structural block, in their column order).
    coef : ndarray (F,)
        Linear coefficients over the feature columns (the Ridge head).
    intercept : float
        The Ridge head's intercept.
    calibration : (float, float)
        (a, b) of log tau = a + b z + shift, z the linear output.
    shift : float
        Median out-of-fold residual (makes the output the predictive median).
    sigma : float
        Standard deviation of log tau (natural log) of every prediction.
    cache_size : int
        Distinct texts whose results are kept, least recently used first out; 0 for none.

    Examples
    --------
    >>> from shadowprice.predict import default_predictor
    >>> fast = default_predictor().compile()                       # doctest: +SKIP
    >>> median, sigma = fast.predict_one("What is 17 * 23?")       # doctest: +SKIP
    """

    def __init__(
        self,
        features: FeatureUnion,
        *,
        coef: FloatArray,
        intercept: float,
        calibration: tuple[float, float],
        shift: float,
        sigma: float,
        cache_size: int = 4096,
    ) -> None:
        if not (isinstance(cache_size, int) and cache_size >= 0):
            raise ValueError(f"cache_size must be an integer >= 0, got {cache_size!r}")
        self._features = _Features(features, np.array(coef, dtype=float))
        self._intercept = float(intercept)
        self._a, self._b = float(calibration[0]), float(calibration[1])
        self._shift = float(shift)
        self.sigma = float(sigma)
        self.cache_size = cache_size
        self._one: Callable[[str], float] = (
            lru_cache(maxsize=cache_size)(self._median) if cache_size else self._median
        )

    def predict_one(self, text: str) -> tuple[float, float]:
        """Predictive distribution of one text's threshold.

        Parameters
        ----------
        text : str
            A non-empty query text.

        Returns
        -------
        median : float
            Median threshold in tokens (what ``ThresholdPredictor.predict`` returns).
        sigma : float
            Standard deviation of log tau (natural log): log tau ~ Normal(log median, sigma).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty")
        return self._one(text), self.sigma

    def predict(self, texts: Sequence[str]) -> FloatArray:
        """Median thresholds of several texts, one at a time (through the cache).

        Parameters
        ----------
        texts : sequence of str, length N

        Returns
        -------
        ndarray (N,)
            Medians in tokens. For large batches ``ThresholdPredictor.predict`` is faster.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a sequence of strings, not a single string")
        return np.array([self.predict_one(t)[0] for t in texts], dtype=float)

    def cache_info(self) -> Any:
        """Hits, misses and size of the LRU cache (``functools`` ``CacheInfo``), or None."""
        info = getattr(self._one, "cache_info", None)
        return None if info is None else info()

    def cache_clear(self) -> None:
        """Forget every cached prediction and the per-word n-gram columns (a cold start)."""
        clear = getattr(self._one, "cache_clear", None)
        if clear is not None:
            clear()
        for block in self._features.tfidf:
            block.clear()

    def _median(self, text: str) -> float:
        z = self._features.linear(text) + self._intercept
        return math.exp(self._a + self._b * z + self._shift)

    def __repr__(self) -> str:
        return (
            f"CompiledPredictor({self._features.width} features, sigma={self.sigma:.3f}, "
            f"cache_size={self.cache_size})"
        )
