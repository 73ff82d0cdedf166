"""Experiment tracking with MLflow: every `evaluate`, `train` and `tune` run logs its resolved config
(flattened to dotted params), its metrics and its artefacts to a tracking store.

The store is `--tracking-uri`, else `[tracking] uri`, else `$MLFLOW_TRACKING_URI`, else a SQLite file in
./mlruns (artefacts beside it), readable with `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`.
Needs the `track` extra (in `ray`). MLflow metric names allow no '@': ndcg@10 is logged as ndcg_at_10.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metarec.utils import require, versions

DEFAULT_DIR = Path("mlruns")


def tracking_uri(uri: str | None = None) -> str:
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def metric_name(name: str) -> str:
    """A name MLflow accepts (alphanumerics, _ - . space : /)."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"models.maml.epochs": "5", ...}: MLflow params are flat strings (values cut at MLflow's 6000 chars)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value, default=str)[:6000]
    return out


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """An experiment summary as metrics: `<protocol[@k]>/<model>/<metric>` = the mean over users."""
    out: dict[str, float] = {}
    for label, row in summary.items():
        for model, entry in row.items():
            for metric, stats in (entry.get("metrics") or {}).items():
                out[metric_name(f"{label}/{model}/{metric}")] = float(stats["mean"])
            for metric, value in (entry.get("aggregate") or {}).items():
                out[metric_name(f"{label}/{model}/{metric}")] = float(value)
    return out


class Tracker:
    """An open MLflow run; `None` stands for "not tracking" in callers."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow, self.run = mlflow, run

    @property
    def run_id(self) -> str:
        return str(self.run.info.run_id)

    def params(self, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        items = list(flat.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.mlflow.log_params(dict(items[start : start + 100]))

    def metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {metric_name(k): float(v) for k, v in metrics.items() if v == v}  # NaN: undefined, not logged
        if clean:
            self.mlflow.log_metrics(clean, step=step)

    def curve(self, history: list[dict[str, float]]) -> None:
        """A training history (one dict per epoch) as stepped metrics: the training curves."""
        for epoch, logs in enumerate(history):
            self.metrics({k: v for k, v in logs.items() if isinstance(v, int | float)}, step=epoch)

    def artifacts(self, path: str | Path) -> None:
        p = Path(path)
        if p.is_dir():
            self.mlflow.log_artifacts(str(p))
        elif p.exists():
            self.mlflow.log_artifact(str(p))


@contextmanager
def mlflow_run(kind: str, cfg: Mapping[str, Any], enabled: bool | None = None, uri: str | None = None,
               run_name: str | None = None, nested: bool = False) -> Iterator[Tracker | None]:  # fmt: skip
    """An MLflow run for a `kind` ("evaluate", "train", "tune", "trial") of config `cfg`, or None when
    tracking is off (`enabled` None reads `[tracking] mlflow`). Params, tags and versions are logged here."""
    tcfg = dict(cfg.get("tracking") or {})
    on = tcfg.get("mlflow", False) if enabled is None else enabled
    if not on:
        yield None
        return
    mlflow = require("mlflow", "track", "mlflow-skinny")
    if not nested:
        mlflow.set_tracking_uri(tracking_uri(uri or tcfg.get("uri")))
        mlflow.set_experiment(tcfg.get("experiment") or cfg.get("name") or "metarec")
    with mlflow.start_run(run_name=run_name or f"{kind}:{cfg.get('name')}", nested=nested) as run:
        tracker = Tracker(mlflow, run)
        mlflow.set_tags({"metarec.kind": kind, **{f"version.{k}": v for k, v in versions().items()}})
        tracker.params({k: v for k, v in cfg.items() if k not in ("tracking",)})
        yield tracker
