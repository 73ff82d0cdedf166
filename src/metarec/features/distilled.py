"""Collaborative knowledge distilled into content: launch-day vectors that look like learned ones.

A teacher (ALS from `implicit`, fitted on the fold's training interactions only) gives every warm
item a collaborative vector: who uses it together with what. A student (ridge regression, its
shrinkage chosen by leave-one-out on warm items: scikit-learn's RidgeCV) learns to predict that
vector, plus the item's log-popularity, from the item's content
features: any other sources (`inputs`: text through MiniLM or a generative LM, fields). A new item
has no interactions, but it has content, so it gets the student's guess of where the collaborative
space would put it, and how popular it will be.

Every row the model sees is a prediction, never the teacher's own vector: training items get
out-of-fold predictions (cross-fitting, `folds`), so the recommender learns how far to trust the
student on items the student has not seen, which is what a cold item is.

    [models.maml.item_features.distilled.inputs]
    text = { template = "{title}" }
    lm = { type = "text", template = "Movie: {title} ({year})", text = { encoder = "causal-lm" } }
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import ConfigError
from metarec.features.base import FeatureSource, Side


class DistilledSource(FeatureSource):
    kind = "distilled"

    def __init__(
        self,
        name: str = "distilled",
        side: Side = "item",
        inputs: dict[str, dict[str, Any]] | None = None,
        text: dict[str, Any] | None = None,
        factors: int = 32,
        iterations: int = 15,
        regularization: float = 0.05,
        folds: int = 5,
        min_count: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(name, side)
        if side != "item":
            raise ConfigError(f"feature source {name!r} (distilled): only items have a collaborative teacher here")
        if not inputs:
            raise ConfigError(f"feature source {name!r} (distilled) needs inputs, e.g. "
                              "inputs = { text = { template = \"{title}\" } }")  # fmt: skip
        for key, spec in inputs.items():
            kind = (spec or {}).get("type", key)
            if kind in ("id", "distilled"):
                raise ConfigError(f"{name}.inputs.{key}: a student reads content; '{kind}' is not content")
        if factors < 1 or folds < 2 or min_count < 1:
            raise ConfigError(f"{name}: need factors >= 1, folds >= 2, min_count >= 1")
        self.inputs = {k: dict(v or {}) for k, v in inputs.items()}
        self.text = dict(text or {})
        self.factors, self.iterations, self.regularization = factors, iterations, regularization
        self.folds, self.min_count, self.seed = folds, min_count, seed
        self._sources: list[FeatureSource] | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None
        self.alpha_ = 0.0

    @property
    def sources(self) -> list[FeatureSource]:
        if self._sources is None:
            from metarec.features import build_sources

            self._sources = build_sources(self.inputs, "item", self.text)
        return self._sources

    def teacher(self, train: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """(targets, warm mask): ALS item factors and standardised log-popularity, for items with
        at least `min_count` training users."""
        import threadpoolctl
        from implicit.cpu.als import AlternatingLeastSquares

        ui = train.matrix()  # binary users x items
        counts = np.asarray(ui.sum(axis=0)).ravel()
        warm = counts >= self.min_count
        if warm.sum() < 2 * self.folds:
            raise ConfigError(f"{self.name}: only {int(warm.sum())} items have >= {self.min_count} training users; "
                              "lower min_count or use more data")  # fmt: skip
        als = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                      iterations=self.iterations, random_state=self.seed)  # fmt: skip
        with threadpoolctl.threadpool_limits(1, "blas"):  # implicit's advice: its own threads, one-thread BLAS
            als.fit(ui, show_progress=False)
        f = np.asarray(als.item_factors, np.float64)
        f = f / (np.sqrt((f[warm] ** 2).sum(1).mean()) + 1e-12)  # unit mean norm over warm items
        pop = np.log1p(counts)
        pop = (pop - pop[warm].mean()) / (pop[warm].std() + 1e-12)
        return np.hstack([f, pop[:, None]]), warm

    def _student(self) -> Any:
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # the shrinkage is chosen per fit by efficient leave-one-out (GCV) over warm items
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))

    def fit_transform(self, train: Dataset, revealed: pd.DataFrame | None = None) -> np.ndarray:
        from sklearn.model_selection import KFold, cross_val_predict

        x = np.hstack([np.asarray(s.fit_transform(train, revealed), np.float64)
                       for s in self.sources if not s.learned_table])  # fmt: skip
        y, warm = self.teacher(train)
        student = self._student().fit(x[warm], y[warm])
        scaler, ridge = student[0], student[1]
        self.mean_, self.scale_ = scaler.mean_, scaler.scale_
        self.weights_ = np.vstack([ridge.coef_.T, ridge.intercept_[None, :]])  # (d + 1, out)
        self.alpha_ = float(ridge.alpha_)
        out = student.predict(x)  # items the student never learned from: the full student
        folds = KFold(self.folds, shuffle=True, random_state=self.seed)
        # cross-fitting: each warm item is predicted by a student that never saw it
        out[warm] = cross_val_predict(self._student(), x[warm], y[warm], cv=folds)
        self.dim_ = out.shape[1]
        return out.astype(np.float32)

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        if self.weights_ is None or self.mean_ is None or self.scale_ is None:
            raise ConfigError(f"feature source {self.name!r} is not fitted")
        x = np.hstack([np.asarray(s.transform(records), np.float64) for s in self.sources if not s.learned_table])
        z = (x - self.mean_) / self.scale_
        return (z @ self.weights_[:-1] + self.weights_[-1]).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        assert self.weights_ is not None and self.mean_ is not None and self.scale_ is not None
        return {"dim": self.dim_, "inputs": {s.name: s.get_state() | {"dim": s.dim_} for s in self.sources},
                "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
                "weights": self.weights_.tolist(), "alpha": self.alpha_}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        for s in self.sources:
            s.set_state(state["inputs"].get(s.name, {}))
        self.mean_ = np.asarray(state["mean"], np.float64)
        self.scale_ = np.asarray(state["scale"], np.float64)
        self.weights_ = np.asarray(state["weights"], np.float64)
        self.alpha_ = float(state.get("alpha", 0.0))
