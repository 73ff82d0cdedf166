"""The distributed back-end's settings as plain pydantic models: `config.py` checks them in a config file
(with its messages); the back-end validates what it is handed with them (no import of the config layer)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DistributedSettings(BaseModel):
    """[distributed]: which back-end runs the heavy steps (`metarec.distributed`), and with how many workers.

    address: "local" starts a private Ray cluster for the run; "auto" joins one started by `ray start`;
    "ray://host:10001" goes through Ray Client."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "ray"] = "local"
    address: str = "local"
    num_workers: Annotated[int, Field(ge=1)] = 2
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    encode_batch_size: Annotated[int, Field(ge=1)] = 64


class SearchParamSettings(BaseModel):
    """One dimension of a `[search.space]`: uniform / loguniform (low, high), int (low, high), choice (values)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchParamSettings:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty `values` list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} range needs low < high, got low={self.low}, high={self.high}")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"a loguniform range needs low > 0, got {self.low}")
        return self


class SearchSettings(BaseModel):
    """[search]: what `metarec tune` searches (Ray Tune + Optuna TPE + ASHA), scored on meta-valid users only.

    The trials fit `model` on fold 0 of `protocol` and read its validation NDCG@10 (users held out of
    training, never the test users); the test protocols run once afterwards, default beside chosen."""

    model_config = ConfigDict(extra="forbid")

    model: str
    protocol: str | None = None  # default: the config's first protocol
    trials: Annotated[int, Field(ge=1)] = 30
    time_budget_s: Annotated[float, Field(gt=0)] | None = None
    grace_period: Annotated[int, Field(ge=1)] = 3  # ASHA: epochs before a trial may be stopped
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0
    space: dict[str, SearchParamSettings]
