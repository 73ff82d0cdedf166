"""Hyper-parameter search with Ray Tune: Optuna's TPE proposes, ASHA stops weak trials early, every score is
a meta-valid one.

A trial fits the searched model on fold 0 of the chosen protocol with the sampled values and reports the
model's validation NDCG@10 after every epoch (users held out of training and of the test folds: the
early-stopping users). The test folds are not touched here; `metarec tune` runs them once afterwards for the
default and the chosen config side by side (`eval.experiment`, paired bootstrap).
"""

from __future__ import annotations

import inspect
import math
import time
from pathlib import Path
from typing import Any

from metarec.distributed.settings import DistributedSettings as DistributedConfig
from metarec.distributed.settings import SearchSettings as SearchConfig
from metarec.errors import MetarecError
from metarec.utils import require

METRIC = "valid_ndcg@10"


def _space(search: SearchConfig) -> dict[str, Any]:
    tune = require("ray.tune", "ray", "ray")
    out: dict[str, Any] = {}
    for name, p in search.space.items():
        if p.type == "uniform":
            out[name] = tune.uniform(p.low, p.high)
        elif p.type == "loguniform":
            out[name] = tune.loguniform(p.low, p.high)
        elif p.type == "int":
            out[name] = tune.randint(int(p.low or 0), int(p.high or 0) + 1)  # high inclusive, as written
        else:
            out[name] = tune.choice(list(p.values or []))
    return out


def _inside(p: Any, value: Any) -> bool:
    """Whether a configured value lies in the declared dimension (only then can it be the first trial)."""
    if p.type == "choice":
        return value in (p.values or [])
    return isinstance(value, int | float) and p.low <= value <= p.high


def _trial(sampled: dict[str, Any], kind: str, base: dict[str, Any], seed: int, threads: int,
           fold: Any) -> None:  # fmt: skip
    """One trial: fit with the sampled values, report the running best validation score every epoch."""
    import torch
    from ray import tune

    from metarec.models import build_model
    from metarec.training.callbacks import Callback
    from metarec.utils import seed_everything

    torch.set_num_threads(threads)
    seed_everything(seed)
    model = build_model(kind, {**base, **sampled}, seed=seed)

    class Report(Callback):
        best = -math.inf

        def on_epoch_end(self, trainer: Any, step: Any, epoch: int, logs: dict[str, float]) -> None:
            Report.best = max(Report.best, float(logs.get(METRIC, -math.inf)))
            tune.report({METRIC: Report.best, "epoch": epoch})

    if "callbacks" in inspect.signature(model.fit).parameters:  # the neural models: one report per epoch
        model.fit(fold.train, valid=fold.valid, revealed=fold.revealed, callbacks=[Report()])  # type: ignore[call-arg]
    else:
        model.fit(fold.train, valid=fold.valid, revealed=fold.revealed)
        tune.report({METRIC: float(model.fit_info_.get("best_valid_ndcg@10", float("nan"))), "epoch": 0})


