"""Load benchmark of the service on loopback, plus ANN recall against exact search.

1. ml-100k: a MAML artefact trained on all users; `metarec serve` in its own process (SQLite);
   an asyncio + httpx client (concurrency 8) asks for recommendations of 300 users, then posts one
   interaction per request (each stores, then re-adapts the user).
2. A synthetic 100,000-item catalogue: the same, served from the HNSW index.
3. ANN recall@10 of the HNSW index against the exact matrix product for 1,000 user vectors.
Both run on this 2-core machine with client and server sharing the cores. Writes
benchmarks/results/serve.json and serve.md. Usage: python benchmarks/bench_serve.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONCURRENCY = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(config: dict, out: Path):
    from metarec.data.sources import load_dataset
    from metarec.models import build_model
    from metarec.models.io import save_model

    ds = load_dataset(config["dataset"])
    t = time.perf_counter()
    model = build_model("meta", config["model"], seed=42).fit(ds)
    save_model(model, out, ds, config)
    return ds, model, time.perf_counter() - t


async def load(base: str, paths: list[tuple[str, str, dict | None]], concurrency: int = CONCURRENCY) -> dict:
    lat: list[float] = []
    errors = 0
    queue = list(paths)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            method, path, body = queue.pop()
            t = time.perf_counter()
            r = await client.request(method, path, json=body)
            lat.append((time.perf_counter() - t) * 1e3)
            errors += r.status_code >= 400

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def start_server(artifact: Path, db: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`metarec serve` in its own process on a free loopback port, once /health answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarec.cli", "serve", "--artifact", str(artifact), "--db", f"sqlite:///{db}",
         "--port", str(port)],
        env={**os.environ, "METAREC_TOKEN": "", **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    return proc, base


def serve_and_load(artifact: Path, item_ids: list[str], n_users: int = 300) -> dict:
    db = artifact / "bench.db"
    db.unlink(missing_ok=True)
    proc, base = start_server(artifact, db)
    try:
        health = httpx.get(f"{base}/health").json()
        rng = random.Random(0)
        with httpx.Client(base_url=base, timeout=60) as c:
            for u in range(n_users):
                c.post("/users", json={"id": f"b{u}"}).raise_for_status()
                events = [{"item": rng.choice(item_ids), "kind": "like"} for _ in range(5)]
                c.post(f"/users/b{u}/interactions", json={"events": events}).raise_for_status()
        recs = [("GET", f"/users/b{rng.randrange(n_users)}/recommendations?k=10", None) for _ in range(3000)]
        asyncio.run(load(base, recs[:300]))  # warm-up
        rec = asyncio.run(load(base, recs))
        rec1 = asyncio.run(load(base, recs[:1000], concurrency=1))
        posts = [("POST", f"/users/b{rng.randrange(n_users)}/interactions",
                  {"events": [{"item": rng.choice(item_ids), "kind": "click"}]}) for _ in range(1500)]  # fmt: skip
        inter = asyncio.run(load(base, posts[:1000]))
        inter1 = asyncio.run(load(base, posts[1000:], concurrency=1))
        return {
            "health": health,
            "recommendations": rec,
            "recommendations_one_client": rec1,
            "interactions_with_readaptation": inter,
            "interactions_with_readaptation_one_client": inter1,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ann_recall(art: Path, work: Path, n_queries: int = 1000) -> dict:
    """Recall@10 of the index the service serves (rows [e_i, b_i, w * text_i], HNSW above 20,000 items)
    for the query vectors it serves ([h_u, 1, profile_u] of training users with a profile text), against
    the exact inner product over the same rows."""
    from metarec.serve.service import RecommenderService

    t = time.perf_counter()
    service = RecommenderService(art, f"sqlite:///{work / 'ann.db'}")
    start_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    users = rng.choice(sorted(service.train_users), n_queries, replace=False).tolist()
    for u in users:
        service.create_user(u, str(rng.choice(["I love space and rocket stories", "war films", "quiet romance"])))
    queries = np.vstack([service._state(u)[1] for u in users])
    rows = service.index.vectors
    hits, ann_ms, exact_ms = 0, [], []
    for u, q in zip(users, queries, strict=True):
        seen = service._state(u)[0].payload["seen"]
        t = time.perf_counter()
        ids, _ = service.index.search(q, 10, exclude=seen)
        ann_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        scores = rows @ q
        scores[list(seen)] = -np.inf
        truth = np.argpartition(-scores, 10)[:10]
        exact_ms.append((time.perf_counter() - t) * 1e3)
        hits += len(set(ids.tolist()) & set(truth.tolist()))
    service.store.engine.dispose()
    return {"items": len(rows), "dims": rows.shape[1], "approximate": service.index.approximate,
            "recall@10": hits / (10 * n_queries), "service_start_s": start_s,
            "ann_query_ms_p50": float(np.median(ann_ms)), "exact_query_ms_p50": float(np.median(exact_ms))}  # fmt: skip


def main() -> int:
    from metarec.utils import versions

    out: dict = {"concurrency": CONCURRENCY, "versions": versions()}
    with tempfile.TemporaryDirectory() as tmp:
        ml_cfg = {"dataset": {"source": "movielens", "variant": "ml-100k"}, "model": {"algorithm": "maml"}}
        ds, _, secs = train(ml_cfg, Path(tmp) / "ml")
        out["ml-100k"] = {"train_seconds": secs, **serve_and_load(Path(tmp) / "ml", ds.items["item_id"].tolist())}
        print("ml-100k", out["ml-100k"], flush=True)
        syn_cfg = {
            "dataset": {"source": "synthetic", "n_users": 3000, "n_items": 100_000, "interactions_per_user": [20, 60],
                        "n_topics": 12, "seed": 0},
            "model": {"algorithm": "maml", "negatives": 2000, "epochs": 10},
        }  # fmt: skip
        ds, _, secs = train(syn_cfg, Path(tmp) / "syn")
        out["synthetic-100k"] = {"train_seconds": secs, "ann": ann_recall(Path(tmp) / "syn", Path(tmp)),
                                 **serve_and_load(Path(tmp) / "syn", ds.items["item_id"].tolist())}  # fmt: skip
        print("synthetic-100k", out["synthetic-100k"], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(out, indent=2))
    md = [
        "# Service load on loopback (2 cores shared by server and client, SQLite)",
        "",
        "Throughput with 8 concurrent clients; latency without queueing with one client (`one client` rows).",
        "",
        "| catalogue | index | endpoint | requests | errors | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("ml-100k", "synthetic-100k"):
        r = out[name]
        index = "HNSW" if r["health"]["approximate_index"] else "exact"
        for ep in ("recommendations", "recommendations_one_client", "interactions_with_readaptation",
                   "interactions_with_readaptation_one_client"):  # fmt: skip
            x = r[ep]
            label = f"{name} ({r['health']['items']:,} items)"
            md.append(f"| {label} | {index} | {ep.replace('_', ' ')} | {x['requests']} | "
                      f"{x['errors']} | {x['rps']:.0f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} |")  # fmt: skip
    a = out["synthetic-100k"]["ann"]
    md += ["", f"ANN (hnswlib, M=32, ef=200), the index the service serves ({a['items']:,} items x {a['dims']} "
           f"dims: model vector, bias, profile-text vector): recall@10 against exact search **{a['recall@10']:.3f}** "
           f"over 1,000 served query vectors (training users with a profile, their seen items excluded); "
           f"service start incl. index build {a['service_start_s']:.1f} s; query p50 "
           f"{a['ann_query_ms_p50']:.2f} ms vs exact {a['exact_query_ms_p50']:.2f} ms.", "",
           f"Machine: {versions()['platform']}; produced by `python benchmarks/bench_serve.py`.", ""]  # fmt: skip
    (RESULTS / "serve.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
