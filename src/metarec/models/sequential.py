"""Next-item recommenders that read a user's history in order: SASRec (attention) and GRU4Rec (recurrent).

SASRec (Kang & McAuley, 2018): a causal transformer over the user's last `max_len` items predicts
the next one at every position; GRU4Rec (Hidasi et al., 2016) does the same with a GRU. Both are
trained with a full softmax over the catalogue (cross-entropy at every position: on catalogues of
thousands of items it beats the original's one sampled negative, and costs one matrix product), on
every window of `max_len` of every user's training sequence, not only the last one.

The item table comes from the feature sources, as in the meta model: `item_features = { id = {} }`
(the default) is SASRec's embedding table; add `text = { template = "{title}" }` and an item nobody
has used yet still has a vector (its ID part stays zero until it is trained on), so the model can
recommend new items. The table is tied: it embeds the inputs and scores the outputs.

Order is carried in the history matrix itself: `fold_in` reads `history.data` as time positions
(larger = later; `EvalTask.history_order` builds them), so the one Recommender interface serves
order-aware and order-free models alike. `attention(history)` exposes what the last layer of SASRec
attended to when it scored the next item, for explanations ("because you just watched ...").

Early stopping reads the fold's `valid` rows (in the next-item protocol, every user's second-to-last
item) scored from the training sequence; without them each user's last training item is held out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from metarec.data.schema import ITEM, USER, Dataset
from metarec.data.splits import order_matrix, order_rows
from metarec.errors import ConfigError
from metarec.features import Tower, build_sources
from metarec.models.base import Recommender, UserState
from metarec.training.callbacks import EarlyStopping
from metarec.training.trainer import Trainer

ENCODERS = ("attention", "gru")


def last_items(history: sp.csr_matrix, max_len: int) -> np.ndarray:
    """(n_rows, max_len) item ids + 1, right-aligned (0 = padding), from positions in `history.data`;
    vectorised over all rows at once."""
    h = history.tocsr()
    n = h.shape[0]
    row = np.repeat(np.arange(n), np.diff(h.indptr))
    order = np.lexsort((h.indices, h.data, row))  # by row, then time position (ties: item id)
    row, item = row[order], h.indices[order]
    ends = h.indptr[1:][row]  # one past each row's last entry
    from_end = ends - 1 - np.arange(len(row))  # 0 = the latest item
    keep = from_end < max_len
    out = np.zeros((n, max_len), np.int64)
    out[row[keep], max_len - 1 - from_end[keep]] = item[keep] + 1
    return out


class _Block(nn.Module):
    """Pre-norm transformer block whose attention weights can be read out."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        h = self.ln1(x)
        a, w = self.attn(h, h, h, attn_mask=mask, need_weights=weights, average_attn_weights=True)
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.ln2(x))), w


