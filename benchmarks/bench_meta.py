"""Benchmark: meta-training time and memory, and the latency of adapting one new user.

Meta-trains each algorithm on the training users of fold 0 of the ml-100k cold-user split (the
same setting as the results table), then adapts 500 held-out users one at a time with k = 20
support items on ONE CPU thread, timing `adapt` alone and `adapt` + scoring the catalogue.
Writes benchmarks/results/meta_speed.json and .md. Usage: python benchmarks/bench_meta.py
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ALGORITHMS = ["maml", "fomaml", "metasgd", "reptile", "finetune"]


def main() -> int:
    from metarec.data.sources import movielens
    from metarec.data.splits import cold_user
    from metarec.models import build_model
    from metarec.utils import versions

    ds = movielens.load("ml-100k")
    fold = next(cold_user(ds, shots=[20], n_folds=5, seed=42))
    task = fold.tasks[0]
    supports = [g["item"].to_numpy() for _, g in task.support.groupby("user")]
    rows = []
    for algo in ALGORITHMS:
        torch.set_num_threads(2)
        t0 = time.perf_counter()
        model = build_model("meta", {"algorithm": algo}, seed=42).fit(fold.train, valid=fold.valid)
        train_s = time.perf_counter() - t0
        torch.set_num_threads(1)
        adapt_ms, full_ms = [], []
        for items in (supports * 3)[:500]:
            df = pd.DataFrame({"item": items})
            t = time.perf_counter()
            state = model.adapt(df)
            adapt_ms.append((time.perf_counter() - t) * 1e3)
            model.recommend_for(state, 10)
            full_ms.append((time.perf_counter() - t) * 1e3)
        rows.append(
            {
                "algorithm": algo,
                "train_seconds": train_s,
                "epochs": model.fit_info_["epochs"],
                "adapt_ms_p50": float(np.percentile(adapt_ms, 50)),
                "adapt_ms_p99": float(np.percentile(adapt_ms, 99)),
                "adapt_and_top10_ms_p50": float(np.percentile(full_ms, 50)),
                "adapt_and_top10_ms_p99": float(np.percentile(full_ms, 99)),
                "inner_steps": model.inner_steps,
            }
        )
        print(rows[-1], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    payload = {"dataset": "ml-100k cold-user fold 0", "k": 20, "users_timed": 500, "peak_memory_mb": peak,
               "runs": rows, "versions": versions()}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "meta_speed.json").write_text(json.dumps(payload, indent=2))
    md = [
        "# Meta-training time and per-user adaptation latency (ml-100k, CPU)",
        "",
        f"Training: fold 0 training users, 2 threads. Adaptation: one new user at a time, k = 20, **1 thread**,"
        f" 500 users. Peak memory (process RSS, all runs): {peak:.0f} MiB.",
        "",
        "| algorithm | train s | epochs | adapt p50 ms | adapt p99 ms | +top-10 p50 ms | +top-10 p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['algorithm']} | {r['train_seconds']:.1f} | {r['epochs']} | {r['adapt_ms_p50']:.2f} | "
            f"{r['adapt_ms_p99']:.2f} | {r['adapt_and_top10_ms_p50']:.2f} | {r['adapt_and_top10_ms_p99']:.2f} |"
        )
    md += [
        "",
        f"Machine: {versions()['platform']}; commit `{versions().get('git_commit')}`; "
        "produced by `python benchmarks/bench_meta.py`.",
        "",
    ]
    (RESULTS / "meta_speed.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
