"""Model selection for next-item prediction on validation items only (not a test-set run).

The leave-last-out split holds out each user's last item (test) and the one before it (validation). A
sequence model is fitted on the rest and early-stopped on the validation items; its best validation
NDCG@10 (full ranking, seen items excluded) is what selection reads. The test items are never scored
here. The log goes to benchmarks/results/selection_next_item.{json,md}.

    python benchmarks/select_next_item.py --dataset ml-100k --candidates sasrec,sasrec-len200,...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CANDIDATES: dict[str, tuple[str, dict]] = {
    "sasrec": ("sasrec", {}),
    "sasrec-drop0.5": ("sasrec", {"dropout": 0.5}),
    "sasrec-b256-lr2e-3": ("sasrec", {"batch_size": 256, "lr": 2e-3}),
    "sasrec-len100": ("sasrec", {"max_len": 100}),
    "sasrec-d128-drop0.5": ("sasrec", {"dim": 128, "dropout": 0.5}),
    "gru4rec": ("gru4rec", {}),
    "gru4rec-drop0.5": ("gru4rec", {"dropout": 0.5}),
    "gru4rec-b256-lr2e-3": ("gru4rec", {"batch_size": 256, "lr": 2e-3}),
    "gru4rec-len100": ("gru4rec", {"max_len": 100}),
    "gru4rec-d128-drop0.5": ("gru4rec", {"dim": 128, "dropout": 0.5}),
}
DATASETS = {
    "ml-100k": {"source": "movielens", "variant": "ml-100k"},
    "amazon-mi": {
        "source": "amazon",
        "path": "../shared/data/amazon-musical-instruments/Musical_Instruments_5.json.gz",
    },
}


def main() -> int:
    from metarec.data.sources import load_dataset
    from metarec.data.splits import next_item
    from metarec.models import build_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ml-100k", choices=list(DATASETS))
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    ds = load_dataset(DATASETS[args.dataset])
    fold = next(next_item(ds))
    log = []
    for name in args.candidates.split(","):
        kind, params = CANDIDATES[name]
        t0 = time.perf_counter()
        model = build_model(kind, params, seed=args.seed).fit(fold.train, valid=fold.valid)
        info = model.fit_info_
        entry = {"dataset": args.dataset, "name": name, "kind": kind, "params": params,
                 "valid_ndcg@10": info["best_valid_ndcg@10"], "best_epoch": info["best_epoch"],
                 "epochs": info["epochs"], "seconds": time.perf_counter() - t0}  # fmt: skip
        log.append(entry)
        print(name, round(entry["valid_ndcg@10"], 4), f"{entry['seconds']:.0f}s", flush=True)
        _write(log)  # after every fit: a run stopped part-way keeps what it measured
    return 0


def _write(log: list[dict]) -> None:
    from metarec.utils import versions

    out = RESULTS / "selection_next_item.json"
    old = json.loads(out.read_text())["log"] if out.exists() else []
    done = {(x["dataset"], x["name"]) for x in log}
    full = [e for e in old if (e["dataset"], e["name"]) not in done] + log
    out.write_text(json.dumps({"log": full, "versions": versions()}, indent=2))
    lines = [
        "# Next-item selection on validation items (each user's second-to-last; never the test items)",
        "",
        "| dataset | model | valid NDCG@10 | best epoch | epochs | seconds | params |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in sorted(full, key=lambda e: (e["dataset"], -e["valid_ndcg@10"])):
        lines.append(f"| {e['dataset']} | {e['name']} | {e['valid_ndcg@10']:.4f} | {e['best_epoch']} | {e['epochs']} | "
                     f"{e['seconds']:.0f} | `{json.dumps(e['params'])}` |")  # fmt: skip
    (RESULTS / "selection_next_item.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
