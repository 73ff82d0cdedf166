"""Meta-learned and non-meta neural recommenders on LLM features, behind the Recommender interface.

`algorithm` picks how the network learns:
- maml / fomaml / metasgd / reptile: meta-trained over few-shot tasks of the training users; a new
  user is adapted on their support set by the inner loop (a few vectorised gradient steps).
- global: the same network trained as an ordinary model (a learned vector per training user);
  a new user gets the shared start vector (plus profile text) and no adaptation.
- finetune: the global model, then a new user's vector fine-tuned on the support set with the same
  number of plain gradient steps (transfer learning without meta-training).
Global weights never change after `fit`; `adapt` returns a per-user state.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from metarec.data.schema import USER, Dataset
from metarec.errors import ConfigError
from metarec.eval import metrics as M
from metarec.meta.algorithms import ALGORITHMS, InnerLoop, adapt_batch, adapt_keys, batch_logits, outer_loss
from metarec.meta.scorer import init_params, item_table, task_loss, user_start
from metarec.meta.tasks import EpisodeSampler, split_rows, time_rank_matrix
from metarec.models.base import Recommender, UserState
from metarec.models.content import encode_texts, get_encoder
from metarec.text.templates import item_texts, user_texts

NON_META = ("global", "finetune")


class MetaRecommender(Recommender):
    name = "meta"
    supports_cold_items = True

    def __init__(
        self,
        algorithm: str = "maml",
        objective: str = "ranking",
        dim: int = 64,
        hidden: int = 0,
        adapt_params: str = "user",
        inner_steps: int = 3,
        inner_lr: float = 0.1,
        inner_reg: float = 0.0,
        shot_gamma: float = 0.0,
        meta_batch: int = 32,
        epochs: int = 80,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        train_shots: list[int] | None = None,
        train_support: str = "earliest",
        residual_dropout: float = 0.2,
        negatives: int = 0,
        use_text: bool = True,
        item_residuals: bool = True,
        text: dict[str, Any] | None = None,
        item_template: str = "{title}",
        user_template: str | None = None,
        valid_k: tuple[int, ...] = (1, 5, 20),
        patience: int = 10,
        threads: int | None = None,
        verbose: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if algorithm not in ALGORITHMS + NON_META:
            raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS + NON_META)}, got {algorithm!r}")
        try:
            adapt_keys(adapt_params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not use_text and not item_residuals:
            raise ConfigError("with use_text=false the model needs item_residuals=true: items need some representation")
        if "head" in adapt_params and not hidden:
            raise ConfigError("adapt_params='head' needs decision layers: set hidden > 0")
        if objective not in ("ranking", "rating"):
            raise ConfigError(f"objective must be 'ranking' (implicit) or 'rating' (explicit, MSE), got {objective!r}")
        self.algorithm = algorithm
        self.objective = objective
        self.dim = dim
        self.hidden = hidden
        self.adapt_params = adapt_params  # which weights the inner loop adapts per user
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.inner_reg = inner_reg
        self.shot_gamma = shot_gamma
        self.meta_batch = meta_batch
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.train_shots = list(train_shots or [1, 3, 5, 10, 20])
        self.train_support = train_support
        self.residual_dropout = residual_dropout
        self.negatives = negatives  # > 0: sampled softmax over this many shared negatives (big catalogues)
        self.use_text = use_text
        self.item_residuals = item_residuals  # False: every item is known by its text alone
        self.text = dict(text or {})
        self.item_template = item_template
        self.user_template = user_template
        self.valid_k = valid_k
        self.patience = patience
        self.threads = threads
        self.verbose = verbose

    # ------------------------------------------------------------------ features
    def _features(self, train: Dataset) -> None:
        self.item_text_: torch.Tensor | None = None
        self.user_text_: torch.Tensor | None = None
        if not self.use_text:
            return
        self.encoder_ = get_encoder(self.text)
        texts = item_texts(train, self.item_template, extra_reviews=train.extras.get("revealed"))
        self.item_text_ = torch.from_numpy(encode_texts(self.encoder_, texts, self.item_template))
        if self.user_template:
            ut = user_texts(train, self.user_template)
            vecs = encode_texts(self.encoder_, ut, self.user_template)
            vecs[[not t for t in ut]] = 0.0
            self.user_text_ = torch.from_numpy(vecs)

    def _inner(self) -> InnerLoop:
        return InnerLoop(self.inner_steps, self.inner_lr, self.inner_reg, adapt_keys(self.adapt_params),
                         first_order=self.algorithm in ("fomaml", "reptile"), objective=self.objective)  # fmt: skip

    @property
    def predicts_ratings(self) -> bool:
        return self.objective == "rating"

    # ------------------------------------------------------------------ training
    def _fit(self, train: Dataset) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        t0 = time.perf_counter()
        self._features(train)
        n_items = train.n_items
        item_counts = np.asarray(self.train_matrix_.sum(axis=0)).ravel()
        self.warm_ = torch.from_numpy(((item_counts > 0) & self.item_residuals).astype(np.float32))
        text_dim = 0 if self.item_text_ is None else self.item_text_.shape[1]
        user_text_dim = 0 if self.user_text_ is None else self.user_text_.shape[1]
        theta = init_params(n_items, self.dim, text_dim, user_text_dim, self.hidden, self.seed)
        theta["shot_gamma"] = torch.tensor(float(self.shot_gamma))
        # start from popularity (log counts): the strongest single cold-start signal, refined from there
        if self.objective == "rating":  # start from the (shrunk) item means, the classic strong baseline
            sums = np.asarray(train.matrix(binary=False).sum(axis=0)).ravel()
            mu = sums.sum() / max(1.0, item_counts.sum())
            theta["item_bias"] = torch.from_numpy((sums + 5 * mu) / (item_counts + 5)).float()
        else:
            log_pop = np.log1p(item_counts)
            theta["item_bias"] = torch.from_numpy(log_pop - log_pop.mean()).float()
        theta = {k: v.requires_grad_() for k, v in theta.items()}
        inner = self._inner()
        lrs = {}
        for k in inner.adapt:
            shape = theta["user_init"].shape if k == "u" else theta[k].shape
            lrs[k] = torch.full(shape, float(self.inner_lr), requires_grad=self.algorithm == "metasgd")
        ranks = time_rank_matrix(train)
        ratings = train.matrix(binary=False) if self.objective == "rating" else None
        users = np.flatnonzero(np.diff(ranks.indptr) >= 2)
        valid = self._valid_rows(train)
        if self.objective == "rating":
            vint = train.extras.get("valid")
            self._valid_ratings_ = (train if vint is None else train.with_interactions(vint)).matrix(binary=False)
        if valid is None:  # no meta-valid users given: hold out 10% of the training users
            rng = np.random.default_rng(self.seed)
            held = rng.choice(users, max(1, len(users) // 10), replace=False)
            users = np.setdiff1d(users, held)
            valid = (ranks[held], held)
        params = list(theta.values()) + [v for v in lrs.values() if v.requires_grad]
        user_res = None
        if self.algorithm in NON_META:
            user_res = torch.zeros(train.n_users, self.dim, requires_grad=True)
            params.append(user_res)
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        sampler = EpisodeSampler(ranks, users, self.train_shots, self.train_support, seed=self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        best, best_score, bad, self.history_ = None, -np.inf, 0, []
        for epoch in range(self.epochs):
            losses = []
            if self.algorithm in NON_META:
                batches = self._global_batches(ranks, users, np.random.default_rng(self.seed + epoch))
            else:
                batches = ((u, sup, qry) for u, _, sup, qry in sampler.epoch(self.meta_batch))
            for bu, sup, qry in batches:
                keep = (torch.rand(n_items, generator=gen) >= self.residual_dropout).float()
                prof = None if self.user_text_ is None else self.user_text_[bu]
                u0 = user_start(theta, len(bu), prof)
                if ratings is not None:  # explicit: rows carry the ratings, 0 = unrated
                    vals = ratings[bu].toarray().astype(np.float32)
                    sup, qry = sup * vals, qry * vals
                if self.negatives and self.objective == "ranking" and n_items > self.negatives:
                    # sampled softmax: this batch's items plus a shared uniform sample of negatives;
                    # only their rows of the item table are computed
                    cols = self._sample_columns(sup, qry, np.random.default_rng(self.seed + len(losses) + 7919 * epoch))
                    sub = {k: (v[cols] if k in ("item_res", "item_bias") else v) for k, v in theta.items()}
                    text = None if self.item_text_ is None else self.item_text_[cols]
                    E, b = item_table(sub, text, self.warm_[cols], keep[cols])
                    sup, qry = sup[:, cols.numpy()], qry[:, cols.numpy()]
                else:
                    E, b = item_table(theta, self.item_text_, self.warm_, keep)
                sup_t, qry_t = torch.from_numpy(np.ascontiguousarray(sup)), torch.from_numpy(np.ascontiguousarray(qry))
                if self.algorithm in NON_META:
                    fast = {"u": u0 + user_res[torch.from_numpy(bu)]}
                    loss = task_loss(self.objective, batch_logits(fast, theta, E, b), qry_t)
                else:
                    loss = outer_loss(self.algorithm, theta, lrs, inner, E, b, sup_t, qry_t, u0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for v in lrs.values():
                        v.clamp_(min=0.0)
                losses.append(loss.item())
            self.theta_, self.lrs_ = theta, lrs
            score = self._valid_ndcg(*valid)
            self.history_.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_ndcg@10": score})
            if self.verbose:
                print(self.history_[-1])
            if score > best_score:
                best_score, bad = score, 0
                best = (
                    {k: v.detach().clone() for k, v in theta.items()},
                    {k: v.detach().clone() for k, v in lrs.items()},
                )
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.theta_ = {k: v.requires_grad_(False) for k, v in best[0].items()}
        self.lrs_ = best[1]
        self.user_res_ = None if user_res is None else user_res.detach().clone()
        self.best_valid_ndcg_ = best_score
        self.epochs_run_ = len(self.history_)
        self.train_seconds_ = time.perf_counter() - t0
        self._cache_items()

    def _sample_columns(self, sup: np.ndarray, qry: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        used = np.flatnonzero((sup + qry).any(axis=0))
        extra = rng.choice(sup.shape[1], size=self.negatives, replace=False)
        return torch.from_numpy(np.union1d(used, extra))

    def _global_batches(self, ranks: sp.csr_matrix, users: np.ndarray, rng: np.random.Generator):
        """Non-meta training: each training user's whole history is the target of their own vector."""
        perm = rng.permutation(users)
        for start in range(0, len(perm), self.meta_batch):
            bu = perm[start : start + self.meta_batch]
            rows = ranks[bu]
            sup, qry = split_rows(rows, 0, rows.data)
            yield bu, sup, qry

    def _valid_rows(self, train: Dataset) -> tuple[sp.csr_matrix, np.ndarray] | None:
        valid = train.extras.get("valid")
        if valid is None or len(valid) == 0:
            return None
        vusers = np.unique(valid[USER].to_numpy())
        return time_rank_matrix(train.with_interactions(valid))[vusers], vusers

    def _valid_ndcg(self, rows: sp.csr_matrix, vusers: np.ndarray) -> float:
        """Early-stopping signal on meta-valid users from their k earliest items, mean over k:
        NDCG@10 over the catalogue, or for the rating objective minus the query RMSE."""
        self._cache_items()  # item tables of the current (not yet best) parameters
        out = []
        for k in np.atleast_1d(self.valid_k):
            ok = np.diff(rows.indptr) > k
            if not ok.any():
                continue
            sup, qry = split_rows(rows[ok], int(k), rows[ok].data)
            if self.objective == "rating":
                vals = self._valid_ratings_[vusers[ok]].toarray()
                pred = self._scores(self._adapt_dense(sup * vals, vusers[ok], known=False))
                mask = qry > 0
                out.append(-float(np.sqrt((((pred - vals) ** 2) * mask).sum() / mask.sum())))
                continue
            scores = self._scores(self._adapt_dense(sup, vusers[ok], known=False))
            scores[sup > 0] = -np.inf
            rel = qry > 0
            top = M.topk(scores, 10)
            out.append(M.ranking_metrics(np.take_along_axis(rel, top, 1), rel.sum(1), [10])["ndcg@10"].mean())
        return float(np.mean(out)) if out else 0.0

    # ------------------------------------------------------------------ inference
    def _cache_items(self) -> None:
        with torch.no_grad():
            theta = {k: v.detach() for k, v in self.theta_.items()}
            self.item_E_, self.item_b_ = item_table(theta, self.item_text_, self.warm_)

    def _adapt_dense(self, sup: np.ndarray, users: np.ndarray | None, known: bool,
                     profile: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        theta = {k: v.detach() for k, v in self.theta_.items()}
        n = sup.shape[0]
        if profile is None and self.user_text_ is not None and users is not None:
            profile = self.user_text_[torch.from_numpy(np.asarray(users))]
        u0 = user_start(theta, n, profile)
        if self.algorithm in NON_META:
            if known and users is not None and self.user_res_ is not None:
                return {"u": u0 + self.user_res_[torch.from_numpy(np.asarray(users))]}
            if self.algorithm == "global":
                return {"u": u0}
        sup_t = torch.from_numpy(np.ascontiguousarray(sup, dtype=np.float32))
        with torch.no_grad():
            fast = adapt_batch(theta, self.lrs_, self._inner(), self.item_E_, self.item_b_, sup_t, u0)
        return {k: v.detach() for k, v in fast.items()}

    def _scores(self, fast: dict[str, torch.Tensor], items: np.ndarray | None = None) -> np.ndarray:
        with torch.no_grad():
            lg = batch_logits(fast, {k: v.detach() for k, v in self.theta_.items()}, self.item_E_, self.item_b_)
        out = lg.numpy()
        return out if items is None else out[:, items]

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        history = history.tocsr().astype(np.float32)
        return UserState(history, self._adapt_dense(history.toarray(), users, known))

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        return self._scores(state.payload, items)

    def adapt(self, support: pd.DataFrame, profile_text: str | None = None) -> UserState:
        """A new user from a few items and / or a profile text; global weights stay untouched."""
        state = super().adapt(support)
        if profile_text and self.user_text_ is not None:
            vec = torch.from_numpy(encode_texts(self.encoder_, [profile_text], self.user_template or "profile"))
            state.payload = self._adapt_dense(state.history.toarray(), None, False, profile=vec)
        return state

    def query_vector(self, state: UserState) -> np.ndarray:
        """The users' final vectors h (after the decision layers): scores are item_table() . h + b."""
        fast = state.payload
        theta = {k: v.detach() for k, v in self.theta_.items()}
        h = fast["u"]
        if "W1" in fast or "W1" in theta:
            W1, a1, W2 = (
                fast[k] if k in fast else theta[k].expand(h.shape[0], *theta[k].shape) for k in ("W1", "a1", "W2")
            )
            h = h + torch.einsum("bdh,bh->bd", W2, torch.relu(torch.einsum("bhd,bd->bh", W1, h) + a1))
        return h.numpy()

    def item_vectors(self, text: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(E, b) of the catalogue, or of new items known by their text vectors only (no residual)."""
        if text is None:
            return self.item_E_.numpy(), self.item_b_.numpy()
        t = torch.from_numpy(np.asarray(text, dtype=np.float32))
        if "text_proj" not in self.theta_:
            raise ConfigError("this model was trained without text (use_text=false): it cannot place new items")
        with torch.no_grad():
            return (t @ self.theta_["text_proj"]).numpy(), (t @ self.theta_["text_bias"]).numpy()

    def parameters_dict(self) -> dict[str, torch.Tensor]:
        out = {f"theta.{k}": v for k, v in self.theta_.items()}
        out.update({f"lr.{k}": v for k, v in self.lrs_.items()})
        if self.user_res_ is not None:
            out["user_res"] = self.user_res_
        return out
