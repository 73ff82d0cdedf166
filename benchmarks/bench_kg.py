"""Benchmark: knowledge-graph embeddings of ml-100k's Freebase graph, and how much they know about films.

1. Training time of each PyKEEN model the `kg` source offers (TransE, DistMult, RotatE; 64 dims, 40
   epochs, the source's defaults), on the 2 cores here, with the on-disk cache bypassed.
2. A probe of the signal: how well a ridge regression (RidgeCV, 5-fold cross-fitted over films with
   >= 5 users) predicts a film's collaborative position (ALS factors, the distilled source's teacher)
   and its log-popularity from genres + year alone, + the MiniLM title vector, + the TransE vector,
   + a multi-hot of the graph entities the film shares with other films. R^2 on unseen films: what a
   launch-day model could learn from each input at best, linearly.

Writes benchmarks/results/kg.json and kg.md.

    python benchmarks/bench_kg.py
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("TransE", "DistMult", "RotatE")


def main() -> int:
    import scipy.sparse as sp
    import torch
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    from metarec.data.sources import movielens
    from metarec.features import build_sources
    from metarec.features.distilled import DistilledSource
    from metarec.utils import versions

    torch.set_num_threads(os.cpu_count() or 1)
    ds = movielens.load("ml-100k")
    assert ds.kg is not None
    out: dict = {"dataset": ds.summary(), "training": [], "probe": []}
    vectors = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["METAREC_HOME"] = home  # no cache: every model trains from scratch
        for name in MODELS:
            (src,) = build_sources({"kg": {"model": name, "dim": 64, "epochs": 40}}, "item")
            t0 = time.perf_counter()
            x = src.fit_transform(ds)
            info = {"model": name, "seconds": time.perf_counter() - t0, **src.fit_info_, "dim": int(x.shape[1])}
            out["training"].append(info)
            vectors[name] = x
            print(name, f"{info['seconds']:.1f}s", flush=True)
        os.environ.pop("METAREC_HOME")

    y, warm = DistilledSource(inputs={"year": {"type": "fields", "columns": ["year"]}}).teacher(ds)
    (genres,) = build_sources(
        {"g": {"type": "fields", "columns": ["genres", "year"], "split": {"genres": " "}}}, "item"
    )
    (title,) = build_sources({"t": {"type": "text", "template": "{title}"}}, "item",
                             {"encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2"})  # fmt: skip
    g, t = genres.fit_transform(ds), title.fit_transform(ds)
    # entities a film shares with at least one other film (what a bag-of-facts model could use)
    link = dict(zip(ds.kg.links["item_id"].astype(str), ds.kg.links["entity"].astype(str), strict=True))
    row_of = {link[i]: r for r, i in enumerate(ds.items["item_id"].astype(str)) if i in link}
    tri = ds.kg.triples[ds.kg.triples["head"].isin(row_of)]
    shared = tri.groupby("tail")["head"].nunique()
    tri = tri[tri["tail"].isin(shared[shared >= 2].index)]
    cols = {e: c for c, e in enumerate(sorted(set(tri["tail"])))}
    bag = sp.csr_matrix((np.ones(len(tri)), (tri["head"].map(row_of), tri["tail"].map(cols))),
                        shape=(ds.n_items, len(cols))).toarray() > 0  # fmt: skip
    inputs = {
        "genres + year": g,
        "+ MiniLM title": np.hstack([g, t]),
        "+ TransE": np.hstack([g, vectors["TransE"]]),
        "+ MiniLM title + TransE": np.hstack([g, t, vectors["TransE"]]),
        "+ shared KG entities (multi-hot)": np.hstack([g, bag]),
    }
    cv = KFold(5, shuffle=True, random_state=0)
    for name, x in inputs.items():
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 5, 15)), x[warm], y[warm], cv=cv)
        r2 = 1 - ((pred - y[warm]) ** 2).sum(0) / ((y[warm] - y[warm].mean(0)) ** 2).sum(0)
        row = {"inputs": name, "dims": int(x.shape[1]), "r2_factors": float(r2[:-1].mean()),
               "r2_log_popularity": float(r2[-1])}  # fmt: skip
        out["probe"].append(row)
        print(row, flush=True)
    out["films_probed"] = int(warm.sum())
    out["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["versions"] = versions()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kg.json").write_text(json.dumps(out, indent=2, default=float))
    (RESULTS / "kg.md").write_text(markdown(out))
    return 0


def markdown(out: dict) -> str:
    v = out["versions"]
    d = out["dataset"]
    lines = [
        "# Knowledge-graph embeddings on ml-100k (Freebase, as RecBole ships it)",
        "",
        f"Graph: {d['kg_triples']:,} triples, {d['kg_relations']} relations, {d['kg_linked_items']:,} of "
        f"{d['items']:,} films linked. Commit `{v.get('git_commit', '?')}`, PyKEEN {v.get('pykeen', '?')}, "
        f"torch {v.get('torch', '?')}, {os.cpu_count()} cores.",
        "",
        "## Training (64 dims, 40 epochs, batch 4096, Adam 0.01, one negative per positive; cache bypassed)",
        "",
        "| model | seconds | entities | first loss | last loss |",
        "|---|---|---|---|---|",
    ]
    for r in out["training"]:
        lines.append(f"| {r['model']} | {r['seconds']:.1f} | {int(r['entities']):,} | {r['first_loss']:.3f} | "
                     f"{r['last_loss']:.3f} |")  # fmt: skip
    lines += [
        "",
        f"## What the inputs know about a film's audience (ridge, 5-fold, {out['films_probed']:,} films)",
        "",
        "R^2 on films the regression never saw; targets are the ALS factors the distilled source learns "
        "(mean over factors) and the standardised log-popularity.",
        "",
        "| inputs | dims | R^2 ALS factors | R^2 log-popularity |",
        "|---|---|---|---|",
    ]
    for r in out["probe"]:
        lines.append(f"| {r['inputs']} | {r['dims']:,} | {r['r2_factors']:.3f} | {r['r2_log_popularity']:.3f} |")
    lines += ["", f"Peak memory (process RSS): {out['peak_memory_mb']:.0f} MiB", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