class _SequenceNet(nn.Module):
    def __init__(self, encoder: str, n_items: int, dims: dict[str, int], learned_ids: bool, dim: int, layers: int,
                 heads: int, max_len: int, dropout: float) -> None:  # fmt: skip
        super().__init__()
        self.encoder, self.heads, self.max_len = encoder, heads, max_len
        self.ids = nn.Embedding(n_items, dim) if learned_ids else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=dim**-0.5)
        self.proj = nn.ModuleDict({k: nn.Linear(d, dim, bias=False) for k, d in dims.items() if d})
        self.drop = nn.Dropout(dropout)
        self.out_ln = nn.LayerNorm(dim)
        if encoder == "attention":
            self.pos = nn.Embedding(max_len, dim)
            self.blocks = nn.ModuleList([_Block(dim, heads, dropout) for _ in range(layers)])
        else:
            self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

    def items(self, feats: dict[str, torch.Tensor], warm: torch.Tensor) -> torch.Tensor:
        """The (n_items, dim) table: ID embeddings (items seen in training only) + projected features."""
        parts = [self.proj[k](v) for k, v in feats.items() if k in self.proj]
        if self.ids is not None:
            parts.append(self.ids.weight * warm[:, None])
        return torch.stack(parts).sum(0)

    def forward(self, seq: torch.Tensor, table: torch.Tensor, weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """Hidden states (B, L, dim) for right-aligned `seq` (item + 1, 0 = padding); with `weights`, the
        last block's attention of the final position over the L inputs (B, L)."""
        pad = seq == 0
        x = torch.cat([torch.zeros(1, table.shape[1]), table])[seq] * math.sqrt(table.shape[1])
        w_last = None
        if self.encoder == "attention":
            x = self.drop(x + self.pos.weight[None, -seq.shape[1] :])
            L = seq.shape[1]
            causal = torch.ones(L, L, dtype=torch.bool).tril()
            allowed = causal[None] & ~pad[:, None, :]
            allowed |= torch.eye(L, dtype=torch.bool)[None]  # a padding position attends to itself (no NaN)
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
            mask = mask.repeat_interleave(self.heads, 0)
            for i, block in enumerate(self.blocks):
                x, w = block(x, mask, weights and i == len(self.blocks) - 1)
                if w is not None:
                    w_last = w[:, -1]
        else:
            x, _ = self.gru(self.drop(x))
        return self.out_ln(x), w_last


class _Step:
    """TrainStep: windows of every user's training sequence, full-softmax next-item loss."""

    def __init__(self, model: SequentialRecommender, inputs: np.ndarray, targets: np.ndarray) -> None:
        self.m = model
        self.inputs, self.targets = torch.from_numpy(inputs), torch.from_numpy(targets)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.m.net_.parameters())

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(self.m.seed * 1000 + epoch)
        perm = torch.randperm(len(self.inputs), generator=g)
        self.m.net_.train()
        yield from perm.split(self.m.batch_size)

    def loss(self, batch: torch.Tensor, index: int, epoch: int) -> torch.Tensor:
        net = self.m.net_
        table = net.items(self.m.tower_.rows(), self.m.warm_)
        h, _ = net(self.inputs[batch], table)
        tgt = self.targets[batch]
        keep = tgt > 0
        logits = h[keep] @ table.T
        return nn.functional.cross_entropy(logits, tgt[keep] - 1)

    def after_update(self) -> None:
        return None

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.m.net_.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.m.net_.load_state_dict(state, strict=False)


