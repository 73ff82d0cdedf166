"""Text understanding: encoders (LLM, pooled HF, TF-IDF), templates and the embedding cache."""

from metarec.text.cache import EmbeddingCache
from metarec.text.encoders import (
    HFPooledEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    TfidfEncoder,
    build_encoder,
)
from metarec.text.registry import encode_texts, get_encoder

__all__ = [
    "EmbeddingCache",
    "HFPooledEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "TfidfEncoder",
    "build_encoder",
    "encode_texts",
    "get_encoder",
]
