"""Transfer across catalogues through text: `metarec transfer --source X --target Y`.

Language is what makes a film and a guitar comparable: both are text through the same encoder. A
meta model is trained on the source catalogue and saved; its catalogue-independent weights (text
projections, user start, head, set encoder, inner learning rates: `MetaRecommender.init_from`) then
start the same model on the target catalogue, whose items have vectors from their own text on day
one. The target's cold-user folds score, side by side and on the same users:

- `<model>`: target-only training (the reference every transferred row is paired with);
- `<model>-zero`: the source network with no target training step (item biases from target counts);
- `<model>-few<N>`: N target epochs from the source start;
- `<model>-full`: full target training (early stopping) from the source start;
- the target config's popularity / random baselines.

Source and target share no users and no items: nothing but the weights crosses over.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError

BASELINES = ("random", "popularity")


def is_artifact(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").exists()


def pretrain_source(cfg: dict[str, Any], model: str, dest: str | Path,
                    log: Callable[[str], Any] | None = None) -> Path:  # fmt: skip
    """Train `[models.<model>]` of the source config on its whole dataset (its own meta-valid users
    stop it early) and save the artefact the target fits start from."""
    from metarec.data.sources import load_dataset
    from metarec.models import build_model, model_spec
    from metarec.models.io import save_model

    if model not in cfg["models"]:
        raise ConfigError(f"source config {cfg['name']!r} has no [models.{model}]; it has {', '.join(cfg['models'])}")
    kind, params = model_spec(cfg, model)
    if kind != "meta":
        raise ConfigError(f"transfer starts from a meta model; source [models.{model}] is {kind!r}")
    ds = load_dataset(cfg["dataset"])
    fitted = build_model(kind, params, seed=int(cfg["seed"])).fit(ds)
    out = save_model(fitted, dest, ds, cfg)
    if log is not None:
        info = fitted.fit_info_
        log(
            f"source {model} trained on {ds.name} ({ds.n_users} users, {ds.n_items} items): {info['epochs']} epochs, "
            f"best meta-valid NDCG@10 {info['best_valid_ndcg@10']:.4f}, {info['train_seconds']:.0f}s; saved {out}"
        )
    return out


def transfer_config(target: dict[str, Any], model: str, source: str | Path, source_name: str,
                    few_epochs: int = 5, lr: float | None = None,
                    baselines: tuple[str, ...] = BASELINES) -> dict[str, Any]:  # fmt: skip
    """The target config reduced to its cold-user protocols, its baselines and four variants of
    `[models.<model>]` (target-only, zero / few / full from `source`), paired with the target-only one.
    `lr`: the learning rate of the rows trained from the source start (fine-tuning often wants a smaller
    one than training from scratch); default the model's own."""
    if model not in target["models"]:
        raise ConfigError(f"target config {target['name']!r} has no [models.{model}]; it has "
                          f"{', '.join(target['models'])}")  # fmt: skip
    base = dict(target["models"][model])
    if base.get("type", model) != "meta":
        raise ConfigError(f"transfer adapts a meta model; target [models.{model}] is {base.get('type', model)!r}")
    for key in ("federated", "item_warmup", "init_from"):  # each would change what the zero / few rows mean
        if base.get(key):
            raise ConfigError(f"target [models.{model}] sets {key}: transfer compares plain training from scratch and "
                              f"from the source start; drop {key} for the transfer run")  # fmt: skip
    if lr is not None and not lr > 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    if few_epochs < 1:
        raise ConfigError(f"--few-epochs must be >= 1 (zero target training is its own row), got {few_epochs}")
    protocols = {name: p for name, p in target["protocols"].items() if p.get("type", name) == "cold-user"}
    if not protocols:
        raise ConfigError(f"target config {target['name']!r} has no cold-user protocol: transfer is measured on "
                          "the target's cold users ([protocols.cold-user])")  # fmt: skip
    src = str(Path(source).resolve())
    models: dict[str, Any] = {b: target["models"].get(b, {}) for b in baselines}
    models[model] = base
    models[f"{model}-zero"] = {**base, "init_from": src, "epochs": 0}
    tuned = {**base, "init_from": src, **({"lr": lr} if lr is not None else {})}
    models[f"{model}-few{few_epochs}"] = {**tuned, "epochs": few_epochs}
    models[f"{model}-full"] = tuned
    cfg = copy.deepcopy(target)
    cfg.update(name=f"{target['name']}-from-{source_name}", protocols=protocols, models=models)
    refs = [model, *(["popularity"] if "popularity" in models else [])]
    cfg["evaluation"] = {**cfg["evaluation"], "compare_to": refs, "compare_to_best": []}
    # built from an already validated config: the new rows are its own model with known keys (init_from, epochs, lr)
    cfg["transfer"] = {"source": src, "source_name": source_name, "model": model, "few_epochs": few_epochs, "lr": lr}
    return cfg