class SequentialRecommender(Recommender):
    name = "sequential"
    #: `fold_in` reads `history.data` as time positions (evaluation passes `EvalTask.history_order`)
    reads_order = True

    def __init__(
        self,
        encoder: str = "attention",
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        max_len: int = 50,
        dropout: float = 0.2,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        patience: int = 10,
        item_features: dict[str, dict[str, Any]] | None = None,
        text: dict[str, Any] | None = None,
        threads: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if encoder not in ENCODERS:
            raise ConfigError(f"{self.name}: encoder must be one of {ENCODERS}, got {encoder!r}")
        if dim < 1 or layers < 1 or max_len < 2 or batch_size < 1 or epochs < 0:
            raise ConfigError(f"{self.name}: need dim, layers, batch_size >= 1, max_len >= 2, epochs >= 0")
        if encoder == "attention" and dim % heads:
            raise ConfigError(f"{self.name}: dim ({dim}) must be a multiple of heads ({heads})")
        if not 0 <= dropout < 1:
            raise ConfigError(f"{self.name}: dropout must be in [0, 1), got {dropout}")
        self.encoder, self.dim, self.layers, self.heads, self.max_len = encoder, dim, layers, heads, max_len
        self.dropout, self.epochs, self.lr, self.weight_decay = dropout, epochs, lr, weight_decay
        self.batch_size, self.patience, self.item_features, self.text = batch_size, patience, item_features, text
        self.threads = threads
        # known before fit (the experiment skips launch-day folds for an ID-only model): any content source
        self.supports_cold_items = any((v or {}).get("type", k) != "id" for k, v in (item_features or {}).items())

    # ------------------------------------------------------------------ data
    def windows(self, inter: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each (n_windows, max_len), item + 1 with 0 = padding, right-aligned: every
        interaction with a predecessor is a target once, its predecessor the input at the same slot."""
        df = order_rows(inter)
        users, items = df[USER].to_numpy(), df[ITEM].to_numpy()
        pos = df.groupby(USER, sort=False).cumcount().to_numpy()
        n = df.groupby(USER, sort=False)[ITEM].transform("size").to_numpy()
        t = np.flatnonzero(pos >= 1)  # targets
        from_end = (n - 1 - pos)[t]
        window = from_end // self.max_len
        col = self.max_len - 1 - from_end % self.max_len
        key = users[t].astype(np.int64) * (int(window.max(initial=0)) + 1) + window
        _, row = np.unique(key, return_inverse=True)
        inputs = np.zeros((row.max(initial=-1) + 1, self.max_len), np.int64)
        targets = np.zeros_like(inputs)
        inputs[row, col] = items[t - 1] + 1
        targets[row, col] = items[t] + 1
        return inputs, targets

    # ------------------------------------------------------------------ fit
    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        t0 = time.perf_counter()
        inter = train.interactions
        if valid is None or not len(valid):  # hold out each user's latest training item for early stopping
            ordered = order_rows(inter)
            last = ordered.groupby(USER, sort=False).tail(1)
            last = last[ordered.groupby(USER, sort=False)[ITEM].transform("size").loc[last.index] >= 2]
            inter, valid = ordered.drop(last.index), last
        spec = {"id": {}} if self.item_features is None else self.item_features
        self.tower_ = Tower(build_sources(spec, "item", self.text)).fit(train.with_interactions(inter), revealed)
        self.supports_cold_items = bool(self.tower_.dense)
        counts = np.bincount(inter[ITEM].to_numpy(), minlength=train.n_items)
        self.warm_ = torch.from_numpy((counts > 0).astype(np.float32))
        self.net_ = _SequenceNet(self.encoder, train.n_items, self.tower_.dims, self.tower_.learned_table, self.dim,
                                 self.layers, self.heads, self.max_len, self.dropout)  # fmt: skip
        self.order_ = order_matrix(train.interactions, train.n_users, train.n_items)  # what `score` reads
        inputs, targets = self.windows(inter)
        vusers = np.unique(valid[USER].to_numpy())
        vtarget = sp.csr_matrix((np.ones(len(valid), np.float32),
                                 (np.searchsorted(vusers, valid[USER].to_numpy()), valid[ITEM].to_numpy())),
                                shape=(len(vusers), train.n_items))  # fmt: skip
        vhist = order_matrix(inter, train.n_users, train.n_items)[vusers]
        early = EarlyStopping(lambda: self._valid_ndcg(vhist, vtarget), self.patience, monitor="valid_ndcg@10")
        trainer = Trainer(self.epochs, self.lr, self.weight_decay, [early])
        result = trainer.fit(_Step(self, inputs, targets))
        self.net_.eval()
        self._cache_items()
        self.fit_info_ = {"best_valid_ndcg@10": float(early.best_score), "best_epoch": early.best_epoch,
                          "epochs": result.epochs_run, "windows": len(inputs),
                          "train_seconds": time.perf_counter() - t0, "history": result.history}  # fmt: skip

    def _cache_items(self) -> None:
        with torch.no_grad():
            self.table_ = self.net_.items(self.tower_.rows(), self.warm_)

    @torch.no_grad()
    def _valid_ndcg(self, history: sp.csr_matrix, target: sp.csr_matrix) -> float:
        self.net_.eval()
        self._cache_items()
        scores = self._encode(history) @ self.table_.numpy().T
        scores[history.nonzero()] = -np.inf
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
        hits = np.take_along_axis(target.toarray() > 0, top, 1)
        gains = (hits / np.log2(np.arange(2, 12))).sum(1)
        ideal = np.array([(1 / np.log2(np.arange(2, 2 + min(int(n), 10)))).sum() for n in target.getnnz(1)])
        return float(np.mean(gains / np.maximum(ideal, 1e-12)))

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _encode(self, history: sp.csr_matrix, chunk: int = 1024) -> np.ndarray:
        seq = torch.from_numpy(last_items(history, self.max_len))
        out = [self.net_(seq[s : s + chunk], self.table_)[0][:, -1] for s in range(0, len(seq), chunk)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), np.float32)

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        h = history.tocsr().astype(np.float32)
        return UserState(h, self._encode(h))

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        table = self.table_.numpy()
        return state.payload @ (table if items is None else table[items]).T

    def _known_history(self, users: np.ndarray | list[int]) -> sp.csr_matrix:
        return self.order_[users]  # training users in time order (`score`, `recommend`)

    def adapt(self, support: pd.DataFrame, profile_text: str | None = None) -> UserState:
        """A new user's state from their items in the order given (or by `timestamp` when present)."""
        self._check_fitted()
        df = support.assign(**{USER: 0})
        return self.fold_in(order_matrix(df, 1, self.n_items_), None, known=False)

    @torch.no_grad()
    def attention(self, history: sp.csr_matrix) -> list[list[tuple[int, float]]]:
        """Per user, the items the last attention layer weighed when scoring the next item, heaviest first
        (item id, weight; weights sum to 1 over the user's last `max_len` items)."""
        if self.encoder != "attention":
            raise ConfigError(f"{self.name}: attention weights exist for encoder = 'attention' only")
        seq = torch.from_numpy(last_items(history.tocsr(), self.max_len))
        _, w = self.net_(seq, self.table_, weights=True)
        assert w is not None
        out = []
        for s, ws in zip(seq.numpy(), w.numpy(), strict=True):
            keep = s > 0
            pairs = sorted(zip((s[keep] - 1).tolist(), ws[keep].tolist(), strict=True), key=lambda p: -p[1])
            out.append([(int(i), float(x)) for i, x in pairs])
        return out

    # ------------------------------------------------------------------ state
    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"net.{k}": v.numpy() for k, v in self.net_.state_dict().items()}
        feats, sources = self.tower_.state()
        arrays.update({f"feat.{k}": v for k, v in feats.items()})
        arrays["warm"] = self.warm_.numpy()
        o = self.order_
        arrays.update({"order.data": o.data, "order.indices": o.indices.astype(np.int64),
                       "order.indptr": o.indptr.astype(np.int64)})  # fmt: skip
        return arrays, {"sources": sources, "dims": self.tower_.dims, "learned_ids": self.tower_.learned_table}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        spec = {"id": {}} if self.item_features is None else self.item_features
        feats = {k.removeprefix("feat."): v for k, v in arrays.items() if k.startswith("feat.")}
        self.tower_ = Tower(build_sources(spec, "item", self.text)).load(feats, extra["sources"])
        self.supports_cold_items = bool(self.tower_.dense)
        self.warm_ = torch.from_numpy(arrays["warm"])
        self.net_ = _SequenceNet(self.encoder, self.n_items_, extra["dims"], bool(extra["learned_ids"]), self.dim,
                                 self.layers, self.heads, self.max_len, self.dropout)  # fmt: skip
        self.net_.load_state_dict({k.removeprefix("net."): torch.from_numpy(v) for k, v in arrays.items()
                                   if k.startswith("net.")})  # fmt: skip
        self.net_.eval()
        self.order_ = sp.csr_matrix((arrays["order.data"], arrays["order.indices"], arrays["order.indptr"]),
                                    shape=(self.n_users_, self.n_items_))  # fmt: skip
        self._cache_items()


class SASRecRecommender(SequentialRecommender):
    """Self-attentive sequential recommendation (causal transformer over the last `max_len` items)."""

    name = "sasrec"


class GRU4RecRecommender(SequentialRecommender):
    """The recurrent baseline: a GRU over the last `max_len` items."""

    name = "gru4rec"

    def __init__(self, encoder: str = "gru", dim: int = 64, layers: int = 1, heads: int = 1, max_len: int = 50,
                 dropout: float = 0.2, epochs: int = 200, lr: float = 1e-3, weight_decay: float = 0.0,
                 batch_size: int = 128, patience: int = 10, item_features: dict[str, dict[str, Any]] | None = None,
                 text: dict[str, Any] | None = None, threads: int = 0, seed: int = 0) -> None:  # fmt: skip
        super().__init__(encoder, dim, layers, heads, max_len, dropout, epochs, lr, weight_decay, batch_size,
                         patience, item_features, text, threads, seed)  # fmt: skip
