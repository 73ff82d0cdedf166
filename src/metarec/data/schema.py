"""The one in-memory shape every source produces and every later layer consumes.

External ids (what users of the catalogue know: "196", "B000068NW5") are mapped to dense
ints once, here; everything downstream works on dense ints and maps back only for display.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec.errors import DataError

USER, ITEM, RATING, TIME = "user", "item", "rating", "timestamp"


class RowOrderWarning(UserWarning):
    """Interactions have no timestamp, so 'earliest' / 'latest' follow the file's row order."""


def time_columns(df: pd.DataFrame, key: str, what: str) -> list[str]:
    """Sort keys for time order: (key, timestamp), or (key,) with a warning naming the consequence."""
    if TIME in df.columns:
        return [key, TIME]
    warnings.warn(
        f"the interactions have no '{TIME}' column: {what} follows the file's row order; map a time column "
        "(--column timestamp=...) or use support = 'random' if row order means nothing",
        RowOrderWarning,
        stacklevel=3,
    )
    return [key]


def _ids(column: pd.Series, source: str) -> tuple[np.ndarray, pd.Index]:
    """(codes, distinct ids as strings): ids are factorised first and only the distinct values become
    strings, so 50M interaction rows never turn into 50M Python strings."""
    if column.isna().any():
        raise DataError(f"{source}: empty user or item ids in interactions")
    codes, uniques = pd.factorize(column)
    names = pd.Index(pd.Index(uniques).astype(str), dtype=object)
    if not names.is_unique:  # 7 and "7" in one column are one id, as they were read as text
        again, names = pd.factorize(names)
        codes, names = again[codes], pd.Index(names, dtype=object)
    return codes, names


def _table(table: pd.DataFrame | None, key: str, distinct: pd.Index, codes: np.ndarray, source: str,
           what: str) -> pd.DataFrame:  # fmt: skip
    """The item or user table, checked against the interactions' distinct ids (or derived from them if
    absent, in order of first appearance).

    Ids in the interactions but not in the table are an error, not a silent addition: it nearly
    always means the wrong file or the wrong column was given."""
    if table is None:
        return pd.DataFrame({key: distinct.to_numpy()})
    table = table.copy()
    table[key] = table[key].astype(str)
    dup = table[key].duplicated()
    if dup.any():
        raise DataError(f"{what}s: duplicate {what} ids, e.g. {table[key][dup].iloc[0]!r}")
    unknown = ~distinct.isin(table[key])
    if unknown.any():
        rows = int(unknown[codes].sum())
        raise DataError(
            f"{source}: {rows} interactions name {what}s not in the {what} table, "
            f"e.g. {what} {distinct[unknown][0]!r}; add them to the {what}s file or drop those rows"
        )
    return table


@dataclass(frozen=True)
class KnowledgeGraph:
    """Facts about items: `triples` (head, relation, tail entity ids) and `links` (item_id -> entity).

    Typed rather than a loose side channel so a loader, a template and a KG feature source agree on
    one shape; items without a link simply have no facts."""

    triples: pd.DataFrame
    links: pd.DataFrame
    #: what a loader read and dropped (counts), for reports; empty when nothing was checked
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for frame, cols, what in ((self.triples, ("head", "relation", "tail"), "triples"),
                                  (self.links, ("item_id", "entity"), "links")):  # fmt: skip
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise DataError(f"knowledge graph {what}: missing column(s) {missing}; have {list(frame.columns)}")


