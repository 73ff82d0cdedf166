"""Data sources: each returns a `Dataset`; `load_dataset` picks one from a config section."""

from __future__ import annotations

import dataclasses
from typing import Any

from metarec.data.clean import clean
from metarec.data.schema import Dataset
from metarec.data.sources import amazon, kg, movielens, synthetic, tabular
from metarec.errors import ConfigError

SOURCES = ("movielens", "amazon", "csv", "parquet", "synthetic")
CLEAN_KEYS = ("dedupe", "implicit_threshold", "min_user_interactions", "min_item_interactions")


def load_dataset(cfg: dict[str, Any]) -> Dataset:
    """Load and clean a dataset from a config's [dataset] table."""
    cfg = dict(cfg)
    source = cfg.pop("source", None)
    kg_files = (cfg.pop("kg_triples", None), cfg.pop("kg_links", None))
    cleaning = {k: cfg.pop(k) for k in CLEAN_KEYS if k in cfg}
    try:
        if source == "movielens":
            ds = movielens.load(cfg.pop("variant", "ml-100k"), path=cfg.pop("path", None))
        elif source == "amazon":
            ds = amazon.load(cfg.pop("path"), meta_path=cfg.pop("meta_path", None), name=cfg.pop("name", None))
        elif source in ("csv", "parquet"):
            ds = tabular.load(**cfg)
            cfg = {}
        elif source == "synthetic":
            ds = synthetic.make(**cfg)
            cfg = {}
        else:
            raise ConfigError(f"dataset.source must be one of {', '.join(SOURCES)}, got {source!r}")
    except KeyError as exc:
        raise ConfigError(f"dataset (source={source!r}) needs the key {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"dataset (source={source!r}): {exc}") from None
    if cfg and source not in ("csv", "parquet", "synthetic"):
        raise ConfigError(f"dataset: unknown key(s) {sorted(cfg)} for source {source!r}")
    ds = clean(ds, **cleaning)
    if kg_files[0] is not None or kg_files[1] is not None:
        if kg_files[0] is None or kg_files[1] is None:
            raise ConfigError("dataset: kg_triples and kg_links go together")
        ds = dataclasses.replace(ds, kg=kg.read_kg(kg_files[0], kg_files[1], ds.items))
    return ds
