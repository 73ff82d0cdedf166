"""Text through a pretrained language model: a template renders each record, an encoder embeds it.

Item templates may use `{reviews}` (review fields of the interactions the model may see, including
cold items' revealed early adopters) and `{kg}` (knowledge-graph facts); vectors go through the
on-disk cache, so a second fit encodes nothing it has seen.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import ConfigError
from metarec.features.base import FeatureSource, Side
from metarec.text.encoders import DEFAULT_MODEL, TextEncoder, check_encoder_config
from metarec.text.registry import encode_texts, get_encoder
from metarec.text.templates import item_texts, render, user_texts

DEFAULT_TEMPLATES = {"item": "{title}", "user": "{profile}"}


class TextSource(FeatureSource):
    kind = "text"

    def __init__(
        self,
        name: str = "text",
        side: Side = "item",
        template: str | None = None,
        text: dict[str, Any] | None = None,
        value_maps: dict[str, dict[str, str]] | None = None,
        max_reviews: int = 5,
        review_field: str = "summary",
        batch_size: int = 64,
        tune: dict[str, Any] | None = None,
        describe: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, side)
        from metarec.llm.describe import describe_config

        self.describe = describe
        self._describe_cfg = describe_config(describe, name)
        self._writer: Any = None
        if self._describe_cfg is not None and side != "item":
            raise ConfigError(f"feature source {name!r}: describe writes item descriptions; it applies to items")
        if tune is not None:
            from metarec.text.tuning import TuneConfig

            if side != "item":
                raise ConfigError(f"feature source {name!r}: tune learns from co-used items; it applies to items")
            try:
                TuneConfig(**tune)
            except ValueError as exc:
                raise ConfigError(f"{name}.tune: {exc}") from None
        self.tune = tune
        self.template = template or DEFAULT_TEMPLATES[side]
        check_encoder_config(text)
        self.text = dict(text or {})  # encoder config; the model fills in the run's [text] table
        self.value_maps = value_maps
        self.max_reviews = max_reviews
        self.review_field = review_field
        self.batch_size = batch_size
        self._encoder: TextEncoder | None = None

    @property
    def encoder(self) -> TextEncoder:
        """Loaded on first use (once per process): constructing a source must stay cheap."""
        if self._encoder is None:
            self._encoder = get_encoder(self.text)
            self.dim_ = self._encoder.dim
        return self._encoder

    def encode(self, texts: list[str], namespace: str | None = None, persist: bool = True) -> np.ndarray:
        """Vectors of already rendered texts (a search query, a profile), cached per namespace;
        `persist=False` keeps one-off texts out of the on-disk cache."""
        return encode_texts(self.encoder, texts, namespace or self.template, self.batch_size, persist)

    def render(self, records: pd.DataFrame) -> list[str]:
        """Texts of records; with `describe`, items without a description get one written first."""
        return render(self.template, self._described(records), self.value_maps)

    def _described(self, records: pd.DataFrame) -> pd.DataFrame:
        """Items with empty descriptions filled by the generative LM (`describe`), else unchanged."""
        if self._describe_cfg is None:
            return records
        if self._writer is None:  # one writer per source: the LM is loaded once, when first needed
            from metarec.llm.describe import DescriptionWriter

            self._writer = DescriptionWriter(self._describe_cfg)
        return self._writer.fill(records)

    def fit_transform(self, train: Dataset, revealed: pd.DataFrame | None = None) -> np.ndarray:
        if self.side == "item":
            if self._describe_cfg is not None:
                train = dataclasses.replace(train, items=self._described(train.items))
            texts = item_texts(train, self.template, self.value_maps, self.max_reviews, self.review_field,
                               extra_reviews=revealed)  # fmt: skip
            if self.tune is not None:  # LoRA on this fit's training interactions only (text/tuning.py)
                from metarec.text.tuning import TuneConfig, tuned_for

                base = {k: v for k, v in self.text.items() if k != "adapter"}
                model = str(base.get("model", DEFAULT_MODEL))
                self.text = {**base, "adapter": tuned_for(model, texts, train, TuneConfig(**self.tune))}
                self._encoder = None
            return self.encode(texts)
        texts = user_texts(train, self.template, self.value_maps, self.max_reviews, self.review_field)
        vecs = self.encode(texts)
        vecs[[not t for t in texts]] = 0.0  # no profile: no signal, rather than the vector of ""
        return vecs

    @property
    def rendered_column(self) -> str:
        """A records column that, when present, holds this source's text already rendered (the service
        stores rendered texts, not every field, so items added after training re-embed from them)."""
        return f"_text:{self.name}"

    def get_state(self) -> dict[str, Any]:
        """The adapter of a tuned (or adapter-configured) source, by fingerprint: the artefact carries a
        copy (models/io.py), so a path on the training machine never matters."""
        if not self.text.get("adapter"):
            return {}
        from metarec.text.tuning import find_adapter, install_adapter

        return {"adapter": install_adapter(find_adapter(self.text["adapter"]))}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if state.get("adapter"):
            self.text = {**self.text, "adapter": state["adapter"]}
            self._encoder = None

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        col = self.rendered_column
        texts = records[col].fillna("").astype(str).tolist() if col in records.columns else self.render(records)
        vecs = self.encode(texts)
        vecs[[not t for t in texts]] = 0.0
        return vecs
