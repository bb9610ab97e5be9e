"""Pluggable text encoders for users who have local model weights (optional extra).

The default predictor needs no weights (TF-IDF features). If you have an encoder on disk, pass
it to :class:`~shadowprice.predict.ThresholdPredictor` and the Ridge head is trained on its
embeddings instead::

    from shadowprice.predict import SentenceEncoder, ThresholdPredictor
    pred = ThresholdPredictor(encoder=SentenceEncoder("/models/all-MiniLM-L6-v2"))
    pred.fit(texts, thresholds)

- :class:`SentenceEncoder`: a sentence-transformers model directory.
- :class:`HFEncoder`: a Hugging Face transformers model directory, mean-pooled (or [CLS])
  hidden states; with ``output="regression"`` a fine-tuned single-output regressor such as the
  CLEAR paper's DeBERTa-v3-base threshold model, whose scalar output becomes the feature (the
  Ridge head plus :meth:`~ThresholdPredictor.calibrate` then map it to tokens with intervals).

Weights are only ever read from a local path (``local_files_only=True``): nothing is
downloaded. The libraries are imported lazily, with an ``ImportError`` naming the extra
(``pip install 'shadowprice[encoders]'``). Saved predictors store the encoder's path and
settings, not its weights; the model is reloaded from the same path on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["EXTRA", "Encoder", "EncoderFeatures", "HFEncoder", "SentenceEncoder"]

#: Name of the optional dependency group that provides the encoder libraries.
EXTRA = "encoders"


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps N texts to an (N, D) float array of features."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Embeddings (or scores) of N texts.

        Parameters
        ----------
        texts : sequence of str, length N

        Returns
        -------
        ndarray (N, D)
        """
        ...


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"this encoder needs the optional package '{module}'; install it with "
            f"pip install 'shadowprice[{EXTRA}]' (or pip install {module})"
        ) from e


def _local_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"encoder weights must be a local directory; {p} is not one (nothing is downloaded)"
        )
    return p


class _Lazy:
    """Holds a path and settings; loads the model on first use; pickles without it."""

    _model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("_model", None)
        return d


class SentenceEncoder(_Lazy):
    """A sentence-transformers model from a local directory.

    Parameters
    ----------
    path : str or Path
        Model directory (as written by ``SentenceTransformer.save``).
    batch_size : int
        Texts per forward pass.
    device : str, optional
        'cpu', 'cuda', ...; default: the library's choice.
    normalize : bool
        L2-normalise embeddings.
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 64,
        device: str | None = None,
        normalize: bool = True,
    ) -> None:
        self.path, self.batch_size, self.device = str(path), int(batch_size), device
        self.normalize = bool(normalize)

    def _load(self) -> None:
        st = _need("sentence_transformers")
        d = str(_local_dir(self.path))
        try:
            self._model = st.SentenceTransformer(d, device=self.device, local_files_only=True)
        except TypeError as e:
            # sentence-transformers < 2.3 has no local_files_only; it reads an existing
            # directory from disk without contacting the hub, so the guarantee still holds.
            if "local_files_only" not in str(e):
                raise
            self._model = st.SentenceTransformer(d, device=self.device)

    @property
    def dimension(self) -> int:
        """Embedding width D (loads the model)."""
        if self._model is None:
            self._load()
        m = self._model
        # Renamed in sentence-transformers 5.x; the old name warns there.
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Sentence embeddings of N texts (loads the model on first use).

        Parameters
        ----------
        texts : sequence of str, length N

        Returns
        -------
        ndarray (N, D), float64
            L2-normalised rows when ``normalize``; (0, D) for no texts.
        """
        if self._model is None:
            self._load()
        x = list(texts)
        if not x:  # the library returns shape (0,) here; keep the (N, D) contract
            return np.zeros((0, self.dimension))
        out = self._model.encode(
            x,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=float).reshape(len(x), -1)

    def __repr__(self) -> str:
        return f"SentenceEncoder({self.path!r})"


class HFEncoder(_Lazy):
    """A Hugging Face transformers encoder from a local directory.

    Parameters
    ----------
    path : str or Path
        Model directory with config, weights and tokenizer.
    output : 'mean', 'cls' or 'regression'
        Mean-pooled last hidden states, the first token's state, or the logits of a
        sequence-classification head (a fine-tuned regressor: shape (N, num_labels)).
    max_length : int
        Tokens kept per text (truncation).
    batch_size : int
    device : str, optional
        Default 'cuda' if available, else 'cpu'.
    """

    def __init__(
        self,
        path: str | Path,
        output: Literal["mean", "cls", "regression"] = "mean",
        max_length: int = 512,
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        if output not in ("mean", "cls", "regression"):
            raise ValueError(f"output must be 'mean', 'cls' or 'regression', got {output!r}")
        self.path, self.output = str(path), output
        self.max_length, self.batch_size, self.device = int(max_length), int(batch_size), device

    def _load(self) -> None:
        torch = _need("torch")
        tf = _need("transformers")
        d = str(_local_dir(self.path))
        auto = (
            tf.AutoModelForSequenceClassification if self.output == "regression" else tf.AutoModel
        )
        self._tok = tf.AutoTokenizer.from_pretrained(d, local_files_only=True)
        dev = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = auto.from_pretrained(d, local_files_only=True).to(dev).eval()
        self._dev = dev

    def encode(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """Pooled hidden states (or regression outputs) of N texts, in batches.

        Parameters
        ----------
        texts : sequence of str, length N

        Returns
        -------
        ndarray (N, D), float64
            D is the hidden size, or the number of labels for ``output="regression"``;
            (0, D) for no texts.
        """
        if self._model is None:
            self._load()
        torch = _need("torch")
        out = []
        x = list(texts)
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                enc = self._tok(
                    x[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self._dev)
                res = self._model(**enc)
                if self.output == "regression":
                    v = res.logits
                elif self.output == "cls":
                    v = res.last_hidden_state[:, 0]
                else:
                    m = enc["attention_mask"].unsqueeze(-1).to(res.last_hidden_state.dtype)
                    v = (res.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1)
                out.append(v.float().cpu().numpy())
        if not out:  # keep the (N, D) contract for an empty batch
            cfg = self._model.config
            width = cfg.num_labels if self.output == "regression" else cfg.hidden_size
            return np.zeros((0, int(width)))
        return np.concatenate(out, axis=0).astype(float)

    def __getstate__(self) -> dict[str, Any]:
        d = super().__getstate__()
        for k in ("_tok", "_dev"):
            d.pop(k, None)
        return d

    def __repr__(self) -> str:
        return f"HFEncoder({self.path!r}, output={self.output!r})"


class EncoderFeatures(BaseEstimator, TransformerMixin):
    """scikit-learn transformer wrapping an :class:`Encoder` (stateless; fit does nothing)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def fit(self, texts: Sequence[str], y: object = None) -> EncoderFeatures:
        """Check the encoder (nothing to learn); returns self."""
        if not isinstance(self.encoder, Encoder):
            raise TypeError(
                f"encoder must have an encode(texts) method, got {type(self.encoder).__name__}"
            )
        return self

    def transform(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """The encoder's output for N texts.

        Parameters
        ----------
        texts : sequence of str, length N

        Returns
        -------
        ndarray (N, D), float64

        Raises
        ------
        ValueError
            If the encoder returns anything but one row per text.
        """
        e = np.asarray(self.encoder.encode(list(texts)), dtype=float)
        if e.ndim != 2 or e.shape[0] != len(texts):
            raise ValueError(
                f"encoder returned shape {e.shape} for {len(texts)} texts; expected (N, D)"
            )
        return e
