"""Content baselines on LLM vectors: they know an item or a user from text alone.

ContentKNN ranks items by their text similarity to the user's items, in one of two ways:
`centroid` (the user's profile is the mean of their items' vectors; cosine to it) or `knn` (each
user item votes for every candidate with its cosine similarity raised to `power`, which keeps the
near neighbours and mutes the broad genre overlap that blurs a centroid). The user's own profile
text adds `profile_weight` x its cosine to each item. Because item vectors come from text, cold
items are ranked like any other, and a user with only a profile text still gets recommendations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec.data.schema import Dataset
from metarec.errors import ConfigError, MetarecError
from metarec.models.base import Recommender, UserState
from metarec.text.encoders import check_encoder_config, normalise_rows
from metarec.text.registry import encode_texts, get_encoder
from metarec.text.templates import item_texts, user_texts


class ContentKNNRecommender(Recommender):
    name = "content"
    supports_cold_items = True

    def __init__(
        self,
        text: dict[str, Any] | None = None,
        item_template: str = "{title}",
        user_template: str | None = None,
        aggregation: str = "centroid",
        power: float = 3.0,
        profile_weight: float = 0.5,
        value_maps: dict[str, dict[str, str]] | None = None,
        max_reviews: int = 5,
        review_field: str = "summary",
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        check_encoder_config(text)
        self.text = text  # encoder config (the run's [text] table); None: the default model
        self.item_template = item_template
        self.user_template = user_template
        if aggregation not in ("centroid", "knn"):
            raise ConfigError(f"content aggregation must be 'centroid' or 'knn', got {aggregation!r}")
        self.aggregation = aggregation
        self.power = power
        self.profile_weight = profile_weight
        self.value_maps = value_maps
        self.max_reviews = max_reviews
        self.review_field = review_field
        self.batch_size = batch_size

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        self.encoder_ = get_encoder(self.text)  # TF-IDF fits its vocabulary on the item texts below
        texts = item_texts(
            train, self.item_template, self.value_maps, self.max_reviews, self.review_field,
            extra_reviews=revealed,
        )  # fmt: skip
        self.item_vectors_ = encode_texts(self.encoder_, texts, self.item_template, self.batch_size)
        self.user_vectors_ = None
        if self.user_template:
            utexts = user_texts(train, self.user_template, self.value_maps, self.max_reviews, self.review_field)
            self.user_vectors_ = encode_texts(self.encoder_, utexts, self.user_template, self.batch_size)
            self.user_vectors_[[not t for t in utexts]] = 0.0

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.encoder_.name.startswith("tfidf"):
            raise MetarecError("a TF-IDF content model cannot be saved (its vocabulary is refitted per corpus)")
        arrays = {"item_vectors": self.item_vectors_}
        if self.user_vectors_ is not None:
            arrays["user_vectors"] = self.user_vectors_
        return arrays, {}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.encoder_ = get_encoder(self.text)
        self.item_vectors_ = arrays["item_vectors"]
        self.user_vectors_ = arrays.get("user_vectors")

    def _centroid(self, history: sp.csr_matrix) -> np.ndarray:
        counts = np.asarray(history.sum(axis=1)).ravel()
        return normalise_rows(np.asarray(history @ self.item_vectors_) / np.maximum(counts, 1.0)[:, None])

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        history = history.tocsr().astype(np.float32)
        text = self.user_vectors_[users] if self.user_vectors_ is not None and users is not None else None
        return UserState(history, text)

    def adapt(self, support: pd.DataFrame, profile_text: str | None = None) -> UserState:
        state = super().adapt(support)
        if profile_text:
            state.payload = encode_texts(self.encoder_, [profile_text], "profile", self.batch_size)
        return state

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        V = self.item_vectors_ if items is None else self.item_vectors_[items]
        H = state.history
        if self.aggregation == "centroid":
            prof = self._centroid(H)
            if state.payload is not None:
                prof = normalise_rows(prof + self.profile_weight * state.payload)
            return prof @ V.T
        # knn: only the items these users touched enter the similarity block, so memory is
        # (distinct history items x candidates), bounded by the evaluator's user chunk
        used = np.unique(H.indices)
        sim = np.maximum(self.item_vectors_[used] @ V.T, 0.0) ** self.power
        counts = np.maximum(np.asarray(H.sum(axis=1)).ravel(), 1.0)
        scores = np.asarray(H[:, used] @ sim) / counts[:, None]
        if state.payload is not None:
            scores += self.profile_weight * (state.payload @ V.T)
        return scores
