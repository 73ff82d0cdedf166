"""Item warm-up: a new item's vector moves toward its first users (MWUF / MetaEmb style).

On launch day an item is known by its features only (e_i = sum_s X_si W_s). Once its first users
arrive, *who* they are says more than how many: the item's vector is shifted toward their adapted
user vectors, and its bias learns from their count,

    t_i = mean_{a in A_i} h_a                   (A_i: early adopters, h_a: their adapted final vectors)
    e_i <- s e_i + g_i W_warm t_i,    b_i <- s b_i + beta log(1 + n_i) + c,    g_i = n_i / (n_i + kappa)

so a user scores the item by how much they look like its early adopters (h . W t_i), in the space
the network learned for users; s = exp(warm_s) sets how far the features still count once users
speak. W_warm, kappa, beta, c and s are learned in a second phase with the base network frozen (as
MWUF and MetaEmb do), on simulated launches: a share of the training items is kept from the base
network, their earliest users play the early adopters (adapted on histories without those items, as
a real new item is in nobody's history), and known users rank the launch items they used among the
launch items, adopters' own interactions excluded, every user weighing the same. At evaluation the
real cold items' revealed early adopters take that place. One sparse-dense product pools all items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from metarec.data.schema import ITEM, USER, Dataset
from metarec.data.splits import reveal_earliest
from metarec.meta.scorer import Params


def init_item_warmup(dim: int) -> Params:
    """No shift, a unit slope on log counts, features at full weight: training starts from the
    launch-day model plus the early adopters' count."""
    return {"warm_W": torch.zeros(dim, dim), "warm_kappa": torch.tensor(1.0), "warm_beta": torch.tensor(1.0),
            "warm_c": torch.tensor(0.0), "warm_s": torch.tensor(0.0)}  # fmt: skip


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    n = np.asarray(m.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(n, 1.0)) @ m)


def _torch_sparse(m: sp.csr_matrix) -> torch.Tensor:
    coo = m.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(coo.data.astype(np.float32)), coo.shape, check_invariants=True
    ).coalesce()


class Adopters:
    """Which users adopted which items first: `reveal` is items x users (1 = early adopter)."""

    def __init__(self, reveal: sp.csr_matrix) -> None:
        reveal = sp.csr_matrix(reveal, dtype=np.float32)
        reveal.data[:] = 1.0
        self.reveal = reveal
        self.count = torch.from_numpy(np.asarray(reveal.sum(axis=1), np.float32).ravel())
        self._mean = _torch_sparse(_row_normalised(reveal))

    def taste(self, users: torch.Tensor) -> torch.Tensor:
        """Mean adopter vector t_i of every item (zero rows for items without adopters)."""
        return torch.sparse.mm(self._mean, users.detach())

    def query_mask(self, users: np.ndarray, items: torch.Tensor) -> np.ndarray:
        """(len(users), n_items) 1 where user u revealed item i and i is playing a new item."""
        rows = self.reveal[:, users].T.toarray()
        return rows * items.numpy()[None, :]


def reveal_matrix(rows: pd.DataFrame, n_items: int, n_users: int) -> sp.csr_matrix:
    """items x users, 1 where the user is among the item's revealed early adopters."""
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows[ITEM].to_numpy(), rows[USER].to_numpy())),
                         shape=(n_items, n_users))  # fmt: skip


def earliest_adopters(train: Dataset, share: float) -> sp.csr_matrix:
    """Simulated launches: every training item's earliest `share` of users (at least one, never all),
    in time order, by the same rule the cold-item split reveals real early adopters with."""
    rows, _ = reveal_earliest(train.interactions.drop_duplicates([USER, ITEM]), share)
    return reveal_matrix(rows, train.n_items, train.n_users)


def apply_warmup(theta: Params, E: torch.Tensor, b: torch.Tensor, taste: torch.Tensor, count: torch.Tensor,
                 new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The warmed-up item table: rows where `new` (0/1) is set and adopters exist move (see module doc)."""
    on = new * (count > 0).to(E.dtype)
    gate = on * count / (count + torch.nn.functional.softplus(theta["warm_kappa"]))
    trust = 1.0 + on * (torch.exp(theta["warm_s"]) - 1.0)  # how far the features still count, once users speak
    E = trust[:, None] * E + gate[:, None] * (taste @ theta["warm_W"].T)
    b = trust * b + on * (theta["warm_beta"] * torch.log1p(count) + theta["warm_c"])
    return E, b


__all__ = ["Adopters", "apply_warmup", "earliest_adopters", "init_item_warmup", "reveal_matrix"]
