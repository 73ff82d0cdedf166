"""The one interface every model implements, in the scikit-learn / implicit style.

Constructors take hyper-parameters only; `fit` learns state that ends in `_`. Scoring is split in
two so that warm and cold users share one path:

    state = model.fold_in(history, users, known)  # known: the users were in training
    scores = model.score_state(state)       # (n_users, n_items) matrix product, no Python loops

`adapt` / `recommend_for` wrap the same two calls for one new user (the serving path).

State, not attributes: `get_params()` returns the constructor arguments only (so
`sklearn.base.clone` works), and `state_dict()` / `load_state_dict()` carry everything learned as
named arrays plus a JSON-ready dict, which `models/io.py` writes as safetensors + a manifest.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec.data.schema import ITEM, Dataset
from metarec.errors import ConfigError, MetarecError


@dataclass
class UserState:
    """What a model knows of a batch of users: their history and a model-specific payload."""

    history: sp.csr_matrix
    payload: Any = None


class NotFittedError(MetarecError):
    pass


@dataclass
class ModelState:
    """What a fitted model learned: named arrays (saved as safetensors) and JSON-ready values."""

    arrays: dict[str, np.ndarray]
    extra: dict[str, Any]


def pack_csr(prefix: str, m: sp.csr_matrix, out: dict[str, np.ndarray]) -> None:
    m = m.tocsr()
    out[f"{prefix}.indptr"] = m.indptr.astype(np.int64)
    out[f"{prefix}.indices"] = m.indices.astype(np.int64)
    out[f"{prefix}.data"] = m.data.astype(np.float32)
    out[f"{prefix}.shape"] = np.asarray(m.shape, np.int64)


def unpack_csr(prefix: str, arrays: dict[str, np.ndarray]) -> sp.csr_matrix:
    rows, cols = (int(x) for x in arrays[f"{prefix}.shape"])
    parts = (arrays[f"{prefix}.data"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.indptr"])
    return sp.csr_matrix(parts, shape=(rows, cols))


class Recommender(ABC):
    name: str = "recommender"
    #: can rank items that have no training interaction (from their text); CF models cannot
    supports_cold_items: bool = False
    #: can take new users through fold_in without refitting
    supports_cold_users: bool = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        """Learn from `train`; `valid` (meta-valid users' interactions) may only steer early stopping,
        `revealed` (cold items' early adopters) may only be read as item side information."""

    @abstractmethod
    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        """Scores (n_users, n_items or len(items)); higher is better."""

    def fold_in(self, history: sp.csr_matrix, users: np.ndarray | None = None, known: bool = False) -> UserState:
        """State for a batch of users from their history.

        `users` (dense ids) lets a model read side information such as profile text; `known` says the
        users were in training, so learned per-user parameters may be used. Default: the history is
        all a model needs (popularity, item-KNN).
        """
        return UserState(history.tocsr().astype(np.float32))

    # ---------------------------------------------------------------- shared
    def fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> Self:
        self.n_items_ = train.n_items
        self.n_users_ = train.n_users
        self.train_matrix_ = train.matrix()
        self._states: dict[int, UserState] = {}
        self.fit_info_: dict[str, Any] = {}
        self._fit(train, valid, revealed)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_matrix_"):
            raise NotFittedError(f"{self.name} is not fitted; call fit(train) first")

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Scores for users seen in training (their training rows are their history)."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        return self.score_state(self.fold_in(self._known_history(users), users, known=True), items)

    def _known_history(self, users: np.ndarray | list[int]) -> sp.csr_matrix:
        """Training users' rows as `fold_in` reads them (binary here; time positions for order readers)."""
        return self.train_matrix_[users]

    def state_for(self, user: int) -> UserState:
        """A training user's state, computed once (for a meta model that is an adaptation) and cached."""
        self._check_fitted()
        states = self.__dict__.setdefault("_states", {})
        if user not in states:
            states[user] = self.fold_in(self._known_history([user]), np.array([user]), known=True)
        return states[user]

    def recommend(self, user: int, k: int = 10, exclude_seen: bool = True) -> list[tuple[int, float]]:
        return self.recommend_for(self.state_for(user), k, exclude_seen)

    def adapt(self, support: pd.DataFrame, profile_text: str | None = None) -> UserState:
        """A new user's state from a few interactions (dense item ids in column `item`)."""
        self._check_fitted()
        items = support[ITEM].to_numpy(np.int64)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items_):
            raise MetarecError(f"support names items outside 0..{self.n_items_ - 1}")
        rated = getattr(self, "predicts_ratings", False) and "rating" in support.columns
        data = support["rating"].to_numpy(np.float32) if rated else np.ones(len(items), np.float32)
        row = sp.csr_matrix((data, (np.zeros(len(items), np.int64), items)), shape=(1, self.n_items_))
        row.sum_duplicates()
        if not rated:
            row.data[:] = 1.0
        return self.fold_in(row, None, known=False)

    def recommend_for(self, state: UserState, k: int = 10, exclude_seen: bool = True) -> list[tuple[int, float]]:
        scores = self.score_state(state)[0].astype(np.float64)
        if exclude_seen:
            scores[state.history[0].indices] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def known_items(self, user: int) -> np.ndarray:
        """Items a training user interacted with (dense ids)."""
        self._check_fitted()
        return self.train_matrix_[user].indices.copy()

    # ---------------------------------------------------------------- parameters and state
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, as given (scikit-learn's contract; `clone` relies on it)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        bad = sorted(set(params) - set(self._param_names()))
        if bad:
            raise MetarecError(f"{type(self).__name__} has no parameter(s) {bad}; it has {self._param_names()}")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What this model learned beyond the training matrix; override with `_load_state`."""
        return {}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        return None

    def _train_to_save(self) -> sp.csr_matrix:
        """The training matrix as the artefact stores it (known users' histories, for serving them)."""
        return self.train_matrix_

    def state_dict(self) -> ModelState:
        self._check_fitted()
        arrays, extra = self._state()
        pack_csr("train", self._train_to_save(), arrays)
        return ModelState(arrays, {**extra, "fit_info": self.fit_info_})

    def load_state_dict(self, state: ModelState) -> Self:
        """Restore a fitted model (the constructor has been called with the saved `get_params()`)."""
        self.train_matrix_ = unpack_csr("train", state.arrays)
        self.n_users_, self.n_items_ = self.train_matrix_.shape
        self._states = {}
        self.fit_info_ = dict(state.extra.get("fit_info", {}))
        self._load_state(state.arrays, state.extra)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def build_wrapped(spec: dict[str, Any] | None, default: str, owner: str, example: str, seed: int,
                  refused: frozenset[str] = frozenset()) -> Recommender:  # fmt: skip
    """The model a wrapper (re-rankers) works on, from its `base = { type = ..., ... }` table; `refused`
    kinds (the wrapper itself) cannot be their own base."""
    from metarec.models import build_model

    cfg = dict(spec or {"type": default})
    kind = cfg.pop("type", None)
    if kind is None or kind in refused:
        raise ConfigError(f"{owner}.base needs {example}")
    return build_model(kind, cfg, seed=seed)


def pack_wrapped(base: Recommender) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A wrapped model's learned state, under 'base.' keys (see `unpack_wrapped`)."""
    state = base.state_dict()
    return {f"base.{k}": v for k, v in state.arrays.items()}, {"base": state.extra}


def unpack_wrapped(fresh: Recommender, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> Recommender:
    base = {k.removeprefix("base."): v for k, v in arrays.items() if k.startswith("base.")}
    return fresh.load_state_dict(ModelState(base, extra["base"]))


@runtime_checkable
class Servable(Protocol):
    """What the service may use of a model, and nothing private: adapt a user, place items, score."""

    n_items_: int

    @property
    def reads_profile_text(self) -> bool: ...

    def adapt(self, support: pd.DataFrame, profile_text: str | None = None,
              added: tuple[np.ndarray, np.ndarray] | None = None) -> UserState: ...  # fmt: skip

    def query_vector(self, state: UserState) -> np.ndarray: ...

    def item_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...

    def new_item_vectors(self, records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...

    def item_text(self) -> Any: ...

    def known_items(self, user: int) -> np.ndarray: ...

    @property
    def learns_from_adopters(self) -> bool: ...

    def warm_up(self, E: np.ndarray, b: np.ndarray, taste: np.ndarray, count: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip
