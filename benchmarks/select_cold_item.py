"""Model selection for new items on validation items only (not a test-set run).

The cold-item table's test items are never touched: inside each outer fold's training data (its warm
items only), a second item-level split makes validation cold items, each with its earliest 10% of
users revealed as early adopters, exactly as the outer split does with the test items. Every candidate
is fitted on the inner training data and scored on the validation items (NDCG@10 among the cold
items, the users who used them). The log goes to benchmarks/results/selection_cold_item.{json,md}.

    python benchmarks/select_cold_item.py [--folds 0] [--candidates maml-warmup,...] [--reveal 0.1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GENRES = {
    "text": {"template": "{title}"},
    "id": {},
    "genres": {"type": "fields", "columns": ["genres", "year"], "split": {"genres": " "}},
}
# the item read by the packaged generative LM (SmolLM2-135M's middle layer; issue 12)
LM = {"type": "text", "template": "Movie: {title} ({year})", "text": {"encoder": "causal-lm"}}
# collaborative knowledge distilled into content: a ridge student from MiniLM + LM vectors + fields
# to ALS factors and log-popularity of warm items (features/distilled.py)
STUDENT_INPUTS = {"text": {"template": "{title}"}, "lm": LM, "genres": GENRES["genres"]}
BASELINES = {
    "popularity": ("popularity", {}),  # among new items: their revealed early adopters' count
    "itemknn": ("itemknn", {"neighbours": 100}),  # new items' neighbours through their early adopters
    "content": ("content", {"item_template": "{title}", "aggregation": "knn"}),
    "content-genres": ("content", {"item_template": "{title} ({year}). Genres: {genres}.", "aggregation": "knn"}),
    "maml": ("meta", {"algorithm": "maml"}),
    "cke": ("cke", {}),  # MF + TransE on the knowledge graph (models/cke.py): new items through their entity
}
# the title plus one sentence written by the packaged LM (llm/describe.py; ml-100k has no descriptions)
DESC = {"type": "text", "template": "{title}. {description}", "describe": {}}
# the knowledge graph (issue 13): PyKEEN embeddings of the Freebase graph, and its facts read as text
KG = {"type": "kg", "model": "TransE", "dim": 64, "epochs": 40}
KG_TEXT = {"type": "text", "template": "{title}. {kg}"}
CANDIDATES = {
    "maml-genres-kg": {"algorithm": "maml", "item_features": {**GENRES, "kg": KG}},
    "maml-genres-kg-rotate": {"algorithm": "maml", "item_features": {**GENRES, "kg": {**KG, "model": "RotatE"}}},
    "maml-genres-kg-distmult": {"algorithm": "maml", "item_features": {**GENRES, "kg": {**KG, "model": "DistMult"}}},
    "maml-genres-kg-ckg": {"algorithm": "maml", "item_features": {**GENRES, "kg": {**KG, "interactions": True}}},
    "maml-genres-kgtext": {"algorithm": "maml", "item_features": {**GENRES, "kgtext": KG_TEXT}},
    "maml-genres-kg-kgtext": {"algorithm": "maml", "item_features": {**GENRES, "kg": KG, "kgtext": KG_TEXT}},
    "maml-genres-distilled-kg": {
        "algorithm": "maml",
        "item_features": {**GENRES, "distilled": {"inputs": {**STUDENT_INPUTS, "kg": KG}}},
    },
    "maml-genres-distilled-kg-kgtext": {
        "algorithm": "maml",
        "item_features": {**GENRES, "distilled": {"inputs": {**STUDENT_INPUTS, "kg": KG, "kgtext": KG_TEXT}}},
    },
    "maml-genres-lora": {"algorithm": "maml", "item_features": {**GENRES, "text": {"template": "{title}", "tune": {}}}},
    "maml-genres-lora-strong": {  # 3x the steps, 5x the learning rate, sharper contrast
        "algorithm": "maml",
        "item_features": {
            **GENRES,
            "text": {"template": "{title}", "tune": {"epochs": 3, "lr": 1e-3, "temperature": 0.1}},
        },
    },
    "maml-genres-desc": {"algorithm": "maml", "item_features": {**GENRES, "desc": DESC}},
    "maml-genres-distilled-desc": {
        "algorithm": "maml",
        "item_features": {**GENRES, "distilled": {"inputs": {**STUDENT_INPUTS, "desc": DESC}}},
    },
    "maml-genres-distilled-gemma": {  # the same student with Gemma-3-270M instead of SmolLM2-135M
        "algorithm": "maml",
        "item_features": {
            **GENRES,
            "distilled": {
                "inputs": {**STUDENT_INPUTS, "lm": {**LM, "text": {"encoder": "causal-lm", "model": "gemma3-270m"}}}
            },
        },
    },
    "maml-genres-distilled-f64": {
        "algorithm": "maml",
        "item_features": {**GENRES, "distilled": {"inputs": STUDENT_INPUTS, "factors": 64}},
    },
    "maml-genres-lm": {"algorithm": "maml", "item_features": {**GENRES, "lm": LM}},
    "maml-genres-distilled": {
        "algorithm": "maml",
        "item_features": {**GENRES, "distilled": {"inputs": STUDENT_INPUTS}},
    },
    "maml-genres-distilled-minilm": {
        "algorithm": "maml",
        "item_features": {
            **GENRES,
            "distilled": {"inputs": {"text": {"template": "{title}"}, "genres": GENRES["genres"]}},
        },
    },
    "maml-genres": {"algorithm": "maml", "item_features": GENRES},
    "maml-warmup": {"algorithm": "maml", "item_warmup": 0.1},
    "maml-warmup-genres": {"algorithm": "maml", "item_warmup": 0.1, "item_features": GENRES},
    "maml-warmup-items0.4": {"algorithm": "maml", "item_warmup": 0.1, "warmup_items": 0.4},
    "maml-warmup-epochs60": {"algorithm": "maml", "item_warmup": 0.1, "warmup_epochs": 60},
    "maml-warmup-genres-epochs60": {
        "algorithm": "maml",
        "item_warmup": 0.1,
        "warmup_epochs": 60,
        "item_features": GENRES,
    },
}


def main() -> int:
    from metarec.data.sources import movielens
    from metarec.data.splits import cold_item
    from metarec.eval.evaluate import evaluate_task
    from metarec.models import build_model
    from metarec.utils import versions

    ap = argparse.ArgumentParser()
    ap.add_argument("--folds", default="0")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--reveal", type=float, default=0.1)
    args = ap.parse_args()
    ds = movielens.load("ml-100k")
    text = {"encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2"}
    runs = {**{n: BASELINES[n] for n in args.baselines.split(",") if n},
            **{n: ("meta", CANDIDATES[n]) for n in args.candidates.split(",") if n}}  # fmt: skip
    log: list[dict] = []
    folds = [int(f) for f in args.folds.split(",")]
    for outer in cold_item(ds, n_folds=5, reveal_share=args.reveal, seed=42, folds=folds):  # the table's folds
        # validation items: an item-level split of the outer fold's warm items (test items untouched)
        inner = next(cold_item(outer.train, n_folds=5, reveal_share=args.reveal, seed=142, folds=[0]))
        task = inner.tasks[0]
        pop = np.bincount(inner.train.interactions["item"].to_numpy(), minlength=ds.n_items)
        for name, (kind, params) in runs.items():
            t0 = time.perf_counter()
            p = {**params, "text": text} if kind in ("meta", "content") else params
            model = build_model(kind, p, seed=42 + outer.fold).fit(inner.train, revealed=inner.revealed)
            res = evaluate_task(model, task, [10], ("ndcg",), pop)
            score = float("nan") if res.skipped else float(np.nanmean(res.per_user["ndcg@10"]))
            entry = {"fold": outer.fold, "name": name, "kind": kind, "params": params, "reveal_share": args.reveal,
                     "valid_ndcg@10": score, "n_valid_items": len(task.candidates),
                     "n_valid_users": len(task.users), "seconds": time.perf_counter() - t0,
                     "baseline": name in BASELINES}  # fmt: skip
            log.append(entry)
            print(name, round(score, 4), f"{entry['seconds']:.0f}s", flush=True)
    out = RESULTS / "selection_cold_item.json"
    old = json.loads(out.read_text())["log"] if out.exists() else []
    done = {(x["fold"], x["name"], x["reveal_share"]) for x in log}
    full = [e for e in old if (e["fold"], e["name"], e["reveal_share"]) not in done] + log
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"log": full, "versions": versions()}, indent=2))
    (RESULTS / "selection_cold_item.md").write_text(_markdown(full))
    return 0


def _markdown(log: list[dict]) -> str:
    lines = [
        "# New-item selection on validation items (never the test items)",
        "",
        "Validation cold items are an item-level split of each outer fold's warm items, with each one's",
        "earliest share of users revealed as early adopters. NDCG@10 among the validation cold items.",
        "",
        "| reveal | fold | model | valid NDCG@10 | seconds | params |",
        "|---|---|---|---|---|---|",
    ]
    means: dict[tuple[float, str], list[float]] = {}
    for e in log:
        means.setdefault((e["reveal_share"], e["name"]), []).append(e["valid_ndcg@10"])
    head = ["## Mean over the folds run", "", "| reveal | model | folds | mean valid NDCG@10 |", "|---|---|---|---|"]
    for (reveal, name), v in sorted(means.items(), key=lambda kv: (kv[0][0], -float(np.mean(kv[1])))):
        head.append(f"| {reveal} | {name} | {len(v)} | {np.mean(v):.4f} |")
    lines[5:5] = [*head, "", "## Every fit", ""]
    for e in sorted(log, key=lambda e: (e["reveal_share"], e["fold"], not e["baseline"], -e["valid_ndcg@10"])):
        lines.append(f"| {e['reveal_share']} | {e['fold']} | {e['name']} | {e['valid_ndcg@10']:.4f} | "
                     f"{e['seconds']:.0f} | `{json.dumps(e['params'])}` |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
