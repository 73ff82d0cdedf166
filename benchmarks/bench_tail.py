"""Benchmark: the tail-aware re-ranker's accuracy / coverage trade-off on ml-100k warm (not a test).

The warm split of the results table (each user's latest 20% is the test set). The re-ranking weight
is chosen on a validation split cut from the training rows the same way (each user's latest 20% of
their training rows): the largest coverage@10 whose NDCG@10 stays within 3% of the base model's. The
chosen weight is then measured once on the test rows, with a paired bootstrap over the same users.
Writes benchmarks/results/tail.json, tail.md and tail.png.

    python benchmarks/bench_tail.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
BASES = {  # the two strongest warm models of configs/ml-100k.toml, with its parameters
    "itemknn": {"type": "itemknn", "neighbours": 100},
    "als": {"type": "als", "factors": 64, "regularization": 0.05, "alpha": 2.0, "iterations": 15},
}
MAX_LOSS = 0.03


def _curve(model, fold, pop, n_users) -> list[dict]:
    from metarec.eval.evaluate import evaluate_task

    out = []
    for w in WEIGHTS:
        model.set_params(weight=w)
        r = evaluate_task(model, fold.tasks[0], [10], ("ndcg", "coverage", "gini", "tail", "novelty"), pop, n_users)
        out.append({"weight": w, **{k: float(np.nanmean(v)) for k, v in r.per_user.items()}, **r.aggregate,
                    "per_user_ndcg": r.per_user["ndcg@10"]})  # fmt: skip
    return out


def main() -> int:
    from metarec.data.sources import movielens
    from metarec.data.splits import warm
    from metarec.eval.stats import paired_bootstrap
    from metarec.models import build_model
    from metarec.utils import versions

    ds = movielens.load("ml-100k")
    outer = warm(ds, test_ratio=0.2)
    inner = warm(outer.train, test_ratio=0.2)
    rows = {}
    for name, base in BASES.items():
        t0 = time.perf_counter()
        model = build_model("rerank", {"base": base}, seed=42).fit(inner.train)
        pop = np.bincount(inner.train.interactions["item"].to_numpy(), minlength=ds.n_items)
        valid = _curve(model, inner, pop, inner.train.n_users)
        floor = (1 - MAX_LOSS) * valid[0]["ndcg@10"]
        chosen = max((v for v in valid if v["ndcg@10"] >= floor), key=lambda v: v["coverage@10"])["weight"]
        model = build_model("rerank", {"base": base}, seed=42).fit(outer.train)
        pop = np.bincount(outer.train.interactions["item"].to_numpy(), minlength=ds.n_items)
        test = _curve(model, outer, pop, outer.train.n_users)
        at = {v["weight"]: v for v in test}
        iv = paired_bootstrap(at[chosen]["per_user_ndcg"], at[0.0]["per_user_ndcg"], kind="ratio", seed=0)
        ratio = {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}
        for v in valid + test:
            v.pop("per_user_ndcg")
        rows[name] = {"valid": valid, "test": test, "chosen_weight": chosen, "ndcg_ratio": ratio,
                      "coverage_gain": at[chosen]["coverage@10"] / at[0.0]["coverage@10"] - 1,
                      "seconds": time.perf_counter() - t0}  # fmt: skip
        print(name, "weight", chosen, "coverage gain", rows[name]["coverage_gain"], "ndcg ratio", ratio, flush=True)
    v = versions()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tail.json").write_text(json.dumps({"rows": rows, "max_loss": MAX_LOSS, "versions": v}, indent=2))
    _plot(rows)
    (RESULTS / "tail.md").write_text(_markdown(rows, v))
    return 0


def _plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, r in rows.items():
        for split, style in (("valid", "--"), ("test", "-")):
            pts = r[split]
            ax.plot([p["coverage@10"] for p in pts], [p["ndcg@10"] for p in pts], style, marker="o", ms=3,
                    label=f"{name} ({split})")  # fmt: skip
        chosen = next(p for p in r["test"] if p["weight"] == r["chosen_weight"])
        ax.scatter([chosen["coverage@10"]], [chosen["ndcg@10"]], s=80, facecolors="none", edgecolors="k")
    ax.set_xlabel("coverage@10 (share of the catalogue recommended to anyone)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("ml-100k warm: tail re-ranking (xQuAD), weight 0 at the left")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "tail.png", dpi=120)


def _markdown(rows: dict, v: dict) -> str:
    md = ["# Tail-aware re-ranking on ml-100k warm (personalised smooth xQuAD)", "",
          f"Weight chosen on validation rows (each user's latest 20% of training rows): the largest coverage@10 "
          f"with NDCG@10 within {MAX_LOSS:.0%} of the base model. Test rows measured once with that weight.", "",
          "| base | chosen weight | coverage@10 gain (test) | NDCG@10 ratio (test) | 95% paired bootstrap |",
          "|---|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        q = r["ndcg_ratio"]
        md.append(f"| {name} | {r['chosen_weight']:g} | {100 * r['coverage_gain']:+.1f}% | {q['mean']:.3f} | "
                  f"[{q['low']:.3f}, {q['high']:.3f}] |")  # fmt: skip
    for name, r in rows.items():
        md += ["", f"## {name}: the whole curve", "",
               "| weight | split | NDCG@10 | coverage@10 | Gini@10 | tail share@10 | novelty@10 |",
               "|---|---|---|---|---|---|---|"]  # fmt: skip
        for split in ("valid", "test"):
            md += [f"| {p['weight']:g} | {split} | {p['ndcg@10']:.4f} | {p['coverage@10']:.4f} | {p['gini@10']:.4f} | "
                   f"{p['tail@10']:.4f} | {p['novelty@10']:.2f} |" for p in r[split]]  # fmt: skip
    md += ["", "![trade-off](tail.png)", "",
           f"Machine: {v['platform']}; commit `{v.get('git_commit')}`; "
           "produced by `python benchmarks/bench_tail.py`.", ""]  # fmt: skip
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
