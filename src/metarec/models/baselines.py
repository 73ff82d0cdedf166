"""Collaborative baselines: Random, Popularity, item-KNN and ALS / BPR from `implicit`.

Each handles a cold user through `fold_in` from the support items alone: item-KNN sums the
neighbours of the support items, ALS solves the user's least-squares step with item factors fixed
(implicit's `recalculate_user`), BPR runs a few vectorised SGD epochs on the new user vectors only.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from implicit.nearest_neighbours import CosineRecommender
from implicit.utils import ParameterWarning
from threadpoolctl import threadpool_limits

from metarec.data.schema import ITEM, USER, Dataset
from metarec.errors import DataError
from metarec.models.base import Recommender, UserState, pack_csr, unpack_csr


def _cols(m: np.ndarray, items: np.ndarray | None) -> np.ndarray:
    return m if items is None else m[..., items]


class RandomRecommender(Recommender):
    """Uniform random scores: the floor every model must clear."""

    name = "random"
    supports_cold_items = True

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        self.rng_ = np.random.default_rng(self.seed)

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.rng_ = np.random.default_rng(self.seed)

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        n = self.n_items_ if items is None else len(items)
        return self.rng_.random((state.history.shape[0], n), dtype=np.float32)


class PopularityRecommender(Recommender):
    """Most-interacted items first; strong on MovieLens, and the honest bar for cold users.

    Where a cold-item split reveals early adopters (`revealed`), their counts rank
    the cold items too: "popularity among cold items", as a catalogue would see it after launch.
    """

    name = "popularity"

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        self.popularity_ = np.asarray(self.train_matrix_.sum(axis=0)).ravel().astype(np.float32)
        self.supports_cold_items = revealed is not None and len(revealed) > 0
        if self.supports_cold_items:
            assert revealed is not None
            self.popularity_ += np.bincount(revealed[ITEM].to_numpy(), minlength=self.n_items_).astype(np.float32)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"popularity": self.popularity_}, {"supports_cold_items": self.supports_cold_items}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.popularity_ = arrays["popularity"]
        self.supports_cold_items = bool(extra["supports_cold_items"])

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        return np.tile(_cols(self.popularity_, items), (state.history.shape[0], 1))


def _with_revealed(train: sp.csr_matrix, revealed: pd.DataFrame | None) -> sp.csr_matrix:
    """The training matrix plus one entry per revealed early-adopter interaction (users x items)."""
    if revealed is None or not len(revealed):
        return train
    m = sp.csr_matrix((np.ones(len(revealed), np.float32), (revealed[USER].to_numpy(), revealed[ITEM].to_numpy())),
                      shape=train.shape)  # fmt: skip
    return sp.csr_matrix(train + m)


class ItemKNNRecommender(Recommender):
    """Cosine item-item neighbours (implicit's CosineRecommender); a user's items vote for theirs.

    Where a cold-item split reveals early adopters (`revealed`), their interactions join the item-item
    similarities (never the users' histories), so a new item's neighbours are what its early adopters
    also used: item-KNN then ranks new items, as popularity does from their counts."""

    name = "itemknn"

    def __init__(self, neighbours: int = 100, seed: int = 0, num_threads: int = 0) -> None:
        super().__init__(seed)
        self.neighbours = neighbours
        self.num_threads = num_threads

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        knn = CosineRecommender(K=self.neighbours, num_threads=self.num_threads)
        with warnings.catch_warnings():  # implicit's own normalize() hands itself a COO matrix
            warnings.simplefilter("ignore", ParameterWarning)
            knn.fit(_with_revealed(self.train_matrix_, revealed), show_progress=False)
        self.supports_cold_items = revealed is not None and len(revealed) > 0
        self.similarity_ = knn.similarity.tocsr().astype(np.float32)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        out: dict[str, np.ndarray] = {}
        pack_csr("similarity", self.similarity_, out)
        return out, {"supports_cold_items": self.supports_cold_items}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.similarity_ = unpack_csr("similarity", arrays)
        self.supports_cold_items = bool(extra.get("supports_cold_items", False))

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        sim = self.similarity_ if items is None else self.similarity_[:, items]
        return np.asarray((state.history @ sim).todense(), dtype=np.float32)


class _FactorModel(Recommender):
    """implicit's factor models: learned factors for training users, a fold-in for new ones."""

    model_: AlternatingLeastSquares | BayesianPersonalizedRanking

    def _build(self) -> AlternatingLeastSquares | BayesianPersonalizedRanking:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"item_factors": self.model_.item_factors, "user_factors": self.model_.user_factors}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.model_ = self._build()  # implicit's models are plain factor arrays once fitted
        self.model_.item_factors = arrays["item_factors"]
        self.model_.user_factors = arrays["user_factors"]

    def _fold_in_new(self, history: sp.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        history = history.tocsr().astype(np.float32)
        if known and users is not None:
            return UserState(history, self.model_.user_factors[users])
        return UserState(history, self._fold_in_new(history))

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        V = self.model_.item_factors if items is None else self.model_.item_factors[items]
        return state.payload @ V.T


class ALSRecommender(_FactorModel):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) via `implicit`; cold users by fold-in."""

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        super().__init__(seed)
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.num_threads = num_threads

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        # implicit parallelises over users itself; a threaded BLAS underneath only oversubscribes
        with threadpool_limits(1, "blas"):
            self._fit_als()

    def _build(self) -> AlternatingLeastSquares:
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.num_threads,
        )

    def _fit_als(self) -> None:
        self.model_ = self._build()
        self.model_.fit(self.train_matrix_, show_progress=False)

    def _fold_in_new(self, history: sp.csr_matrix) -> np.ndarray:
        return np.atleast_2d(self.model_.recalculate_user(np.arange(history.shape[0]), history))


class BPRRecommender(_FactorModel):
    """BPR-MF (Rendle et al. 2009) via `implicit`; cold users by SGD on their vector alone."""

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        fold_in_epochs: int = 50,
        fold_in_lr: float = 0.05,
        seed: int = 0,
        num_threads: int = 1,  # implicit's BPR is Hogwild SGD: more threads, faster but not reproducible
    ) -> None:
        super().__init__(seed)
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.fold_in_epochs = fold_in_epochs
        self.fold_in_lr = fold_in_lr
        self.num_threads = num_threads

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        self.model_ = self._build()
        self.model_.fit(self.train_matrix_, show_progress=False)

    def _build(self) -> BayesianPersonalizedRanking:
        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.num_threads,
        )

    def _fold_in_new(self, history: sp.csr_matrix) -> np.ndarray:
        """BPR updates on the new users' vectors only, all users at once per step.

        implicit's item factors end in a bias column and its user factors in a constant 1, so the
        learned vector keeps that layout: only the first `factors` entries move.
        """
        V = self.model_.item_factors
        n, d = history.shape[0], V.shape[1]
        U = np.zeros((n, d), np.float32)
        U[:, -1] = 1.0
        counts = np.diff(history.indptr)
        active = np.flatnonzero(counts > 0)
        if len(active) == 0:
            return U
        rng = np.random.default_rng(self.seed)
        steps = self.fold_in_epochs * int(max(1, counts.max()))
        for _ in range(steps):
            pick = history.indptr[active] + (rng.random(len(active)) * counts[active]).astype(np.int64)
            pos = history.indices[pick]
            neg = rng.integers(0, V.shape[0], size=len(active))
            diff = V[pos] - V[neg]
            x = (U[active] * diff).sum(axis=1)
            g = 1.0 / (1.0 + np.exp(x))
            grad = g[:, None] * diff - self.regularization * U[active]
            grad[:, -1] = 0.0
            U[active] += self.fold_in_lr * grad
        return U


class ItemMeanRecommender(Recommender):
    """Each item's mean rating, shrunk toward the global mean: the explicit-rating baseline that is
    known to be hard to beat in MeLU's protocol; it ranks by that mean too."""

    name = "itemmean"
    supports_cold_items = False
    predicts_ratings = True

    def __init__(self, shrinkage: float = 5.0, seed: int = 0) -> None:
        super().__init__(seed)
        self.shrinkage = shrinkage

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        if not train.has_ratings:
            raise DataError(f"{train.name} has no ratings: itemmean needs explicit feedback")
        sums = np.asarray(train.matrix(binary=False).sum(axis=0)).ravel()
        counts = np.asarray(self.train_matrix_.sum(axis=0)).ravel()
        self.global_mean_ = float(sums.sum() / max(1.0, counts.sum()))
        self.item_means_ = ((sums + self.shrinkage * self.global_mean_) / (counts + self.shrinkage)).astype(np.float32)

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"item_means": self.item_means_}, {"global_mean": self.global_mean_}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.item_means_, self.global_mean_ = arrays["item_means"], float(extra["global_mean"])

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        return np.tile(_cols(self.item_means_, items), (state.history.shape[0], 1))
