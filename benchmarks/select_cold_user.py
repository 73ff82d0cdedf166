"""Model selection for cold users on meta-valid users only (not a test-set run).

For each fold asked for, every candidate is fitted on the fold's training users (early stopping on its
meta-valid users, as always) and then scored on those same meta-valid users at every k: the k earliest
items are the support, the rest the query, full ranking, NDCG@10. Test users are never touched here.
The selection log (every candidate, its parameters and its valid scores, and the baselines on the same
valid users) goes to benchmarks/results/selection_cold_user.json and .md.

    python benchmarks/select_cold_user.py [--folds 0] [--candidates maml,maml-set]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHOTS = [1, 3, 5, 10, 20]
DEMO = {"demo": {"type": "fields", "columns": ["age", "gender", "occupation"]}}
ITEMS_GENRES = {
    "text": {"template": "{title}"},
    "id": {},
    "genres": {"type": "fields", "columns": ["genres", "year"], "split": {"genres": " "}},
}
BASELINES = {
    "popularity": ("popularity", {}),
    "itemknn": ("itemknn", {"neighbours": 100}),
    "bpr": ("bpr", {"factors": 64}),
    "finetune": ("meta", {"algorithm": "finetune", "inner_lr": 0.1, "inner_steps": 3}),
    # LightFM-style hybrids: users and items are sums of feature embeddings (demographics; genres, year,
    # title text, id), trained without meta-learning; a new user from features only, or fine-tuned on k items
    "hybrid": ("meta", {"algorithm": "global", "user_features": DEMO, "item_features": ITEMS_GENRES}),
    "hybrid-finetune": (
        "meta",
        {
            "algorithm": "finetune",
            "inner_lr": 0.1,
            "inner_steps": 3,
            "user_features": DEMO,
            "item_features": ITEMS_GENRES,
        },
    ),
}
for _lr in (0.01, 0.03):  # the hybrid's fine-tuning step, tuned on the same valid users as everything else
    BASELINES[f"hybrid-finetune-lr{_lr}"] = ("meta", {**BASELINES["hybrid-finetune"][1], "inner_lr": _lr})
CANDIDATES = {
    "maml": {"algorithm": "maml"},
    "maml-set": {"algorithm": "maml", "set_encoder": True},
    "maml-demo": {
        "algorithm": "maml",
        "user_features": {"demo": {"type": "fields", "columns": ["age", "gender", "occupation"]}},
    },
    "maml-set-demo": {
        "algorithm": "maml",
        "set_encoder": True,
        "user_features": {"demo": {"type": "fields", "columns": ["age", "gender", "occupation"]}},
    },
    "metasgd-set": {"algorithm": "metasgd", "set_encoder": True},
    "metasgd-set-demo": {"algorithm": "metasgd", "set_encoder": True, "user_features": DEMO},
    "maml-set-demo-genres": {
        "algorithm": "maml",
        "set_encoder": True,
        "user_features": DEMO,
        "item_features": ITEMS_GENRES,
    },
    "maml-set-demo-hidden": {"algorithm": "maml", "set_encoder": True, "user_features": DEMO, "hidden": 64},
    "maml-demo-genres": {"algorithm": "maml", "user_features": DEMO, "item_features": ITEMS_GENRES},
    "metasgd-set-demo-genres": {
        "algorithm": "metasgd",
        "set_encoder": True,
        "user_features": DEMO,
        "item_features": ITEMS_GENRES,
    },
}


def main() -> int:
    from metarec.data.sources import movielens
    from metarec.data.splits import cold_user, shot_tasks
    from metarec.eval.evaluate import evaluate_task
    from metarec.models import build_model
    from metarec.utils import versions

    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", default="0")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--baselines", default=",".join(BASELINES))
    args = ap.parse_args()
    folds = [int(f) for f in args.folds.split(",")]
    names = args.candidates.split(",")
    ds = movielens.load("ml-100k")
    text = {"encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2"}
    log: list[dict] = []
    for fold in cold_user(ds, shots=[1], n_folds=5, valid_ratio=0.1, seed=42, folds=folds):  # the table's folds
        # the meta-valid users, asked the way the test users are (k earliest items as the support)
        tasks = shot_tasks(fold.valid, SHOTS, ds.n_items, fold.fold, protocol="valid")
        pop = np.bincount(fold.train.interactions["item"].to_numpy(), minlength=ds.n_items)
        runs = {**{n: BASELINES[n] for n in args.baselines.split(",")}, **{n: ("meta", CANDIDATES[n]) for n in names}}
        for name, (kind, params) in runs.items():
            t0 = time.perf_counter()
            p = {**params, "text": text} if kind == "meta" else params
            model = build_model(kind, p, seed=42 + fold.fold).fit(fold.train, valid=fold.valid)
            scores = {f"k={t.k}": float(np.nanmean(evaluate_task(model, t, [10], ("ndcg",), pop).per_user["ndcg@10"]))
                      for t in tasks}  # fmt: skip
            entry = {"fold": fold.fold, "name": name, "kind": kind, "params": params, "valid_ndcg@10": scores,
                     "seconds": time.perf_counter() - t0, "baseline": name in BASELINES}  # fmt: skip
            log.append(entry)
            print(name, {k: round(v, 4) for k, v in scores.items()}, f"{entry['seconds']:.0f}s", flush=True)
    out = RESULTS / "selection_cold_user.json"
    old = json.loads(out.read_text())["log"] if out.exists() else []
    keep = [e for e in old if (e["fold"], e["name"]) not in {(x["fold"], x["name"]) for x in log}]
    full = keep + log
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"log": full, "versions": versions()}, indent=2))
    (RESULTS / "selection_cold_user.md").write_text(_markdown(full))
    return 0


def _markdown(log: list[dict]) -> str:
    md = ["# Cold-user model selection log (ml-100k, meta-valid users only)", "",
          "NDCG@10 on each fold's meta-valid users (10% of the users, never test users), k earliest items as the "
          "support. Ratio: candidate / best baseline at that k on the same users.", ""]  # fmt: skip
    folds = sorted({e["fold"] for e in log})
    complete = [n for n in dict.fromkeys(e["name"] for e in log)
                if {e["fold"] for e in log if e["name"] == n} == set(folds)]  # fmt: skip
    if len(folds) > 1 and complete:
        mean = {n: {k: float(np.mean([e["valid_ndcg@10"][k] for e in log if e["name"] == n]))
                    for k in log[0]["valid_ndcg@10"]} for n in complete}  # fmt: skip
        base = [n for n in complete if any(e["baseline"] for e in log if e["name"] == n)]
        best = {k: max(mean[n][k] for n in base) for k in log[0]["valid_ndcg@10"]} if base else {}
        md += [f"## mean over folds {folds}", "", "| model | " + " | ".join(best) + " | min ratio |",
               "|---|" + "---|" * (len(best) + 1)]  # fmt: skip
        for n in complete:
            ratio = "" if n in base else f"{min(mean[n][k] / best[k] for k in best):.3f}"
            md.append(f"| {n} | " + " | ".join(f"{mean[n][k]:.4f}" for k in best) + f" | {ratio} |")
        md.append("")
    for fold in folds:
        rows = [e for e in log if e["fold"] == fold]
        best = {k: max(e["valid_ndcg@10"][k] for e in rows if e["baseline"]) for k in rows[0]["valid_ndcg@10"]}
        md += [f"## fold {fold}", "", "| model | params | " + " | ".join(best) + " | min ratio |",
               "|---|---|" + "---|" * (len(best) + 1)]  # fmt: skip
        for e in rows:
            v = e["valid_ndcg@10"]
            ratio = "" if e["baseline"] else f"{min(v[k] / best[k] for k in best):.3f}"
            md.append(f"| {e['name']} | `{json.dumps(e['params'])}` | "
                      + " | ".join(f"{v[k]:.4f}" for k in best) + f" | {ratio} |")  # fmt: skip
        md.append("")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())
