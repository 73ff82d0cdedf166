"""Selection of the DP-SGD meta-training settings on meta-valid users only (not a test-set run).

Every candidate is MAML with user-level DP-SGD at epsilon = 8 (the budget the issue's target names), fitted
on fold 0's training users of ml-100k cold-user; the score is the early-stopping measure on fold 0's
meta-valid users (NDCG@10 after adapting on their k earliest items, mean over k in (1, 5, 20)). The
non-private MAML is fitted the same way for scale. Test users are never touched. The chosen settings are
used at every epsilon in `bench_privacy.py`. Writes benchmarks/results/selection_privacy.{json,md}.

    python benchmarks/select_privacy.py [--federated]

With --federated: the settings of federated MAML (10 Flower clients) instead, scored the same way, to
selection_privacy_federated.{json,md}.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# in the order they were tried: the clipping bound first (per-task meta-gradient norms at the start are
# 0.09 / 0.20 / 0.36 at the 10th / 50th / 90th percentile, so a bound of 1 clips nothing and only adds
# noise), then the popularity release, the batch size, patience and the learning rate
CANDIDATES: dict[str, dict] = {
    "maml (non-private)": {},
    "dp clip 1.0": {"dp": {"epsilon": 8}},
    "dp clip 1.0, flat start": {"dp": {"epsilon": 8, "prior_noise_multiplier": 0}},
    "dp clip 0.2": {"dp": {"epsilon": 8, "max_grad_norm": 0.2}},
    "dp clip 0.2, flat start": {"dp": {"epsilon": 8, "max_grad_norm": 0.2, "prior_noise_multiplier": 0}},
    "dp clip 0.1": {"dp": {"epsilon": 8, "max_grad_norm": 0.1}},
    "dp clip 0.2, batch 128, lr 3e-3": {"meta_batch": 128, "lr": 3e-3, "dp": {"epsilon": 8, "max_grad_norm": 0.2}},
    "dp clip 0.2, patience 20": {"patience": 20, "dp": {"epsilon": 8, "max_grad_norm": 0.2}},
    "dp clip 0.2, patience 20, prior noise 5": {
        "patience": 20,
        "dp": {"epsilon": 8, "max_grad_norm": 0.2, "prior_noise_multiplier": 5},
    },
    "dp clip 0.2, patience 20, lr 3e-3": {"patience": 20, "lr": 3e-3, "dp": {"epsilon": 8, "max_grad_norm": 0.2}},
}


for _p in CANDIDATES.values():  # repeatable noise and batches (research runs; see README on what that costs)
    if "dp" in _p:
        _p["dp"]["reproducible"] = True

# federated: rounds x local epochs (a client has ~57 users = 2 meta-batches per epoch, so one local epoch is
# 2 Adam steps from a fresh optimiser state)
FEDERATED: dict[str, dict] = {
    "fed 30 rounds x 1 local epoch": {"lr": 3e-3, "federated": {"clients": 10, "rounds": 30, "local_epochs": 1}},
    "fed 30 rounds x 5 local epochs": {"lr": 3e-3, "federated": {"clients": 10, "rounds": 30, "local_epochs": 5}},
}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--federated", action="store_true")
    args = ap.parse_args()
    candidates = FEDERATED if args.federated else CANDIDATES
    out = "selection_privacy_federated" if args.federated else "selection_privacy"

    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.data.splits import make_folds
    from metarec.models import build_model

    cfg = load_config(ROOT / "configs/ml-100k-meta.toml", ["protocols.cold-user.shots=[5]"])
    seed = int(cfg["seed"])
    ds = load_dataset(cfg["dataset"])
    params = dict(cfg["protocols"]["cold-user"])
    params.pop("type", None)
    fold = next(iter(make_folds(ds, "cold-user", params, seed)))
    rows = []
    for name, p in candidates.items():
        t = time.perf_counter()
        m = build_model("meta", {"text": cfg.get("text"), **p}, seed=seed).fit(fold.train, valid=fold.valid)
        info = m.fit_info_
        priv = info.get("privacy", {})
        rows.append({"candidate": name, "params": p, "valid_ndcg@10": info["best_valid_ndcg@10"],
                     "best_epoch": info["best_epoch"], "epochs": info["epochs"], "epsilon": priv.get("epsilon"),
                     "noise_multiplier": priv.get("noise_multiplier"), "seconds": time.perf_counter() - t})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    commit = (
        os.environ.get("METAREC_GIT_COMMIT")
        or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps({"commit": commit, "rows": rows}, indent=1))
    title = "Federated MAML settings" if args.federated else "DP-SGD settings (epsilon = 8)"
    lines = [f"# {title} chosen on meta-valid users (ml-100k cold-user, fold 0)", "",
             f"commit `{commit}`. Score: meta-valid NDCG@10 (mean over k = 1, 5, 20) at the best epoch; epsilon is "
             "what the accountant reports for every step run (early stopping may end before the planned budget).",
             "", "| candidate | valid NDCG@10 | best epoch / run | epsilon spent | noise multiplier | s |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        sig = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.2f}"
        lines.append(f"| {r['candidate']} | {r['valid_ndcg@10']:.4f} | {r['best_epoch']} / {r['epochs']} | {eps} | "
                     f"{sig} | {r['seconds']:.0f} |")  # fmt: skip
    best = max((r for r in rows if r["candidate"] != "maml (non-private)"), key=lambda r: r["valid_ndcg@10"])
    lines += ["", f"Chosen: **{best['candidate']}** ({json.dumps(best['params'])}).", ""]
    (RESULTS / f"{out}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
