"""Selection for text transfer ml-100k -> Amazon MI on the target's meta-valid users only (not a test run).

Each candidate is a meta model fitted on fold 0's training users of Amazon MI cold-user, either from
scratch (target-only) or from the weights of the same model trained on all of ml-100k (`init_from`);
the score is NDCG@10 on fold 0's meta-valid users after adapting on their k earliest items (k = 1, 3, 5),
the way test users are asked. Test users are never touched. The chosen settings go into
`bench_transfer.py`. Writes benchmarks/results/selection_transfer.{json,md}.

    python benchmarks/select_transfer.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHOTS = (1, 3, 5)

REVIEW_TEXT = {"text": {"template": "{reviews}", "review_field": "review_text", "max_reviews": 10}, "id": {}}
# (name, target model of amazon-mi-meta.toml, source model of ml-100k-meta.toml or None, overrides)
CANDIDATES: list[tuple[str, str, str | None, dict]] = [
    ("maml target-only", "maml", None, {}),
    ("maml from ml-100k", "maml", "maml", {}),
    ("maml from ml-100k, lr 3e-4", "maml", "maml", {"lr": 3e-4}),
    ("maml target-only, review text", "maml", None, {"item_features": REVIEW_TEXT}),
    ("maml from ml-100k, review text", "maml", "maml", {"item_features": REVIEW_TEXT}),
    ("maml from ml-100k, review text, lr 3e-4", "maml", "maml", {"item_features": REVIEW_TEXT, "lr": 3e-4}),
    ("maml-set target-only", "maml-set", None, {}),
    ("maml-set from ml-100k", "maml-set", "maml-set", {}),
]


def main() -> int:
    os.chdir(ROOT)  # the configs name data relative to the repository
    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.data.splits import make_folds, shot_tasks
    from metarec.eval.evaluate import evaluate_task
    from metarec.eval.transfer import pretrain_source
    from metarec.models import build_model
    from metarec.utils import versions

    source_cfg = load_config("configs/ml-100k-meta.toml")
    target_cfg = load_config("configs/amazon-mi-meta.toml")
    sources: dict[str, Path] = {}
    ds = load_dataset(target_cfg["dataset"])
    params = {k: v for k, v in target_cfg["protocols"]["cold-user"].items() if k != "type"}
    fold = next(iter(make_folds(ds, "cold-user", {**params, "folds": [0]}, int(target_cfg["seed"]))))
    tasks = shot_tasks(fold.valid, list(SHOTS), ds.n_items, fold.fold, protocol="valid")
    pop = np.bincount(fold.train.interactions["item"].to_numpy(), minlength=ds.n_items)
    log = []
    for name, model, source, over in CANDIDATES:
        t0 = time.perf_counter()
        spec = {**target_cfg["models"][model], **over}
        spec.pop("type", None)
        spec["text"] = target_cfg["text"]
        if source is not None:
            if source not in sources:
                sources[source] = pretrain_source(source_cfg, source, Path("runs") / f"transfer-source-{source}",
                                                  log=print)  # fmt: skip
            spec["init_from"] = str(sources[source])
        fitted = build_model("meta", spec, seed=int(target_cfg["seed"])).fit(fold.train, valid=fold.valid)
        scores = {f"k={t.k}": float(np.nanmean(evaluate_task(fitted, t, [10], ("ndcg",), pop).per_user["ndcg@10"]))
                  for t in tasks}  # fmt: skip
        entry = {"name": name, "model": model, "source": source, "overrides": over, "valid_ndcg@10": scores,
                 "best_epoch": fitted.fit_info_["best_epoch"], "seconds": time.perf_counter() - t0}  # fmt: skip
        log.append(entry)
        print(name, {k: round(v, 4) for k, v in scores.items()}, f"epoch {entry['best_epoch']}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "selection_transfer.json").write_text(json.dumps({"log": log, "versions": versions()}, indent=2))
    md = ["# Selection: text transfer ml-100k -> Amazon MI (meta-valid users of fold 0 only)", "",
          "NDCG@10 of fold 0's meta-valid users after adapting on their k earliest items. Test users untouched.", "",
          "| candidate | " + " | ".join(f"k={k}" for k in SHOTS) + " | best epoch | seconds |",
          "|---|" + "---|" * (len(SHOTS) + 2)]  # fmt: skip
    for e in log:
        cells = " | ".join(f"{e['valid_ndcg@10'][f'k={k}']:.4f}" for k in SHOTS)
        md.append(f"| {e['name']} | {cells} | {e['best_epoch']} | {e['seconds']:.0f} |")
    (RESULTS / "selection_transfer.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
