"""Models behind one `Recommender` interface, built by name from a config."""

from __future__ import annotations

from typing import Any

from metarec.errors import ConfigError
from metarec.models.base import Recommender, UserState
from metarec.models.baselines import (
    ALSRecommender,
    BPRRecommender,
    ItemKNNRecommender,
    ItemMeanRecommender,
    PopularityRecommender,
    RandomRecommender,
)
from metarec.models.cke import CKERecommender
from metarec.models.content import ContentKNNRecommender
from metarec.models.llm_rerank import LLMRerankRecommender, LLMZeroShotRecommender
from metarec.models.meta import MetaRecommender
from metarec.models.rerank import TailRerankRecommender
from metarec.models.sequential import GRU4RecRecommender, SASRecRecommender

REGISTRY: dict[str, type[Recommender]] = {
    "random": RandomRecommender,
    "popularity": PopularityRecommender,
    "itemknn": ItemKNNRecommender,
    "itemmean": ItemMeanRecommender,
    "als": ALSRecommender,
    "bpr": BPRRecommender,
    "content": ContentKNNRecommender,
    "meta": MetaRecommender,
    "rerank": TailRerankRecommender,
    "llm-rerank": LLMRerankRecommender,  # a generative LM re-ranks a retriever's candidates (metarec[llm])
    "llm-zero-shot": LLMZeroShotRecommender,
    "cke": CKERecommender,  # MF + TransE on the knowledge graph, jointly trained (the KG baseline)
    "sasrec": SASRecRecommender,  # next item from the ordered history (self-attention)
    "gru4rec": GRU4RecRecommender,
}
#: models that read item / user text; the experiment hands them the config's [text] table
TEXT_MODELS = {"content", "meta", "sasrec", "gru4rec"}
#: models that wrap another (`base = { type = ... }`): a text-reading base gets the [text] table too
WRAPPERS = {"rerank", "llm-rerank", "llm-zero-shot"}


def model_spec(cfg: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """(kind, params) of `[models.<name>]` in a run config: `type` (default: the name) taken out, and the
    run's `[text]` table under the model's own `text` for models that read text (and for a wrapper's
    text-reading `base`). Every command that builds a configured model goes through here."""
    params = dict(cfg["models"][name])
    kind = params.pop("type", name)
    text = cfg.get("text") or {}
    if kind in TEXT_MODELS:
        params["text"] = {**text, **params.get("text", {})}
    if kind in WRAPPERS and (params.get("base") or {}).get("type") in TEXT_MODELS:  # the wrapped model
        params["base"] = {**params["base"], "text": {**text, **params["base"].get("text", {})}}
    return kind, params


def build_model(kind: str, params: dict[str, Any] | None = None, seed: int = 0) -> Recommender:
    if kind not in REGISTRY:
        raise ConfigError(f"unknown model {kind!r}; available: {', '.join(sorted(REGISTRY))}")
    params = dict(params or {})
    seed = int(params.pop("seed", seed))  # a model's own seed in the config wins over the run's
    try:
        return REGISTRY[kind](seed=seed, **params)
    except TypeError as exc:
        raise ConfigError(f"model {kind!r}: {exc}") from None


__all__ = ["REGISTRY", "TEXT_MODELS", "WRAPPERS", "Recommender", "UserState", "build_model"]
