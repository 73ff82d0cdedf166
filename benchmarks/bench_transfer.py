"""Benchmark: text transfer ml-100k -> Amazon Musical Instruments (no shared users, no shared items).

MAML is meta-trained on all of ml-100k (items known by their titles), saved, and its catalogue-independent
weights start the same model on Amazon MI (items known by their review summaries); the target's five
cold-user folds score zero target training, 5 target epochs and full target training from that start
beside target-only training and popularity, paired per user. The fine-tuning learning rate (3e-4) was
chosen on fold 0's meta-valid users (`select_transfer.py`, `selection_transfer.md`). Writes
benchmarks/results/transfer_ml-100k_amazon-mi.{json,md} and the k-shot plot.

    python benchmarks/bench_transfer.py
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOURCE, TARGET, MODEL, FEW, LR = "configs/ml-100k-meta.toml", "configs/amazon-mi-meta.toml", "maml", 5, 3e-4


def main() -> int:
    os.chdir(ROOT)  # the configs name data relative to the repository
    from metarec.config import load_config
    from metarec.eval.experiment import run_experiment
    from metarec.eval.report import markdown, plot_shots
    from metarec.eval.transfer import pretrain_source, transfer_config
    from metarec.models.io import load_model
    from metarec.utils import git_commit, versions

    os.environ.setdefault("METAREC_GIT_COMMIT", git_commit() or "unknown")
    target = load_config(TARGET)
    if not Path(target["dataset"]["path"]).exists():
        print(f"skipped: the Amazon MI file is not on this machine ({target['dataset']['path']})")
        return 0
    t0 = time.perf_counter()
    source = pretrain_source(load_config(SOURCE), MODEL, ROOT / "runs" / f"transfer-source-{MODEL}", log=print)
    source_seconds = time.perf_counter() - t0
    _, manifest = load_model(source)
    cfg = transfer_config(target, MODEL, source, "ml-100k", FEW, LR)
    cfg["name"] = "transfer_ml-100k_amazon-mi"
    result = run_experiment(cfg, progress=False, log=print)
    summary = result.summary()
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"source": SOURCE, "target": TARGET, "model": MODEL, "few_epochs": FEW, "lr": LR,
               "source_fit": {k: v for k, v in manifest["metrics"].items() if k != "history"},
               "source_seconds": source_seconds, "dataset": result.dataset, "timings_seconds": result.timings,
               "peak_memory_mb": result.peak_memory_mb, "results": summary, "versions": versions()}  # fmt: skip
    (RESULTS / "transfer_ml-100k_amazon-mi.json").write_text(json.dumps(payload, indent=2, default=str))
    head = ["# Text transfer ml-100k -> Amazon Musical Instruments", "",
            f"Source: `{MODEL}` of `{SOURCE}` meta-trained on all of ml-100k (items by title; "
            f"{manifest['metrics'].get('epochs')} epochs, meta-valid NDCG@10 "
            f"{manifest['metrics'].get('best_valid_ndcg@10', float('nan')):.4f}, {source_seconds:.0f} s). Target: "
            f"`{TARGET}` cold users (items by review summaries), five folds. Rows: `{MODEL}` target-only; "
            f"`-zero` the source network with no target step (item biases from target counts); `-few{FEW}` "
            f"{FEW} target epochs and `-full` full target training (early stopping), both from the source start at "
            f"lr {LR:g} (chosen on fold 0's meta-valid users, `selection_transfer.md`).", ""]  # fmt: skip
    md = "\n".join(head) + markdown(result).split("\n", 1)[1]
    md += f"\nMachine: {versions()['platform']}; commit `{versions().get('git_commit')}`; "
    md += "produced by `python benchmarks/bench_transfer.py`.\n"
    (RESULTS / "transfer_ml-100k_amazon-mi.md").write_text(md)
    plot_shots(summary, cfg["name"], RESULTS / "transfer_ml-100k_amazon-mi_ndcg@10_vs_k.png", "ndcg@10")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
