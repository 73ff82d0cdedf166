"""Feature sources: items and users as matrices for the neural models (text, ids, fields, ...).

A config names a side's sources as a table keyed by source name; `type` picks the class and
defaults to the name:

    [models.maml.item_features]
    text = { template = "{title} ({year})" }
    genres = { type = "fields", columns = ["genres"], split = { genres = " " } }
    poster = { type = "image", column = "poster", model = "openai/clip-vit-base-patch32" }
    id = {}

A new source is one new file with a `FeatureSource` subclass plus one line in `SOURCES`.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from metarec.errors import ConfigError
from metarec.features.base import FeatureSource, Side
from metarec.features.distilled import DistilledSource
from metarec.features.fields import FieldsSource
from metarec.features.ids import IdSource
from metarec.features.image import ImageSource
from metarec.features.kg import KGSource
from metarec.features.text import TextSource
from metarec.features.tower import Tower

SOURCES: dict[str, type[FeatureSource]] = {
    "text": TextSource,
    "id": IdSource,
    "fields": FieldsSource,
    "distilled": DistilledSource,
    "kg": KGSource,
    "image": ImageSource,
}


def build_sources(spec: dict[str, dict[str, Any]] | None, side: Side,
                  text: dict[str, Any] | None = None) -> list[FeatureSource]:  # fmt: skip
    """Sources from a config table; text sources inherit the run's [text] encoder unless they set one."""
    out: list[FeatureSource] = []
    for name, params in (spec or {}).items():
        params = dict(params or {})
        kind = params.pop("type", name)
        if kind not in SOURCES:
            raise ConfigError(f"{side}_features.{name}: unknown source type {kind!r}; available: {', '.join(SOURCES)}")
        cls = SOURCES[kind]
        accepted = set(inspect.signature(cls).parameters) - {"name", "side"}
        for key in params:
            if key not in accepted:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(accepted))}"
                raise ConfigError(f"{side}_features.{name} ({kind}): unknown key '{key}'; {hint}")
        if "text" in accepted:  # language-model sources share the run's encoder
            params["text"] = {**(text or {}), **params.get("text", {})}
        out.append(cls(name=name, side=side, **params))
    return out


__all__ = [
    "SOURCES",
    "DistilledSource",
    "FeatureSource",
    "FieldsSource",
    "IdSource",
    "ImageSource",
    "KGSource",
    "TextSource",
    "Tower",
    "build_sources",
]
