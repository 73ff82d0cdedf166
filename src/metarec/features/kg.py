"""Knowledge-graph embeddings as an item feature source: a new film has a director before it has a viewer.

The dataset's graph (`Dataset.kg`: head / relation / tail triples and item -> entity links) is
embedded by PyKEEN (TransE, DistMult, RotatE or any model PyKEEN knows by name), trained with its
own stochastic local closed-world loop. An item's row is its linked entity's vector plus a 0/1
"has facts" column, so the model can tell "no facts" from "facts near the origin"; an unlinked item
gets zeros. A cold item that is linked gets its vector on launch day: the graph never needed an
interaction.

`interactions = true` adds the fold's training interactions as (user, "interacted", item) triples
(the collaborative knowledge graph of KGAT): warm items' entities are then placed by who used them
as well as by their facts, and a cold item's entity is pulled toward the warm items it shares a
director or actors with. Only training rows are read, never a test user's.

Vectors are cached under `~/.cache/metarec/kg/` by a hash of the triples and the hyper-parameters,
so the five folds of a cold-item protocol (same graph, no interactions) train once.

    [models.maml.item_features]
    kg = { model = "TransE", dim = 64, epochs = 40 }
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from metarec.data.schema import ITEM, USER, Dataset
from metarec.errors import ConfigError, DataError
from metarec.features.base import FeatureSource, Side
from metarec.utils import metarec_home, require

INTERACTED = "metarec:interacted"


def kg_home() -> Path:
    return metarec_home() / "kg"


class KGSource(FeatureSource):
    kind = "kg"

    def __init__(
        self,
        name: str = "kg",
        side: Side = "item",
        model: str = "TransE",
        dim: int = 64,
        epochs: int = 40,
        batch_size: int = 4096,
        lr: float = 0.01,
        negatives: int = 1,
        interactions: bool = False,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        super().__init__(name, side)
        if side != "item":
            raise ConfigError(f"feature source {name!r} (kg): the knowledge graph links items; it applies to items")
        if dim < 1 or epochs < 1 or batch_size < 1 or negatives < 1 or lr <= 0:
            raise ConfigError(f"feature source {name!r} (kg): need dim, epochs, batch_size, negatives >= 1 and lr > 0")
        self.model, self.dim, self.epochs, self.batch_size, self.lr = model, dim, epochs, batch_size, lr
        self.negatives, self.interactions, self.seed, self.num_threads = negatives, interactions, seed, num_threads
        self.vectors_: dict[str, np.ndarray] = {}
        self.fit_info_: dict[str, Any] = {}

    # ------------------------------------------------------------------ graph
    def triples(self, train: Dataset) -> tuple[np.ndarray, pd.DataFrame]:
        """(labelled triples, item links) to embed: the graph, plus training interactions if asked."""
        if train.kg is None:
            raise DataError(
                f"feature source {self.name!r} (kg): dataset {train.name} has no knowledge graph; set "
                "[dataset] kg_triples and kg_links (ml-100k ships Freebase's: `metarec data fetch ml-100k`)"
            )
        kg = train.kg
        links = kg.links.assign(item_id=kg.links["item_id"].astype(str), entity=kg.links["entity"].astype(str))
        parts = [kg.triples[["head", "relation", "tail"]].astype(str).to_numpy()]
        if self.interactions:
            ent = dict(zip(links["item_id"], links["entity"], strict=True))
            item_ids = train.items["item_id"].astype(str).to_numpy()
            inter = train.interactions[[USER, ITEM]].drop_duplicates()
            item_ent = np.array([ent.get(i, f"item:{i}") for i in item_ids], dtype=object)
            user_ids = train.users["user_id"].astype(str).to_numpy()
            heads = ("user:" + pd.Series(user_ids[inter[USER].to_numpy()], dtype=str)).to_numpy(object)
            extra = np.column_stack([heads.astype(object), np.full(len(inter), INTERACTED, dtype=object),
                                     item_ent[inter[ITEM].to_numpy()]])  # fmt: skip
            parts.append(extra)
        return np.vstack(parts), links

    def _key(self, triples: np.ndarray) -> str:
        h = hashlib.sha256()
        h.update(repr((self.model, self.dim, self.epochs, self.batch_size, self.lr, self.negatives,
                       self.seed)).encode())  # fmt: skip
        h.update("\x1f".join(triples.ravel().tolist()).encode())
        return h.hexdigest()[:16]

    def train_embeddings(self, triples: np.ndarray) -> tuple[np.ndarray, dict[str, int], dict[str, Any]]:
        """(entity vectors, entity -> row, info) from PyKEEN; the one slow step, cached on disk."""
        key = self._key(triples)
        path = kg_home() / f"{self.model.lower()}-{key}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                labels = z["labels"].tolist()
                return z["vectors"], {e: i for i, e in enumerate(labels)}, {"cached": True, **_info(z)}
        require("pykeen", "kg")
        import torch
        from pykeen.models import model_resolver
        from pykeen.training import SLCWATrainingLoop
        from pykeen.triples import TriplesFactory

        threads = self.num_threads or torch.get_num_threads()
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        try:
            torch.manual_seed(self.seed)  # initialisation and the negative sampler's draws
            tf = TriplesFactory.from_labeled_triples(triples, create_inverse_triples=False)
            try:
                model = model_resolver.make(self.model, triples_factory=tf, embedding_dim=self.dim,
                                            random_seed=self.seed)  # fmt: skip
            except (KeyError, ValueError) as exc:
                raise ConfigError(f"feature source {self.name!r} (kg): PyKEEN has no model {self.model!r} "
                                  f"({exc}); try TransE, DistMult or RotatE") from None  # fmt: skip
            optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
            loop = SLCWATrainingLoop(model=model, triples_factory=tf, optimizer=optimizer,
                                     negative_sampler_kwargs={"num_negs_per_pos": self.negatives})  # fmt: skip
            losses = loop.train(triples_factory=tf, num_epochs=self.epochs, batch_size=self.batch_size,
                                use_tqdm=False, num_workers=0)  # fmt: skip
            assert losses is not None
            with torch.no_grad():
                emb = model.entity_representations[0](indices=None).detach()  # type: ignore[index,operator]
            if emb.is_complex():  # RotatE: real and imaginary parts side by side
                emb = torch.view_as_real(emb).flatten(1)
            vectors = emb.numpy().astype(np.float32)
        finally:
            torch.set_num_threads(before)
        seconds = time.perf_counter() - t0
        labels = [tf.entity_id_to_label[i] for i in range(tf.num_entities)]
        info = {"seconds": seconds, "first_loss": float(losses[0]), "last_loss": float(losses[-1]),
                "entities": tf.num_entities, "relations": tf.num_relations, "triples": tf.num_triples}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, vectors=vectors, labels=np.asarray(labels, dtype=str),
                 info=np.asarray([info[k] for k in _INFO], np.float64))  # fmt: skip
        tmp.replace(path)  # a reader never sees half a file
        return vectors, {e: i for i, e in enumerate(labels)}, {"cached": False, **info}

    # ------------------------------------------------------------------ source
    def fit(self, train: Dataset, revealed: pd.DataFrame | None = None) -> Self:
        triples, links = self.triples(train)
        vectors, row_of, info = self.train_embeddings(triples)
        scale = float(np.sqrt((vectors**2).sum(1).mean())) or 1.0  # unit mean norm: comparable to other sources
        self.vectors_ = {
            item: vectors[row_of[ent]] / scale for item, ent in zip(links["item_id"], links["entity"], strict=True)
            if ent in row_of
        }  # fmt: skip
        self.dim_ = vectors.shape[1] + 1
        item_ids = train.items["item_id"].astype(str)
        self.fit_info_ = {**info, "linked_items": int(item_ids.isin(list(self.vectors_)).sum()),
                          "items": len(item_ids)}  # fmt: skip
        return self

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(records), self.dim_), np.float32)
        if not self.vectors_ or "item_id" not in records.columns:
            return out
        ids = records["item_id"].astype(str).to_numpy()
        have = np.array([i in self.vectors_ for i in ids], bool)
        if have.any():
            out[have, :-1] = np.stack([self.vectors_[i] for i in ids[have]])
            out[have, -1] = 1.0
        return out

    def get_state(self) -> dict[str, Any]:
        return {"dim": self.dim_, "items": list(self.vectors_),
                "vectors": np.stack(list(self.vectors_.values())).round(6).tolist() if self.vectors_ else [],
                "fit_info": self.fit_info_}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        vectors = np.asarray(state["vectors"], np.float32)
        self.vectors_ = dict(zip(state["items"], vectors, strict=True))
        self.fit_info_ = dict(state.get("fit_info", {}))


_INFO = ("seconds", "first_loss", "last_loss", "entities", "relations", "triples")


def _info(z: Any) -> dict[str, Any]:
    return dict(zip(_INFO, z["info"].tolist(), strict=True)) if "info" in z else {}