@dataclass(frozen=True)
class Dataset:
    """Interactions over a fixed catalogue of users and items.

    `interactions` has dense int columns `user`, `item` and optional `rating`, `timestamp`.
    `items` / `users` are indexed by dense id and carry the external id in `item_id` / `user_id`
    plus any text or profile fields. A split never changes the id maps, so a model trained on one
    part of a dataset scores any other part with the same indices.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    kg: KnowledgeGraph | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(
        cls,
        name: str,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        kg: KnowledgeGraph | None = None,
        source: str = "interactions",
    ) -> Dataset:
        """Build from frames keyed by external ids (`user_id`, `item_id`)."""
        for col in ("user_id", "item_id"):
            if col not in interactions.columns:
                raise DataError(
                    f"{source}: missing column '{col}' (have {list(interactions.columns)}); "
                    "map your columns with the loader's column options"
                )
        inter = interactions.reset_index(drop=True)  # columns below are assigned by position, not index label
        ucodes, udistinct = _ids(inter["user_id"], source)
        icodes, idistinct = _ids(inter["item_id"], source)
        items = _table(items, "item_id", idistinct, icodes, source, "item").reset_index(drop=True)
        users = _table(users, "user_id", udistinct, ucodes, source, "user").reset_index(drop=True)
        item_pos = pd.Index(items["item_id"]).get_indexer(idistinct).astype(np.int32)
        user_pos = pd.Index(users["user_id"]).get_indexer(udistinct).astype(np.int32)
        out = pd.DataFrame({USER: user_pos[ucodes], ITEM: item_pos[icodes]})
        if RATING in inter.columns:
            out[RATING] = pd.to_numeric(inter[RATING], errors="raise").astype(np.float32)
        if TIME in inter.columns:
            out[TIME] = pd.to_numeric(inter[TIME], errors="raise").astype(np.int64)
        for col in inter.columns:  # keep extra columns (review text, predefined split, ...)
            if col not in out.columns and col not in ("user_id", "item_id"):
                out[col] = inter[col].to_numpy()
        return cls(name, out.reset_index(drop=True), items, users, kg)

    def item_domains(self) -> np.ndarray | None:
        """Each item's domain (the catalogue it belongs to: a loader's `domain` column), or None without one."""
        return None if "domain" not in self.items.columns else self.items["domain"].astype(str).to_numpy()

    def with_interactions(self, interactions: pd.DataFrame, name: str | None = None) -> Dataset:
        """Same catalogue and id maps, other interactions (a split, a cleaned copy)."""
        return replace(self, interactions=interactions.reset_index(drop=True), name=name or self.name)

    # ------------------------------------------------------------------ views
    def items_with_facts(self) -> np.ndarray:
        """Per item (dense id), whether its linked entity heads at least one triple of the graph."""
        if self.kg is None:
            return np.zeros(self.n_items, bool)
        link = dict(zip(self.kg.links["item_id"].astype(str), self.kg.links["entity"].astype(str), strict=False))
        heads = set(self.kg.triples["head"].astype(str))
        return np.array([link.get(i) in heads for i in self.items["item_id"].astype(str)], bool)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_ratings(self) -> bool:
        return RATING in self.interactions.columns

    @property
    def has_timestamps(self) -> bool:
        return TIME in self.interactions.columns

    def matrix(self, users: np.ndarray | None = None, binary: bool = True) -> sp.csr_matrix:
        """User x item CSR matrix (rows = all users, or `users` in that order)."""
        df = self.interactions
        data = np.ones(len(df), dtype=np.float32) if binary or not self.has_ratings else df[RATING].to_numpy(np.float32)
        m = sp.csr_matrix((data, (df[USER].to_numpy(), df[ITEM].to_numpy())), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m if users is None else m[users]

    def external_interactions(self) -> pd.DataFrame:
        """The interactions keyed by external ids (`user_id`, `item_id`) with every other column: the shape
        `from_frames` reads, for writing a dataset out or rebuilding it without some users."""
        inter = self.interactions
        out = pd.DataFrame({"user_id": self.users["user_id"].to_numpy()[inter[USER].to_numpy()],
                            "item_id": self.items["item_id"].to_numpy()[inter[ITEM].to_numpy()]})  # fmt: skip
        for col in inter.columns:
            if col not in (USER, ITEM):
                out[col] = inter[col].to_numpy()
        return out

    def user_ids(self, dense: Iterable[int]) -> list[str]:
        return self.users["user_id"].to_numpy()[np.asarray(list(dense), dtype=np.int64)].tolist()

    def item_ids(self, dense: Iterable[int]) -> list[str]:
        return self.items["item_id"].to_numpy()[np.asarray(list(dense), dtype=np.int64)].tolist()

    def user_index(self, external: str) -> int:
        hits = np.flatnonzero(self.users["user_id"].to_numpy() == str(external))
        if len(hits) == 0:
            raise KeyError(f"unknown user id {external!r} in dataset {self.name}")
        return int(hits[0])

    def fingerprint(self) -> str:
        """Content hash of interactions + catalogue ids: ties artefacts and results to their data."""
        h = hashlib.sha256()
        cols = [c for c in (USER, ITEM, RATING, TIME) if c in self.interactions.columns]
        h.update(pd.util.hash_pandas_object(self.interactions[cols], index=False).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(self.items["item_id"], index=False).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(self.users["user_id"], index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        n = len(self.interactions)
        out: dict[str, Any] = {
            "name": self.name,
            "interactions": n,
            "users": self.n_users,
            "items": self.n_items,
            "active_users": int(self.interactions[USER].nunique()),
            "active_items": int(self.interactions[ITEM].nunique()),
            "density": n / max(1, self.n_users * self.n_items),
            "item_fields": [c for c in self.items.columns if c != "item_id"],
            "user_fields": [c for c in self.users.columns if c != "user_id"],
            "has_ratings": self.has_ratings,
            "has_timestamps": self.has_timestamps,
            "fingerprint": self.fingerprint(),
        }
        if self.has_ratings:
            out["rating_mean"] = float(self.interactions[RATING].mean())
        if self.kg is not None:
            out["kg_triples"] = len(self.kg.triples)
            out["kg_relations"] = int(self.kg.triples["relation"].nunique())
            linked = self.kg.links["item_id"].astype(str).isin(set(self.items["item_id"].astype(str)))
            out["kg_linked_items"] = int(linked.sum())
            with_facts = self.kg.links.loc[linked, "entity"].isin(set(self.kg.triples["head"]))
            out["kg_items_with_facts"] = int(with_facts.sum())
            if self.kg.report:
                out["kg_dropped"] = {k: v for k, v in self.kg.report.items() if k.startswith(("triples_", "links_"))
                                     and k not in ("triples_read", "links_read") and v}  # fmt: skip
        return out
