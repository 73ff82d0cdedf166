"""Benchmark: MAML meta-trained with Ray Train (2 gloo workers, each on half of every meta-batch, gradients
all-reduced) against the same model trained in one process, on ml-100k cold users.

Same folds, same seed per fold, same meta-valid users for early stopping; both models are scored on the
same test users (k = 1, 5, 20 earliest items as support). Reports per k the local mean NDCG@10 with its
95 % interval (Student t over users), the Ray-trained mean and whether it lies inside, and the paired
bootstrap ratio Ray / local. Writes benchmarks/results/ray_train.{json,md}.

    python benchmarks/bench_ray_train.py [--folds 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.data.splits import make_folds
    from metarec.distributed import ray_session
    from metarec.distributed.cluster import startup_seconds
    from metarec.distributed.train import train_distributed
    from metarec.eval.evaluate import evaluate_task
    from metarec.eval.experiment import _units, score_unit
    from metarec.eval.stats import mean_ci, paired_bootstrap
    from metarec.models.io import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", default="0,1")
    args = ap.parse_args()
    chosen = [int(f) for f in args.folds.split(",")]
    cfg = load_config(ROOT / "configs/ml-100k-meta.toml", ["protocols.cold-user.shots=[1, 5, 20]"])
    seed = int(cfg["seed"])
    ds = load_dataset(cfg["dataset"])
    params = dict(cfg["protocols"]["cold-user"])
    params.pop("type", None)
    folds = [f for f in make_folds(ds, "cold-user", params, seed) if f.fold in chosen]
    ev = cfg["evaluation"]
    pop_of = {f.fold: np.bincount(f.train.interactions["item"].to_numpy(), minlength=ds.n_items) for f in folds}
    local: dict[int, list[np.ndarray]] = {}
    remote: dict[int, list[np.ndarray]] = {}
    timing = {"local_fit": 0.0, "ray_fit": 0.0}
    fits: list[dict] = []
    for fold in folds:
        (unit,) = [u for u in _units(cfg, "cold-user", fold) if u.display == "maml"]
        results, seconds = score_unit(cfg, ds, unit)
        timing["local_fit"] += seconds
        for r in results:
            local.setdefault(int(r.task.k), []).append(r.per_user["ndcg@10"])
        print(f"fold {fold.fold}: local fit {seconds:.0f} s", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        ray_session({"backend": "ray", "address": "local", "num_workers": 2}) as session,
    ):
        assert session is not None
        timing["ray_connect"] = startup_seconds.get("connect", 0.0)
        for fold in folds:
            fold_cfg = {**cfg, "seed": seed + fold.fold}  # score_unit seeds the model with seed + fold
            out = Path(tmp) / f"fold{fold.fold}"
            t = time.perf_counter()
            train_distributed(fold_cfg, "maml", fold.train, session, out, valid=fold.valid)
            seconds = time.perf_counter() - t
            timing["ray_fit"] += seconds
            model, manifest = load_model(out)
            fits.append({"fold": fold.fold, "ray_epochs": manifest["metrics"].get("epochs"),
                         "ray_best_valid": manifest["metrics"].get("best_valid_ndcg@10")})  # fmt: skip
            for task in fold.tasks:
                n_train = int(fold.train.interactions["user"].nunique())
                r = evaluate_task(model, task, list(ev["ks"]), tuple(ev["metrics"]), pop_of[fold.fold], n_train,
                                  int(ev["chunk_elements"]), seed)  # fmt: skip
                remote.setdefault(int(task.k), []).append(r.per_user["ndcg@10"])
            print(f"fold {fold.fold}: Ray Train fit {seconds:.0f} s", flush=True)
    rows = []
    for k in sorted(local):
        a, b = np.concatenate(local[k]), np.concatenate(remote[k])
        ci = mean_ci(a)
        ratio = paired_bootstrap(b, a, kind="ratio", seed=seed)
        mb = float(np.nanmean(b))
        rows.append({"k": k, "users": len(a), "local": ci.mean, "local_ci": [ci.low, ci.high], "ray": mb,
                     "ray_inside_local_ci": bool(ci.low <= mb <= ci.high),
                     "ratio": ratio.mean, "ratio_ci": [ratio.low, ratio.high]})  # fmt: skip
    report = {
        "commit": os.environ.get("METAREC_GIT_COMMIT") or subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}", "folds": chosen, "rows": rows,
        "timing": timing, "fits": fits,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray_train.json").write_text(json.dumps(report, indent=1))
    lines = [
        "# Ray Train (2 workers) vs one process: MAML on ml-100k cold users", "",
        f"commit `{report['commit']}`, {report['machine']}; folds {chosen} of 5; NDCG@10 over their test users", "",
        "| k | users | local [95% CI] | Ray Train | inside? | Ray / local [paired 95%] |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['k']} | {r['users']} | {r['local']:.4f} [{r['local_ci'][0]:.4f}, {r['local_ci'][1]:.4f}] | "
                     f"{r['ray']:.4f} | {'yes' if r['ray_inside_local_ci'] else 'no'} | {r['ratio']:.3f} "
                     f"[{r['ratio_ci'][0]:.3f}, {r['ratio_ci'][1]:.3f}] |")  # fmt: skip
    lines += ["", f"Fit time: local {timing['local_fit']:.0f} s, Ray Train {timing['ray_fit']:.0f} s (2 workers of "
              f"1 CPU; a checkpoint every epoch), cluster start {timing['ray_connect']:.1f} s.", ""]  # fmt: skip
    (RESULTS / "ray_train.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
