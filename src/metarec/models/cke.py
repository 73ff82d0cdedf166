"""CKE (Zhang et al., KDD 2016): matrix factorisation whose item vectors include a knowledge-graph embedding.

The knowledge-graph baseline the KG feature source is measured against. An item's vector is
v_i = eta_i + e_i: a collaborative offset plus the embedding of its linked entity, and the two are
trained jointly: BPR on the interactions and TransE's margin loss (h + r ~ t) on the graph, sharing
e. (The paper's structural part is TransR; TransE, as the issue names it, keeps one space.) An item
with no interactions keeps eta_i = 0 (it is never a positive, and negatives are drawn from trained
items only), so a new linked item is scored by its entity alone: the KG's launch-day path.

A new user is folded in by the implicit-ALS step with item vectors fixed (confidence on the support
items, a weak zero target on all others), one batched solve per chunk of users.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from metarec.data.schema import ITEM, USER, Dataset
from metarec.errors import ConfigError, DataError
from metarec.models.base import Recommender, UserState


class CKERecommender(Recommender):
    name = "cke"
    supports_cold_items = True  # linked new items are scored through their entity; unlinked ones score 0

    def __init__(self, dim: int = 64, epochs: int = 30, lr: float = 1e-2, batch_size: int = 8192,
                 kg_weight: float = 1.0, margin: float = 1.0, reg: float = 1e-5, fold_in_reg: float = 0.1,
                 threads: int = 0, seed: int = 0) -> None:  # fmt: skip
        super().__init__(seed)
        if dim < 1 or epochs < 0 or batch_size < 1 or lr <= 0 or kg_weight < 0:
            raise ConfigError("cke: need dim, batch_size >= 1, epochs >= 0, lr > 0, kg_weight >= 0")
        self.dim, self.epochs, self.lr, self.batch_size = dim, epochs, lr, batch_size
        self.kg_weight, self.margin, self.reg, self.fold_in_reg, self.threads = (
            kg_weight,
            margin,
            reg,
            fold_in_reg,
            threads,
        )

    def _graph(self, train: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(triples as ints (n, 3), item -> entity row or -1, [number of entities, number of relations])."""
        if train.kg is None:
            raise DataError(f"cke: dataset {train.name} has no knowledge graph; set [dataset] kg_triples and kg_links")
        t = train.kg.triples[["head", "relation", "tail"]].astype(str)
        ents = pd.Index(pd.unique(pd.concat([t["head"], t["tail"], train.kg.links["entity"].astype(str)])))
        rels = pd.Index(pd.unique(t["relation"]))
        triples = np.column_stack([ents.get_indexer(pd.Index(t["head"])), rels.get_indexer(pd.Index(t["relation"])),
                                   ents.get_indexer(pd.Index(t["tail"]))]).astype(np.int64)  # fmt: skip
        link = dict(zip(train.kg.links["item_id"].astype(str), train.kg.links["entity"].astype(str), strict=True))
        item_ent = ents.get_indexer([link.get(str(i), "\x00none") for i in train.items["item_id"]])
        return triples, item_ent.astype(np.int64), np.array([len(ents), len(rels)])

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(self.seed)
        triples, item_ent, (n_ent, n_rel) = self._graph(train)
        d = self.dim
        U = (torch.randn(train.n_users, d, generator=g) * 0.1).requires_grad_()
        eta = torch.zeros(train.n_items, d, requires_grad=True)
        E = (torch.randn(n_ent, d, generator=g) * d**-0.5).requires_grad_()
        R = (torch.randn(n_rel, d, generator=g) * d**-0.5).requires_grad_()
        ie = torch.from_numpy(item_ent)
        linked = ie >= 0
        pairs = train.interactions[[USER, ITEM]].drop_duplicates().to_numpy(np.int64, copy=True)
        pos = torch.from_numpy(pairs)
        warm = torch.from_numpy(np.unique(pairs[:, 1]))
        kg = torch.from_numpy(triples)
        opt = torch.optim.Adam([U, eta, E, R], lr=self.lr)

        def items(idx: torch.Tensor) -> torch.Tensor:
            return eta[idx] + E[ie[idx].clamp(min=0)] * linked[idx, None]

        losses = []
        n_batches = max(1, len(pos) // self.batch_size)
        for _epoch in range(self.epochs):
            order = torch.randperm(len(pos), generator=g)
            kg_order = torch.randperm(len(kg), generator=g)
            kg_size = max(1, len(kg) // n_batches)
            total = 0.0
            for b in range(n_batches):
                batch = pos[order[b * self.batch_size : (b + 1) * self.batch_size]]
                u, i = batch[:, 0], batch[:, 1]
                j = warm[torch.randint(len(warm), (len(batch),), generator=g)]
                vu, vi, vj = U[u], items(i), items(j)
                bpr = -torch.nn.functional.logsigmoid((vu * (vi - vj)).sum(1)).mean()
                loss = bpr + self.reg * (vu.square().sum() + vi.square().sum() + vj.square().sum()) / len(batch)
                if self.kg_weight:
                    h, r, t = kg[kg_order[b * kg_size : (b + 1) * kg_size]].T
                    t_neg = torch.randint(int(n_ent), (len(h),), generator=g)
                    d_pos = (E[h] + R[r] - E[t]).norm(dim=1)
                    d_neg = (E[h] + R[r] - E[t_neg]).norm(dim=1)
                    loss = loss + self.kg_weight * torch.relu(self.margin + d_pos - d_neg).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
            losses.append(total / n_batches)
        with torch.no_grad():
            self.user_factors_ = U.detach().numpy().astype(np.float32)
            self.item_factors_ = items(torch.arange(train.n_items)).numpy().astype(np.float32)
        self.fit_info_ = {"train_seconds": time.perf_counter() - t0, "losses": losses,
                          "linked_items": int(linked.sum()), "entities": int(n_ent)}  # fmt: skip

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.user_factors_, self.item_factors_ = arrays["user_factors"], arrays["item_factors"]

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        h = history.tocsr().astype(np.float32)
        if known and users is not None:
            return UserState(h, self.user_factors_[users])
        V = self.item_factors_.astype(np.float64)
        gram = V.T @ V * 0.01 + self.fold_in_reg * np.eye(V.shape[1])  # weak zero target on every item
        out = []
        for s in range(0, h.shape[0], 256):  # bounded memory: 256 users' (dim x dim) systems at a time
            dense = (h[s : s + 256].toarray() > 0).astype(np.float64)
            # V_S^T V_S per user as one einsum over the support mask, then one batched solve
            A = gram[None] + np.einsum("ui,id,ie->ude", dense, V, V, optimize=True)
            out.append(np.linalg.solve(A, (dense @ V)[..., None])[..., 0])
        u = np.concatenate(out) if out else np.zeros((0, V.shape[1]))
        return UserState(h, u.astype(np.float32))

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        V = self.item_factors_ if items is None else self.item_factors_[items]
        return state.payload @ V.T