def search(cfg: dict[str, Any], fold: Any, dcfg: DistributedConfig, out_dir: Path,
           tracking_parent: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], float]:  # fmt: skip
    """Run the search inside an open `ray_session`: (best sampled values, one row per trial, seconds)."""
    ray_tune = require("ray.tune", "ray", "ray")
    optuna = require("optuna", "ray")
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    s = SearchConfig.model_validate(cfg["search"])
    from metarec.models import model_spec

    kind, params = model_spec(cfg, s.model)
    seed = int(cfg["seed"])
    max_t = int(params.get("epochs", 100))
    # the configured values are the first trial, so the table shows what the search gained over them
    from metarec.models import build_model

    current = build_model(kind, params, seed=seed).get_params()
    default = {k: current[k] for k in s.space if k in current and _inside(s.space[k], current[k])}
    searcher = ConcurrencyLimiter(
        OptunaSearch(
            metric=METRIC,
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=seed),
            points_to_evaluate=[default] if len(default) == len(s.space) else None,
        ),
        max_concurrent=dcfg.num_workers,
    )
    scheduler = ASHAScheduler(metric=METRIC, mode="max", time_attr="training_iteration",
                              max_t=max(max_t, s.grace_period), grace_period=s.grace_period,
                              reduction_factor=s.reduction_factor)  # fmt: skip
    callbacks = []
    if tracking_parent is not None:  # every trial a nested MLflow run under the tune run
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        mlflow = require("mlflow", "track", "mlflow-skinny")
        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow.get_tracking_uri(),
                                              experiment_name=cfg["tracking"].get("experiment") or cfg["name"],
                                              tags={"mlflow.parentRunId": tracking_parent, "metarec.kind": "trial"},
                                              save_artifact=False))  # fmt: skip
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(
            _trial, kind=kind, base=params, seed=seed, threads=max(1, int(dcfg.cpus_per_worker)), fold=fold
        ),
        {"cpu": dcfg.cpus_per_worker},
    )
    tuner = ray_tune.Tuner(
        trainable,
        param_space=_space(s),
        tune_config=ray_tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=s.trials, time_budget_s=s.time_budget_s
        ),
        run_config=ray_tune.RunConfig(
            name="search", storage_path=str((out_dir / "ray_results").resolve()), callbacks=callbacks, verbose=0
        ),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t0
    rows = []
    for r in grid:
        if r.metrics is None or METRIC not in (r.metrics or {}):
            rows.append({"trial": r.path.rsplit("/", 1)[-1], "params": r.config, "error": str(r.error)})
            continue
        rows.append({"trial": r.metrics.get("trial_id"), "params": r.config, METRIC: float(r.metrics[METRIC]),
                     "epochs": int(r.metrics.get("training_iteration", 0)),
                     "seconds": float(r.metrics.get("time_total_s", 0.0))})  # fmt: skip
    scored = [r for r in rows if METRIC in r and not math.isnan(r[METRIC])]
    if not scored:
        raise MetarecError(f"no trial of the search finished; see {out_dir / 'ray_results'}")
    for r in rows:
        r["default"] = r["params"] == default  # the configured values' own trial
    best = max(scored, key=lambda r: r[METRIC])
    return dict(best["params"]), rows, seconds


def write_search(config_path: Path, cfg: dict[str, Any], best: dict[str, Any], rows: list[dict[str, Any]],
                 seconds: float, out_dir: Path) -> Path:  # fmt: skip
    """The trial table (search.json / .md) and the chosen config: the original file plus
    `[models.<model>-tuned]` (the model's table with the chosen values), so both run side by side."""
    import json
    import tomllib

    tomli_w = require("tomli_w", "ray", "tomli-w")
    from metarec.utils import versions

    model = cfg["search"]["model"]
    raw = tomllib.loads(Path(config_path).read_text())
    raw.setdefault("models", {})[f"{model}-tuned"] = {**raw["models"][model], **best}
    raw["name"] = f"{cfg['name']}-tuned"
    raw.pop("search", None)
    chosen = out_dir / f"{cfg['name']}-tuned.toml"
    chosen.write_text(f"# chosen by `metarec tune` on meta-valid users ({len(rows)} trials)\n" + tomli_w.dumps(raw))
    payload = {"config": str(config_path), "search": cfg["search"], "best": best, "seconds": seconds,
               "trials": rows, "versions": versions()}  # fmt: skip
    (out_dir / "search.json").write_text(json.dumps(payload, indent=2, default=str))
    lines = [f"# Search over {model} ({len(rows)} trials, {seconds:.0f}s; meta-valid NDCG@10, never test users)",
             "", f"| trial | {METRIC} | epochs | seconds | params |", "|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: -r.get(METRIC, -1.0)):
        score = f"{r[METRIC]:.4f}" if METRIC in r else f"failed: {r.get('error')}"
        name = f"{r['trial']} (configured values)" if r.get("default") else r["trial"]
        lines.append(f"| {name} | {score} | {r.get('epochs', '')} | {r.get('seconds', 0):.0f} | "
                     f"`{json.dumps(r['params'], default=str)}` |")  # fmt: skip
    (out_dir / "search.md").write_text("\n".join(lines) + "\n")
    return chosen
