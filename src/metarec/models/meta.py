"""The neural scorer on feature sources, trained by a chosen algorithm, behind the Recommender interface.

The parts live elsewhere and are only wired together here:
- what items and users are made of: `features/` (text through an LLM, ID residual, fields, ...);
- the network: `meta/scorer.py` (pure functions of a parameter dict);
- how it learns and how a new user is adapted: `meta/algorithms/` (MAML, FOMAML, Meta-SGD,
  Reptile, and the non-meta `global` / `finetune` references);
- the loop: `training/` (one Trainer with early stopping on meta-valid users).
Global weights never change after `fit`; adapting a user returns a per-user state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch.func import grad_and_value, vmap

from metarec import metrics as M
from metarec.data.schema import ITEM, USER, Dataset
from metarec.errors import ConfigError
from metarec.features import TextSource, Tower, build_sources
from metarec.meta.algorithms import Algorithm, Batch, InnerLoop, Net, adapt_keys, batch_logits, build_algorithm
from metarec.meta.scorer import (
    CATALOGUE_KEYS,
    Params,
    init_params,
    init_set_encoder,
    item_table,
    multinomial_nll,
    start_vector,
    support_attention,
)
from metarec.meta.tasks import EpisodeSampler, split_rows, time_rank_matrix
from metarec.meta.warmup import Adopters, apply_warmup, earliest_adopters, init_item_warmup, reveal_matrix
from metarec.models.base import Recommender, UserState
from metarec.text.encoders import encoder_identity
from metarec.training import Callback, EarlyStopping, History, Trainer

DEFAULT_ITEM_FEATURES: dict[str, dict[str, Any]] = {"text": {"type": "text", "template": "{title}"}, "id": {}}
OBJECTIVES = ("ranking", "rating")


class MetaRecommender(Recommender):
    name = "meta"
    supports_cold_items = True
    _callbacks: Sequence[Callback] = ()  # training hooks of the current `fit` call only
    _shard: tuple[int, int] | None = None
    _wrap_optimizer: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None

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
        set_encoder: bool = False,
        support_order: bool = False,
        item_warmup: float = 0.0,
        warmup_epochs: int = 20,
        warmup_items: float = 0.2,
        warmup_lr: float = 0.01,
        meta_batch: int = 32,
        tasks_per_epoch: int = 0,
        valid_users: int = 0,
        epochs: int = 80,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        train_shots: tuple[int, ...] = (1, 3, 5, 10, 20),
        train_support: str = "earliest",
        residual_dropout: float = 0.2,
        negatives: int = 0,
        item_features: dict[str, dict[str, Any]] | None = None,
        user_features: dict[str, dict[str, Any]] | None = None,
        text: dict[str, Any] | None = None,
        valid_k: tuple[int, ...] = (1, 5, 20),
        patience: int = 10,
        dp: dict[str, Any] | None = None,
        federated: dict[str, Any] | None = None,
        init_from: str | None = None,
        threads: int | None = None,
        verbose: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        # stored exactly as given (sklearn's clone checks that), validated below without copying
        self.algorithm = algorithm
        self.objective = objective
        self.dim = dim
        self.hidden = hidden
        self.adapt_params = adapt_params  # which weights the inner loop adapts per user
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.inner_reg = inner_reg
        self.shot_gamma = shot_gamma
        self.set_encoder = set_encoder  # the start vector also reads the support items (amortised)
        self.support_order = support_order  # ... as a sequence: attention over them with recency positions
        self.item_warmup = item_warmup  # > 0: new items learn from their early adopters (`meta/warmup.py`)
        self.warmup_epochs = warmup_epochs  # second phase: only the warm-up weights learn, the rest frozen
        self.warmup_items = warmup_items  # share of training items kept from the base network to play launches
        self.warmup_lr = warmup_lr
        self.meta_batch = meta_batch
        self.tasks_per_epoch = tasks_per_epoch  # > 0: an epoch samples this many user tasks (millions of users)
        self.valid_users = valid_users  # > 0: at most this many meta-valid users score early stopping
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.train_shots = train_shots
        self.train_support = train_support
        self.residual_dropout = residual_dropout
        self.negatives = negatives  # > 0: sampled softmax over this many shared negatives (big catalogues)
        self.item_features = item_features  # None: title text + ID residual
        self.user_features = user_features  # e.g. {profile = {type = "text", template = "..."}}
        self.text = text  # default encoder of the text sources (the run's [text] table)
        self.valid_k = valid_k
        self.patience = patience
        self.dp = dp  # user-level DP-SGD, e.g. {epsilon = 8} (`privacy/dp.py`); None = not private
        self.federated = federated  # Flower-simulated clients, e.g. {clients = 10} (`privacy/federated.py`)
        self.init_from = init_from  # a saved meta model of another catalogue whose shared weights start this fit
        self.threads = threads
        self.verbose = verbose
        self._validate()

    def _validate(self) -> None:
        build_algorithm(self.algorithm)
        try:
            adapt_keys(self.adapt_params)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if "head" in self.adapt_params and not self.hidden:
            raise ConfigError("adapt_params='head' needs decision layers: set hidden > 0")
        if self.objective not in OBJECTIVES:
            raise ConfigError(
                f"objective must be 'ranking' (implicit) or 'rating' (explicit, MSE), got {self.objective!r}"
            )
        items = self._item_tower()
        if not items.sources:
            raise ConfigError("item_features is empty: items need some representation (e.g. text = {} or id = {})")
        if not 0.0 <= self.item_warmup < 1.0:
            raise ConfigError(f"item_warmup is the share of each item's earliest users that simulates its launch "
                              f"in training: in [0, 1), got {self.item_warmup}")  # fmt: skip
        if not 0.0 < self.warmup_items < 1.0:
            raise ConfigError(f"warmup_items is the share of training items that simulate launches: in (0, 1), "
                              f"got {self.warmup_items}")  # fmt: skip
        if self.item_warmup and self.objective != "ranking":
            raise ConfigError("item_warmup learns with the ranking objective (new items ranked by who used them); "
                              "drop it or use objective = 'ranking'")  # fmt: skip
        if self.item_warmup and not items.learned_table:
            raise ConfigError("item_warmup needs the item ID residual (item_features.id = {}): warm items are "
                              "told apart from new ones by it")  # fmt: skip
        if self.support_order and not self.set_encoder:
            raise ConfigError("support_order reads the support items as a sequence in the set encoder: "
                              "set set_encoder = true too")  # fmt: skip
        if self.tasks_per_epoch < 0 or self.valid_users < 0:
            raise ConfigError(f"tasks_per_epoch and valid_users must be >= 0 (0 = every user), got "
                              f"{self.tasks_per_epoch} and {self.valid_users}")  # fmt: skip
        if self.support_order and self.objective != "ranking":
            raise ConfigError("support_order is for the ranking objective (time order of implicit feedback)")
        self._user_tower()
        if self.dp is not None:
            self._dp_config()
        if self.federated is not None:
            self._federated_config()

    def _private_problems(self) -> list[str]:
        """Settings that would carry training users' data into the weights or the artefact around the
        privacy mechanism (fitted on the interactions without noise, or stored per training user)."""
        from metarec.features import DistilledSource, KGSource

        out = []
        if not build_algorithm(self.algorithm).episodic:
            out.append(f"algorithm {self.algorithm!r} learns a vector per training user (it would publish them): "
                       "use maml, fomaml, metasgd or reptile")  # fmt: skip
        if self.item_warmup:
            out.append("item_warmup trains a second phase on every user's history without noise: set it to 0")
        if self.objective != "ranking":
            out.append("objective 'rating' starts from the items' mean ratings: use objective = 'ranking'")
        if self.user_features:
            out.append("user_features are tables of the training users, stored with the weights: drop them")
        for s in self._item_tower().sources:
            where = f"item_features.{s.name}"
            if isinstance(s, TextSource) and ("{reviews" in s.template or s.tune is not None):
                out.append(f"{where} reads training interactions' reviews or tunes the encoder on them")
            elif isinstance(s, DistilledSource) or (isinstance(s, KGSource) and s.interactions):
                out.append(f"{where} is fitted on the training interactions")
        return out

    @staticmethod
    def _table(model: Any, value: Any, name: str) -> Any:
        """A pydantic config table, its first error as a ConfigError naming the table and its keys."""
        from pydantic import ValidationError

        try:
            return model.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{name}: {first['loc']}: {first['msg']} (a table with keys: "
                              f"{', '.join(model.model_fields)})") from None  # fmt: skip

    def _federated_config(self) -> Any:
        from metarec.privacy.federated import FederatedConfig

        cfg = self._table(FederatedConfig, self.federated, "federated")
        reasons = self._private_problems()
        if self.dp is not None:
            reasons.append("dp: DP on the clients' updates is not built yet (drop one of them)")
        if reasons:
            raise ConfigError("federated training cannot run with " + "; ".join(reasons))
        return cfg

    def _dp_config(self) -> Any:
        from metarec.privacy.dp import DPConfig

        cfg = self._table(DPConfig, self.dp, "dp")
        reasons = self._private_problems()
        if self.negatives:
            reasons.append("negatives > 0 picks the columns from the batch's own items: set negatives = 0")
        if reasons:
            raise ConfigError("dp (user-level DP-SGD) cannot run with " + "; ".join(reasons))
        return cfg

    def _item_tower(self) -> Tower:
        spec = DEFAULT_ITEM_FEATURES if self.item_features is None else self.item_features
        return Tower(build_sources(spec, "item", self.text))

    def _user_tower(self) -> Tower:
        return Tower(build_sources(self.user_features, "user", self.text))

    def _inner(self) -> InnerLoop:
        return InnerLoop(self.inner_steps, self.inner_lr, self.inner_reg, adapt_keys(self.adapt_params),
                         first_order=self.algorithm_.first_order, objective=self.objective)  # fmt: skip

    @property
    def predicts_ratings(self) -> bool:
        return self.objective == "rating"

    # ------------------------------------------------------------------ training
    def fit(
        self,
        train: Dataset,
        valid: pd.DataFrame | None = None,
        revealed: pd.DataFrame | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        wrap_optimizer: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None,
        shard: tuple[int, int] | None = None,
    ) -> Self:
        """As `Recommender.fit`; `callbacks` join the training loop after early stopping (e.g. a
        `Checkpoint`), `wrap_optimizer` replaces its optimiser (e.g. Opacus' DP-SGD wrapper, or the
        all-reduce of data-parallel training) and `shard = (rank, world)` keeps this worker's slice of
        every meta-batch (`training.sharding`; Ray Train sets both in `distributed.train`)."""
        self._callbacks, self._wrap_optimizer, self._shard = callbacks, wrap_optimizer, shard
        try:
            return super().fit(train, valid, revealed)
        finally:  # hooks belong to this call, never to the fitted model
            self._callbacks, self._wrap_optimizer, self._shard = (), None, None

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        t0 = time.perf_counter()
        self.algorithm_: Algorithm = build_algorithm(self.algorithm)
        self.items_ = self._item_tower().fit(train, revealed)
        self.users_ = self._user_tower().fit(train)
        self.warmup_: tuple[torch.Tensor, torch.Tensor] | None = None  # new items' adopter taste and count
        # with the warm-up, some training items are kept from the base network: they play new items in
        # the second phase (items it trained on are not new to it: their text path knows their popularity)
        launch = self._launch_items(train) if self.item_warmup else np.zeros(0, np.int64)
        base = (
            train.with_interactions(train.interactions[~train.interactions[ITEM].isin(launch)])
            if len(launch)
            else train
        )
        counts: np.ndarray = np.asarray(base.matrix().sum(axis=0)).ravel()
        step: Any = _MetaStep(self, base, valid)  # reads the data and hyper-parameters only, not the weights
        wrap = self._wrap_optimizer
        plan = None
        if self.dp is not None:
            from metarec.privacy.dp import PrivacyPlan, PrivateStep

            if self._shard is not None or wrap is not None:
                raise ConfigError("dp training runs in one process: drop [distributed] backend = 'ray' for it")
            plan = PrivacyPlan(self._dp_config(), len(step.sampler.users), self.meta_batch, self.epochs,
                               self.tasks_per_epoch)  # fmt: skip
            # which items were used, and how often, is the users' data: a noisy release (or a flat start)
            counts = plan.popularity(base.matrix(), self.seed)
            if any(type(cb).__name__ == "Checkpoint" for cb in self._callbacks):
                raise ConfigError("dp training cannot resume from checkpoints (the accountant would miss the "
                                  "earlier steps and the noise would repeat): drop --checkpoint-dir")  # fmt: skip
            step, wrap = PrivateStep(step, plan, self.seed), plan.wrap_optimizer(self.meta_batch, self.seed)
        if self.federated is not None:  # the server never sees which items were used, nor how often
            counts = np.ones(train.n_items)
        # items unseen in training have no residual (in private training every item has: which were seen is private)
        seen = counts > 0 if plan is None and self.federated is None else np.ones(train.n_items, bool)
        self.warm_ = torch.from_numpy((seen & self.items_.learned_table).astype(np.float32))
        theta = self._init_theta(base, counts)
        self.lrs_ = {k: torch.full(theta["user_init"].shape if k == "u" else theta[k].shape, float(self.inner_lr),
                                   requires_grad=self.algorithm_.learns_inner_lr)
                     for k in adapt_keys(self.adapt_params)}  # fmt: skip
        transfer = self._start_from_source(theta) if self.init_from is not None else None
        self.extra_ = {k: v.requires_grad_() for k, v in self.algorithm_.init_extra(train.n_users, self.dim).items()}
        self.theta_ = {k: v.requires_grad_() for k, v in theta.items()}
        if self._shard is not None:
            from metarec.training.sharding import ShardedStep

            step = ShardedStep(step, *self._shard)
        if self.federated is not None:
            self._fit_federated(train, step, launch, revealed, t0)
            if transfer is not None:
                self.fit_info_["transfer"] = transfer
            return
        # the cold-user score measures the shared weights only: training users' own vectors (global,
        # finetune) keep their last values rather than those of the best epoch
        # a transferred start is itself a candidate: target training that only hurts it is not kept
        early = EarlyStopping(lambda: self._valid_score(*step.valid), self.patience, monitor="valid_ndcg@10",
                              selects=lambda name: not name.startswith("extra."),
                              score_start=transfer is not None)  # fmt: skip
        callbacks = [early, *self._callbacks, History(self.verbose)]
        trainer = Trainer(self.epochs, self.lr, self.weight_decay, callbacks, wrap_optimizer=wrap)
        result = trainer.fit(step)
        if plan is not None:
            step.release()
        if self.item_warmup:
            self._train_warmup(train, launch, revealed)
        for d in (self.theta_, self.lrs_, self.extra_):
            for v in d.values():
                v.requires_grad_(False)
        self.fit_info_ = {
            "best_valid_ndcg@10": float(early.best_score),
            "best_epoch": early.best_epoch,
            "epochs": result.epochs_run,
            "train_seconds": time.perf_counter() - t0,
            "history": result.history,
        }
        if transfer is not None:
            self.fit_info_["transfer"] = transfer
        if plan is not None:  # the accountant's epsilon over every step run (the best epoch's weights spent less)
            self.fit_info_["privacy"] = plan.spent()
        self._cache_items()

    def _fit_federated(self, train: Dataset, step: Any, launch: np.ndarray, revealed: pd.DataFrame | None,
                       t0: float) -> None:  # fmt: skip
        from metarec.privacy.federated import train_federated

        if self._shard is not None or self._wrap_optimizer is not None or self._callbacks:
            raise ConfigError("federated training runs its own rounds: no Ray Train, checkpoints or extra callbacks")
        log = train_federated(self, train, step.users, lambda: self._valid_score(*step.valid),
                              self._federated_config(), self.seed)  # fmt: skip
        for d in (self.theta_, self.lrs_, self.extra_):
            for v in d.values():
                v.requires_grad_(False)
        self.fit_info_ = {"best_valid_ndcg@10": float(log["best_valid_ndcg@10"]), "best_epoch": log["best_round"],
                          "epochs": len(log["rounds"]) - 1, "train_seconds": time.perf_counter() - t0,
                          "federated": {k: v for k, v in log.items() if k != "traffic"}}  # fmt: skip
        self._cache_items()

    # ------------------------------------------------------------------ weights (federated rounds)
    def get_weights(self) -> dict[str, np.ndarray]:
        """The meta-parameters a federated round exchanges: every trained tensor under its artefact
        name (per-user tensors excluded: none exist for the episodic algorithms)."""
        learned_lr = self.algorithm_.learns_inner_lr
        return {k: v.detach().numpy().copy() for k, v in self._trained().items()
                if not k.startswith("extra.") and (not k.startswith("lr.") or learned_lr)}  # fmt: skip

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy `weights` (from `get_weights`) into the model in place and refresh the item table."""
        trained = self._trained()
        unknown = sorted(set(weights) - set(trained))
        if unknown:
            raise ConfigError(f"set_weights: this model has no tensors {unknown[:3]}")
        with torch.no_grad():
            for k, v in weights.items():
                trained[k].copy_(torch.from_numpy(np.asarray(v)))
        self._cache_items()

    def local_update(self, train: Dataset, epochs: int, seed: int) -> float:
        """`epochs` epochs of meta-training of the current weights on every user of `train` (no held-out
        users, no early stopping): a federated client's round, through the one training loop. Returns
        the last epoch's mean loss."""
        own_seed, self.seed = self.seed, seed  # this round's draws of tasks and dropout
        for k, v in self._trained().items():
            v.requires_grad_(not k.startswith("lr.") or self.algorithm_.learns_inner_lr)
        try:
            step = _MetaStep(self, train, None, hold_out=False)
            result = Trainer(epochs, self.lr, self.weight_decay).fit(step)
        finally:
            self.seed = own_seed
            for v in self._trained().values():
                v.requires_grad_(False)
        return float(result.history[-1]["loss"]) if result.history else float("nan")

    def _adapt_all(self, history: sp.csr_matrix, chunk: int = 512) -> Params:
        """Every user's fast weights from `history` (users x items), as known users, a chunk at a time,
        over the cached item table without the warm-up shift (as `_adapt_dense` always adapts)."""
        n = history.shape[0]
        parts = [self._adapt_dense(history[s : s + chunk].toarray(), np.arange(s, min(s + chunk, n)), known=True)
                 for s in range(0, n, chunk)]  # fmt: skip
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _launch_items(self, train: Dataset) -> np.ndarray:
        counts = np.bincount(train.interactions.drop_duplicates([USER, ITEM])[ITEM], minlength=train.n_items)
        eligible = np.flatnonzero(counts >= 2)  # an early adopter and at least one later user
        rng = np.random.default_rng(self.seed + 31)
        return np.sort(rng.choice(eligible, round(self.warmup_items * len(eligible)), replace=False))

    def _train_warmup(self, train: Dataset, launch: np.ndarray, revealed: pd.DataFrame | None) -> None:
        """Second phase, as in MWUF and MetaEmb: the base network is frozen and only the warm-up
        weights learn, on the launch items it never saw, asked the way the cold-item protocol asks
        (known users rank the new items). Then every item the base network did not train on gets its
        shift: the launch items from all their training users, the cold items from their revealed
        early adopters, if any."""
        for k, v in self._trained().items():
            v.requires_grad_(k.startswith("theta.warm_"))
        new = np.zeros(train.n_items, np.float32)
        new[launch] = 1.0
        if self.warmup_epochs:
            adopters = Adopters(sp.diags(new) @ earliest_adopters(train, self.item_warmup))
            step = _WarmupStep(self, self.train_matrix_, torch.from_numpy(new), adopters)
            Trainer(self.warmup_epochs, self.warmup_lr, 0.0, [History(self.verbose)]).fit(step)
        reveal = sp.csr_matrix(sp.diags(new) @ self.train_matrix_.T)
        if revealed is not None and len(revealed):
            reveal = reveal + reveal_matrix(revealed, train.n_items, train.n_users)
        self._cache_items()  # the trained tables; users are known by their training histories
        fast = self._adapt_all(self.train_matrix_)
        adopters = Adopters(reveal)
        self.warmup_ = (adopters.taste(self._final(fast)), adopters.count)

    def _init_theta(self, train: Dataset, counts: np.ndarray) -> Params:
        theta = init_params(train.n_items, self.dim, self.items_.dims, self.users_.dims, self.hidden, self.seed)
        theta["shot_gamma"] = torch.tensor(float(self.shot_gamma))
        if self.set_encoder:
            theta.update(init_set_encoder(self.dim, order=self.support_order))
        if self.item_warmup:
            theta.update(init_item_warmup(self.dim))
        if self.objective == "rating":  # start from the (shrunk) item means, the classic strong baseline
            sums = np.asarray(train.matrix(binary=False).sum(axis=0)).ravel()
            mu = sums.sum() / max(1.0, counts.sum())
            theta["item_bias"] = torch.from_numpy((sums + 5 * mu) / (counts + 5)).float()
        else:  # start from popularity (log counts): the strongest single cold-start signal, refined from there
            log_pop = np.log1p(counts)
            theta["item_bias"] = torch.from_numpy(log_pop - log_pop.mean()).float()
        return theta

    def _start_from_source(self, theta: Params) -> dict[str, Any]:
        """Copy the catalogue-independent weights of the `init_from` model into `theta` (and the inner
        learning rates): the network (user start, head, set encoder, warm-up) and the projections of text
        sources that read the same language model, whose vectors are one space across catalogues. Item
        ID residuals and biases belong to the source's catalogue; projections of fields / KG / ID sources
        index the source's own vocabularies: those start afresh (listed in the returned report)."""
        from metarec.models.io import load_model

        source, manifest = load_model(str(self.init_from))
        if not isinstance(source, MetaRecommender):
            raise ConfigError(f"init_from: {self.init_from} holds a {manifest['model']!r} model; transfer starts "
                              "from a meta model (type = 'meta')")  # fmt: skip
        if source.objective != self.objective:
            raise ConfigError(f"init_from: the source model was trained for objective {source.objective!r}, this one "
                              f"is {self.objective!r}: its head scores another quantity")  # fmt: skip

        def language(tower: Tower, side: str) -> dict[str, tuple[Any, ...]]:
            # TF-IDF vocabularies are fitted per catalogue: their columns are different words on each side
            ids = {f"{side}:{s.name}": encoder_identity(s.text) for s in tower.sources if isinstance(s, TextSource)}
            return {k: v for k, v in ids.items() if v[0] != "tfidf"}

        mine = language(self.items_, "item") | language(self.users_, "user")
        theirs = language(source.items_, "item") | language(source.users_, "user")
        copied, fresh = [], []
        for key, value in theta.items():
            src = source.theta_.get(key)
            if key in CATALOGUE_KEYS:
                fresh.append(key)
                if key == "item_res":  # the source's text path speaks alone until target training says otherwise
                    value.zero_()
                continue
            if key.count(":") == 2:  # a feature source's projection: only language-model vectors share a space
                tower = key.rsplit(":", 1)[0]
                if tower not in mine or tower not in theirs or src is None:
                    fresh.append(key)
                    continue
                if mine[tower] != theirs[tower]:
                    raise ConfigError(f"init_from: {tower.replace(':', '_features.', 1)} reads {mine[tower][:2]} "
                                      f"here but {theirs[tower][:2]} (adapter {theirs[tower][5]!r}) in the source "
                                      "model: transfer needs the same language model on both sides")  # fmt: skip
            elif src is None:
                fresh.append(key)
                continue
            if src.shape != value.shape:
                theirs_shape, mine_shape = tuple(src.shape), tuple(value.shape)
                raise ConfigError(f"init_from: weight {key!r} has shape {theirs_shape} in the source model and "
                                  f"{mine_shape} here: give both the same dim / hidden / set_encoder")  # fmt: skip
            value.copy_(src)
            copied.append(key)
        learned = self.algorithm_.learns_inner_lr  # else the inner lr is this config's inner_lr, not a weight
        for key, lr in self.lrs_.items() if learned else ():
            if key in source.lrs_ and source.lrs_[key].shape == lr.shape:
                lr.data.copy_(source.lrs_[key])
                copied.append(f"lr.{key}")
        return {"from": str(self.init_from), "source_dataset": manifest.get("dataset", {}).get("name"),
                "copied": copied, "fresh": fresh,
                "not_used": sorted(k for k in source.theta_ if k not in theta)}  # fmt: skip

    def _valid_score(self, rows: sp.csr_matrix, vusers: np.ndarray, ratings: sp.csr_matrix | None) -> float:
        """Early-stopping signal on meta-valid users from their k earliest items, mean over k:
        NDCG@10 over the catalogue, or for the rating objective minus the query RMSE."""
        self._cache_items()  # item tables of the current (not yet best) parameters
        out = []
        for k in np.atleast_1d(self.valid_k):
            ok = np.diff(rows.indptr) > k
            if not ok.any():
                continue
            sup, qry = split_rows(rows[ok], int(k), rows[ok].data)
            if ratings is not None:
                vals = ratings[vusers[ok]].toarray()
                pred = self._scores(self._adapt_dense(sup * vals, vusers[ok], known=False))
                mask = qry > 0
                out.append(-float(np.sqrt((((pred - vals) ** 2) * mask).sum() / mask.sum())))
                continue
            order = rows[ok].toarray() * sup if self.support_order else None  # time ranks of the support
            scores = self._scores(self._adapt_dense(sup, vusers[ok], known=False, order=order))
            scores[sup > 0] = -np.inf
            rel = qry > 0
            top = M.topk(scores, 10)
            out.append(M.ranking_metrics(np.take_along_axis(rel, top, 1), rel.sum(1), [10])["ndcg@10"].mean())
        return float(np.mean(out)) if out else 0.0

    # ------------------------------------------------------------------ inference
    def _net(self, adapting: bool = False) -> Net:
        """The fitted network over the cached catalogue item table, detached for inference.

        Users adapt over the table without the new items' warm-up shift (as in training, where the
        shift is learned after the users' vectors): a large shift would otherwise dominate the inner
        loop's softmax and push every user away from the new items."""
        theta = {k: v.detach() for k, v in self.theta_.items()}
        extra = {k: v.detach() for k, v in self.extra_.items()}
        E, b = self.base_items_ if adapting else (self.item_E_, self.item_b_)
        return Net(theta, self.lrs_, self._inner(), E, b, extra)

    def _cache_items(self) -> None:
        with torch.no_grad():
            theta = {k: v.detach() for k, v in self.theta_.items()}
            self.item_E_, self.item_b_ = item_table(theta, self.items_.rows(), self.warm_)
            self.base_items_ = (self.item_E_, self.item_b_)
            if getattr(self, "warmup_", None) is not None:
                assert self.warmup_ is not None
                self.item_E_, self.item_b_ = apply_warmup(theta, self.item_E_, self.item_b_, *self.warmup_,
                                                          1.0 - self.warm_)  # fmt: skip

    def _user_feats(self, users: np.ndarray | None, profile: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        if profile is not None:
            return profile
        return self.users_.rows(users) if users is not None and self.users_.matrices_ else {}

    def _adapt_dense(self, sup: np.ndarray, users: np.ndarray | None, known: bool,
                     profile: dict[str, torch.Tensor] | None = None,
                     added: tuple[np.ndarray, np.ndarray] | None = None,
                     order: np.ndarray | None = None) -> Params:  # fmt: skip
        net = self._net(adapting=True)
        if added is not None:  # items placed after training join the table the inner loop ranks over
            net.E = torch.cat([net.E, torch.from_numpy(np.asarray(added[0], np.float32))])
            net.b = torch.cat([net.b, torch.from_numpy(np.asarray(added[1], np.float32))])
        sup_t = torch.from_numpy(np.ascontiguousarray(sup, dtype=np.float32))
        order_t = None
        if order is not None:
            order = np.hstack([order, np.zeros((len(order), sup.shape[1] - order.shape[1]), order.dtype)])
            order_t = torch.from_numpy(np.ascontiguousarray(order, dtype=np.float32))
        u0 = start_vector(net.theta, sup.shape[0], self._user_feats(users, profile), sup_t, net.E, order_t)
        with torch.no_grad():
            fast = self.algorithm_.adapt(net, sup_t, u0, users, known)
        return {k: v.detach() for k, v in fast.items()}

    def _scores(self, fast: Params, items: np.ndarray | None = None) -> np.ndarray:
        with torch.no_grad():
            out = batch_logits(fast, self._net()).numpy()
        return out if items is None else out[:, items]

    @property
    def reads_order(self) -> bool:
        """With `support_order`, `fold_in` reads `history.data` as time positions (larger = later)."""
        return bool(self.support_order)

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        history = history.tocsr().astype(np.float32)
        dense = history.toarray()
        if self.support_order:  # values are time positions: the support is binary, the order read apart
            return UserState(history, self._adapt_dense((dense > 0).astype(np.float32), users, known, order=dense))
        return UserState(history, self._adapt_dense(dense, users, known))

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        return self._scores(state.payload, items)

    def attention(self, history: sp.csr_matrix) -> list[list[tuple[int, float]]]:
        """Per user, how much each support item weighed in the start vector (the sequence-aware set
        encoder's attention; `history.data` = time positions), heaviest first: which past interactions
        drove the recommendations, for explanations."""
        if not self.support_order:
            raise ConfigError("attention weights exist with support_order = true (the sequence-aware set encoder)")
        h = history.tocsr()
        dense = torch.from_numpy(h.toarray().astype(np.float32))
        theta = {k: v.detach() for k, v in self.theta_.items()}
        with torch.no_grad():
            w = support_attention(theta, (dense > 0).float(), self.base_items_[0], dense).numpy()
        return [sorted(((int(i), float(w[r, i])) for i in h[r].indices), key=lambda p: -p[1])
                for r in range(h.shape[0])]  # fmt: skip

    # ------------------------------------------------------------------ serving (the Servable protocol)
    @property
    def reads_profile_text(self) -> bool:
        """Whether a user's profile text enters the model (a user text source is configured)."""
        return any(isinstance(s, TextSource) for s in self.users_.sources)

    def adapt(self, support: pd.DataFrame, profile_text: str | None = None,
              added: tuple[np.ndarray, np.ndarray] | None = None) -> UserState:  # fmt: skip
        """A new user from a few items and / or a profile text; global weights stay untouched.

        `added` = (E, b) of items placed after training (`new_item_vectors`), addressed in `support` by
        the ids that follow the catalogue's (n_items_, n_items_ + 1, ...): liking one moves the user
        at once, no retraining. The state's history covers the training catalogue only."""
        n_added = 0 if added is None else len(added[1])
        items = support["item"].to_numpy(np.int64)
        if n_added and len(items) and (items.min() < 0 or items.max() >= self.n_items_ + n_added):
            raise ConfigError(f"support names items outside 0..{self.n_items_ + n_added - 1}")
        state = super().adapt(support[items < self.n_items_])
        if self.support_order and len(items):  # the items in the order given (or by timestamp)
            from metarec.data.splits import order_matrix

            known_rows = support[items < self.n_items_].assign(user=0)
            state = self.fold_in(order_matrix(known_rows, 1, self.n_items_), None, known=False)
        feats = None
        if profile_text and self.reads_profile_text:
            # text sources read the profile as written; other user sources see no fields (zeros)
            records = pd.DataFrame(index=range(1))
            feats = {s.name: torch.from_numpy(s.encode([profile_text], "profile")) if isinstance(s, TextSource)
                     else torch.from_numpy(s.transform(records)) for s in self.users_.dense}  # fmt: skip
        if feats is not None or n_added:
            sup = state.history.toarray()  # ratings for a rating model; positions with support_order
            order = sup.copy() if self.support_order else None
            if self.support_order:
                sup = (sup > 0).astype(np.float32)
            if n_added:
                extra = np.zeros((1, n_added), sup.dtype)
                extra[0, items[items >= self.n_items_] - self.n_items_] = 1.0
                sup = np.hstack([sup, extra])
            state.payload = self._adapt_dense(
                sup, None, False, profile=feats, added=added if n_added else None, order=order
            )
        return state

    def query_vector(self, state: UserState) -> np.ndarray:
        """The users' final vectors h (after the decision layers): scores are item_vectors() . h + b."""
        return self._final(state.payload).numpy()

    def _final(self, fast: Params) -> torch.Tensor:
        theta = {k: v.detach() for k, v in self.theta_.items()}
        h = fast["u"]
        if "W1" in fast or "W1" in theta:
            W1, a1, W2 = (
                fast[k] if k in fast else theta[k].expand(h.shape[0], *theta[k].shape) for k in ("W1", "a1", "W2")
            )
            h = h + torch.einsum("bdh,bh->bd", W2, torch.relu(torch.einsum("bhd,bd->bh", W1, h) + a1))
        return h

    @property
    def learns_from_adopters(self) -> bool:
        """Whether new items move toward their early adopters (the model was fitted with `item_warmup`)."""
        return "warm_W" in self.theta_

    def warm_up(self, E: np.ndarray, b: np.ndarray, taste: np.ndarray, count: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """New items' (E, b) once their first users are known: `taste` is the mean final vector
        (`query_vector`) of each item's early adopters, `count` how many they are (see `meta/warmup.py`)."""
        if not self.learns_from_adopters:
            return E, b
        theta = {k: v.detach() for k, v in self.theta_.items()}
        with torch.no_grad():
            E2, b2 = apply_warmup(theta, torch.from_numpy(np.asarray(E, np.float32)),
                                  torch.from_numpy(np.asarray(b, np.float32)),
                                  torch.from_numpy(np.asarray(taste, np.float32)),
                                  torch.from_numpy(np.asarray(count, np.float32)), torch.ones(len(b)))  # fmt: skip
        return E2.numpy(), b2.numpy()

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(E, b) of the catalogue the model was trained on."""
        return self.item_E_.numpy(), self.item_b_.numpy()

    def new_item_vectors(self, records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(E, b) of items unseen in training, from their fields alone (no ID residual)."""
        feats = self.items_.transform(records)
        if not feats:
            raise ConfigError("this model knows items by their ID only: it cannot place new items")
        theta = {k: v.detach() for k, v in self.theta_.items()}
        theta["item_res"] = torch.zeros(len(records), self.dim)
        theta["item_bias"] = torch.zeros(len(records))
        with torch.no_grad():
            E, b = item_table(theta, feats, torch.zeros(len(records)))
        return E.numpy(), b.numpy()

    def item_text(self) -> tuple[TextSource, np.ndarray] | None:
        """The first item text source and its catalogue vectors (search and explanations read them)."""
        for s in self.items_.sources:
            if isinstance(s, TextSource):
                return s, self.items_.matrices_[s.name].numpy()
        return None

    # ------------------------------------------------------------------ state
    def _trained(self) -> dict[str, torch.Tensor]:
        """Every trained tensor under its artefact name (the training loop snapshots the same dict)."""
        return {**{f"theta.{k}": v for k, v in self.theta_.items()}, **{f"lr.{k}": v for k, v in self.lrs_.items()},
                **{f"extra.{k}": v for k, v in self.extra_.items()}}  # fmt: skip

    def _train_to_save(self) -> sp.csr_matrix:
        """A private model (dp / federated) stores no training histories: the artefact would otherwise hand
        out the very data the mechanism protects. Its training users are served from their events in the
        service's database, like any other user."""
        if self.dp is None and self.federated is None:
            return self.train_matrix_
        return sp.csr_matrix(self.train_matrix_.shape, dtype=self.train_matrix_.dtype)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        for tower in (self.items_, self.users_):
            for s in tower.sources:
                if isinstance(s, TextSource) and s.encoder.name.startswith("tfidf"):
                    raise ConfigError(f"a model with a TF-IDF text source ({s.side}_features.{s.name}) cannot be "
                                      "saved: its vocabulary is refitted per corpus; use a language model")  # fmt: skip
        arrays: dict[str, np.ndarray] = {"warm": self.warm_.numpy()}
        if self.warmup_ is not None:
            arrays.update({"warmup_taste": self.warmup_[0].numpy(), "warmup_count": self.warmup_[1].numpy()})
        arrays.update({k: v.detach().numpy() for k, v in self._trained().items()})
        extra: dict[str, Any] = {}
        for side, tower in (("item", self.items_), ("user", self.users_)):
            mats, states = tower.state()
            arrays.update({f"{side}_features.{k}": v for k, v in mats.items()})
            extra[f"{side}_features"] = states
        return arrays, extra

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        def group(prefix: str) -> dict[str, torch.Tensor]:
            return {k.split(".", 1)[1]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix + ".")}

        self.algorithm_ = build_algorithm(self.algorithm)
        self.theta_, self.lrs_, self.extra_ = group("theta"), group("lr"), group("extra")
        self.warm_ = torch.from_numpy(arrays["warm"])
        self.warmup_ = ((torch.from_numpy(arrays["warmup_taste"]), torch.from_numpy(arrays["warmup_count"]))
                        if "warmup_taste" in arrays else None)  # fmt: skip
        item_arrays = {k: v.numpy() for k, v in group("item_features").items()}
        user_arrays = {k: v.numpy() for k, v in group("user_features").items()}
        self.items_ = self._item_tower().load(item_arrays, extra["item_features"])
        self.users_ = self._user_tower().load(user_arrays, extra["user_features"])
        self._cache_items()


class _MetaStep:
    """The model's side of the training loop (see `training.TrainStep`)."""

    def __init__(self, model: MetaRecommender, train: Dataset, valid: pd.DataFrame | None,
                 hold_out: bool = True) -> None:  # fmt: skip
        self.m = model
        self.n_items = train.n_items
        self.ranks = time_rank_matrix(train)
        self.ratings = train.matrix(binary=False) if model.objective == "rating" else None
        self.users = np.flatnonzero(np.diff(self.ranks.indptr) >= 2)
        # without meta-valid users, 10% of the training users are held out for early stopping (hold_out)
        self.valid = self._valid_rows(train, valid) if hold_out else None
        self.sampler = EpisodeSampler(self.ranks, self.users, list(model.train_shots), model.train_support,
                                      seed=model.seed)  # fmt: skip
        self.gen = torch.Generator().manual_seed(model.seed)

    def _valid_rows(self, train: Dataset, valid: pd.DataFrame | None
                    ) -> tuple[sp.csr_matrix, np.ndarray, sp.csr_matrix | None]:  # fmt: skip
        """Meta-valid users' time-ranked rows (and ratings); without any, 10% of the training users."""
        if valid is not None and len(valid):
            vds = train.with_interactions(valid)
            vusers = np.unique(valid[USER].to_numpy())
            if 0 < self.m.valid_users < len(vusers):  # early stopping needs a sample, not a million dense rows
                vusers = np.sort(np.random.default_rng(self.m.seed).choice(vusers, self.m.valid_users, replace=False))
            return time_rank_matrix(vds)[vusers], vusers, vds.matrix(binary=False) if self.ratings is not None else None
        rng = np.random.default_rng(self.m.seed)
        n_held = len(self.users) // 10 if not self.m.valid_users else min(len(self.users) // 10, self.m.valid_users)
        held = rng.choice(self.users, max(1, n_held), replace=False)
        self.users = np.setdiff1d(self.users, held)
        return self.ranks[held], held, train.matrix(binary=False) if self.ratings is not None else None

    def named_parameters(self) -> dict[str, torch.Tensor]:
        """The trained tensors under their artefact names (the inner learning rates only when learned)."""
        return {k: v for k, v in self.m._trained().items() if not k.startswith("lr.") or v.requires_grad}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.named_parameters().values())

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self.m.algorithm_.episodic:
            for u, _, sup, qry in self.sampler.epoch(self.m.meta_batch, self.m.tasks_per_epoch):
                yield u, sup, qry
            return
        # non-meta training: each training user's whole history is the target of their own vector
        perm = np.random.default_rng(self.m.seed + epoch).permutation(self.users)
        if self.m.tasks_per_epoch:
            perm = perm[: self.m.tasks_per_epoch]
        for start in range(0, len(perm), self.m.meta_batch):
            bu = perm[start : start + self.m.meta_batch]
            rows = self.ranks[bu]
            sup, qry = split_rows(rows, 0, rows.data)
            yield bu, sup, qry

    def loss(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray], index: int, epoch: int) -> torch.Tensor:
        m = self.m
        bu, sup, qry = batch
        keep = (torch.rand(self.n_items, generator=self.gen) >= m.residual_dropout).float()
        if self.ratings is not None:  # explicit: rows carry the ratings, 0 = unrated
            vals = self.ratings[bu].toarray().astype(np.float32)
            sup, qry = sup * vals, qry * vals
        theta, feats, warm = m.theta_, m.items_.rows(), m.warm_
        order = self.ranks[bu].toarray().astype(np.float32) * (sup > 0) if m.support_order else None
        if m.negatives and m.objective == "ranking" and self.n_items > m.negatives:
            # sampled softmax: this batch's items plus a shared uniform sample of negatives;
            # only their rows of the item table are computed
            cols = self._sample_columns(sup, qry, np.random.default_rng(m.seed + index + 7919 * epoch))
            theta = {k: (v[cols] if k in ("item_res", "item_bias") else v) for k, v in theta.items()}
            feats, warm, keep = m.items_.rows(cols), warm[cols], keep[cols]
            sup, qry = sup[:, cols.numpy()], qry[:, cols.numpy()]
            order = None if order is None else order[:, cols.numpy()]
        E, b = item_table(theta, feats, warm, keep)
        net = Net(m.theta_, m.lrs_, m._inner(), E, b, m.extra_)
        sup_t, qry_t = torch.from_numpy(np.ascontiguousarray(sup)), torch.from_numpy(np.ascontiguousarray(qry))
        order_t = None if order is None else torch.from_numpy(np.ascontiguousarray(order))
        u0 = start_vector(m.theta_, len(bu), m.users_.rows(bu) if m.users_.matrices_ else None, sup_t, E, order_t)
        return m.algorithm_.outer_loss(net, Batch(bu, sup_t, qry_t, u0))

    def task_grads(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray], index: int, epoch: int
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
        """Each task's gradient of every trained tensor (leading axis = task, keys as `named_parameters`)
        and each task's loss: one `vmap(grad)` over the meta-batch, no loop over users. DP-SGD clips
        them one by one (one task = one user). Same batch draws as `loss` (dropout mask, ratings)."""
        m = self.m
        bu, sup, qry = batch
        keep = (torch.rand(self.n_items, generator=self.gen) >= m.residual_dropout).float()
        if self.ratings is not None:
            vals = self.ratings[bu].toarray().astype(np.float32)
            sup, qry = sup * vals, qry * vals
        order = self.ranks[bu].toarray().astype(np.float32) * (sup > 0) if m.support_order else None
        feats, warm, inner, alg = m.items_.rows(), m.warm_, m._inner(), m.algorithm_
        fixed_lrs = {k: v.detach() for k, v in m.lrs_.items()}
        params = {k: v.detach() for k, v in self.named_parameters().items()}

        def one(p: Params, s: torch.Tensor, q: torch.Tensor, o: torch.Tensor | None, uf: Params) -> torch.Tensor:
            theta = {k[6:]: v for k, v in p.items() if k.startswith("theta.")}
            lrs = {**fixed_lrs, **{k[3:]: v for k, v in p.items() if k.startswith("lr.")}}
            E, b = item_table(theta, feats, warm, keep)
            s, q, o = s[None], q[None], None if o is None else o[None]
            u0 = start_vector(theta, 1, {k: v[None] for k, v in uf.items()} or None, s, E, o)
            return alg.outer_loss(Net(theta, lrs, inner, E, b, {}), Batch(np.zeros(1, np.int64), s, q, u0))

        sup_t, qry_t = torch.from_numpy(np.ascontiguousarray(sup)), torch.from_numpy(np.ascontiguousarray(qry))
        order_t = None if order is None else torch.from_numpy(np.ascontiguousarray(order))
        ufeats = m.users_.rows(bu) if m.users_.matrices_ else {}
        dims = (None, 0, 0, None if order_t is None else 0, 0)
        per_task = vmap(grad_and_value(one), in_dims=dims, randomness="same")
        grads, losses = per_task(params, sup_t, qry_t, order_t, ufeats)
        return grads, losses.detach()

    def _sample_columns(self, sup: np.ndarray, qry: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        used = np.flatnonzero((sup + qry).any(axis=0))
        extra = rng.choice(sup.shape[1], size=self.m.negatives, replace=False)
        return torch.from_numpy(np.union1d(used, extra))

    def after_update(self) -> None:
        with torch.no_grad():
            for v in self.m.lrs_.values():
                v.clamp_(min=0.0)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.m._trained().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():  # in place: the optimiser keeps pointing at the same tensors
            for k, v in self.m._trained().items():
                if k in state:
                    v.copy_(state[k])


class _WarmupStep:
    """The warm-up phase's side of the loop (see `meta/warmup.py`): the launch items play new items.
    Every user is adapted once, with the frozen network, on their history without them; a batch of
    users then ranks the launch items they used (apart from those they adopted early) among the
    launch items only. Only the warm-up weights learn."""

    def __init__(self, model: MetaRecommender, history: sp.csr_matrix, new: torch.Tensor, adopters: Adopters) -> None:
        self.m, self.new, self.adopters = model, new, adopters
        self.keys = [k for k in model.theta_ if k.startswith("warm_")]
        self.hist = sp.csr_matrix(history > 0, dtype=np.float32)
        self.target = sp.csr_matrix(self.hist @ sp.diags(new.numpy()) - adopters.reveal.T.multiply(self.hist))
        self.target.eliminate_zeros()
        self.users = np.flatnonzero(np.diff(self.target.indptr) > 0)
        known = sp.csr_matrix(self.hist @ sp.diags(1.0 - new.numpy()))
        known.eliminate_zeros()
        model._cache_items()
        self.E0, self.b0 = model.base_items_
        self.fast = model._adapt_all(known)
        self.taste = adopters.taste(model._final(self.fast))

    def parameters(self) -> list[torch.Tensor]:
        return [self.m.theta_[k] for k in self.keys]

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        perm = np.random.default_rng(self.m.seed + 10_000 + epoch).permutation(self.users)
        for start in range(0, len(perm), self.m.meta_batch):
            yield perm[start : start + self.m.meta_batch]

    def loss(self, bu: np.ndarray, index: int, epoch: int) -> torch.Tensor:
        m, theta = self.m, self.m.theta_
        E, b = apply_warmup(theta, self.E0, self.b0, self.taste, self.adopters.count, self.new)
        fast = {k: v[torch.from_numpy(bu)] for k, v in self.fast.items()}
        lg = batch_logits(fast, Net(theta, m.lrs_, m._inner(), E, b, m.extra_))
        target = torch.from_numpy(self.target[bu].toarray())
        # every user weighs the same, as in the per-user metrics (a heavy user's long tail of new
        # items would otherwise flatten the popularity slope)
        return multinomial_nll(lg, target, exclude=(1.0 - self.new).expand_as(target)).mean()

    def after_update(self) -> None:
        pass

    def state(self) -> dict[str, torch.Tensor]:
        return {k: self.m.theta_[k].detach().clone() for k in self.keys}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k in self.keys:
                self.m.theta_[k].copy_(state[k])


__all__ = ["DEFAULT_ITEM_FEATURES", "MetaRecommender"]
