"""Benchmark: the pipeline at 10k / 100k / 1M users (100k items, ~50 interactions per user), local and on a
two-node local Ray cluster.

Data: synthetic with planted structure (12 topics, each user prefers one topic and draws 80 % of their items
from it, item popularity Zipf-like within a topic), written as 8 Parquet part files plus an items table
with titles. Stages, each timed (wall) with its peak memory (RSS of this process, its children and, on
Ray, every Ray process, sampled every 0.2 s):

- ingest: `tabular.load` of the Parquet folder (Ray Data's parallel reader on Ray) -> `Dataset` + CSR;
- split: the last interaction of 10k sampled users is held out;
- encode: the 100k item titles with MiniLM into the embedding cache (Ray Data actor pool on Ray). Items do
  not grow with users: the cache is cold at the first size only, later sizes read it (reported as such);
- popularity, als (implicit, 64 factors, `--als-iterations`), meta (MAML, sampled tasks: `--tasks` user
  tasks per epoch, `--meta-epochs` epochs, sampled softmax over 2,000 negatives; Ray Train with 2
  workers on Ray);
- eval: HR@10 / NDCG@10 of the held-out item for the 10k sampled users, top-10 by HNSW retrieval
  (`ItemIndex.search_batch`, seen items skipped), for ALS and the meta model (which adapts each user
  from their training history); also the ANN's recall@10 against exact search on 1,000 of them.

Growth exponent of a stage between sizes a < b: log(t_b / t_a) / log(b / a) (1 = linear in users).
Each size runs in a fresh process, so peaks do not carry over. Writes benchmarks/results/scale.{json,md}.

    python benchmarks/bench_scale.py                       # local and Ray, 10k / 100k / 1M
    python benchmarks/bench_scale.py --backends local --sizes 10000
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
N_ITEMS = 100_000
EVAL_USERS = 10_000


# ---------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory of this process tree (and, on Ray, every process of the Ray session) while a stage runs.

    PSS (proportional set size): pages shared between processes (Ray's object store, shared libraries)
    count once in total, not once per process as RSS sums would."""

    def __init__(self, ray: bool) -> None:
        import psutil

        self.psutil, self.ray = psutil, ray
        self.me = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        procs = [self.me, *self.me.children(recursive=True)]
        if self.ray:
            seen = {p.pid for p in procs}
            for p in self.psutil.process_iter(["pid", "cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if p.info["pid"] not in seen and ("ray::" in cmd or "/ray/" in cmd) and "bench_scale" not in cmd:
                    procs.append(p)
        total = 0
        for p in procs:
            with suppress(self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                total += p.memory_full_info().pss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.3)

    def __enter__(self) -> PeakMemory:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


# ---------------------------------------------------------------------------------------------- data
def generate(n_users: int, folder: Path, seed: int = 0, per_user: int = 50) -> dict[str, Any]:
    """Planted-structure interactions as Parquet parts + an items table (vectorised: no loop over users)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from metarec.data.sources.synthetic import _FILLER, _TOPIC_WORDS

    rng = np.random.default_rng(seed)
    n_topics = len(_TOPIC_WORDS)
    item_topic = rng.integers(0, n_topics, N_ITEMS)
    pop = rng.zipf(1.6, N_ITEMS).clip(max=1000).astype(np.float64)
    # items sorted by topic; cum[i] = topic + the within-topic cumulative popularity share, so one
    # searchsorted on (topic + uniform) draws an item of that topic by popularity
    by_topic = np.argsort(item_topic, kind="stable")
    t_sorted = item_topic[by_topic]
    share = pop[by_topic] / np.bincount(item_topic, weights=pop, minlength=n_topics)[t_sorted]
    cum = t_sorted + (
        np.cumsum(share) - np.concatenate([[0.0], np.cumsum(np.bincount(t_sorted, weights=share))])[t_sorted]
    )
    counts = rng.integers(per_user - 20, per_user + 21, n_users)
    user = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    fav = rng.integers(0, n_topics, n_users)
    topic = np.where(rng.random(len(user)) < 0.8, fav[user], rng.integers(0, n_topics, len(user)))
    pos = np.searchsorted(cum, topic + rng.random(len(user)) * (1 - 1e-12), side="right")
    item = by_topic[np.minimum(pos, N_ITEMS - 1)]
    key = np.unique(user * N_ITEMS + item)  # one interaction per (user, item)
    user, item = key // N_ITEMS, key % N_ITEMS
    # events arrive in time order, users interleaved (as a log is written): rows shuffled, timestamps rising
    order = rng.permutation(len(user))
    user, item = user[order], item[order]
    ts = 1_600_000_000 + np.arange(len(user), dtype=np.int64)
    (folder / "interactions").mkdir(parents=True, exist_ok=True)
    for j, rows in enumerate(np.array_split(np.arange(len(user)), 8)):
        table = pa.table({"user_id": user[rows], "item_id": item[rows], "timestamp": ts[rows]})
        pq.write_table(table, folder / "interactions" / f"part-{j}.parquet")
    words = np.array(_TOPIC_WORDS)
    rng = np.random.default_rng(seed + 1)  # titles drawn apart from the users: the same catalogue at every size
    a = rng.integers(0, 6, N_ITEMS)
    b = (a + rng.integers(1, 6, N_ITEMS)) % 6  # two different topic words per title
    f1, f2 = rng.integers(0, len(_FILLER), (2, N_ITEMS))
    filler = np.array(_FILLER)
    titles = pd.Series(filler[f1]) + " " + words[item_topic, a] + " " + filler[f2] + " " + words[item_topic, b]
    titles = titles.str.title() + " " + pd.Series(np.arange(N_ITEMS)).astype(str)
    items = pd.DataFrame({"item_id": np.arange(N_ITEMS), "title": titles, "genres": words[item_topic, 0]})
    items.to_parquet(folder / "items.parquet")
    return {"interactions": len(user), "users": n_users, "items": N_ITEMS}


# ---------------------------------------------------------------------------------------------- one size
def child(n_users: int, backend: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage at one size, in this (fresh) process."""
    import torch

    from metarec.data.schema import ITEM, TIME, USER
    from metarec.data.sources import tabular
    from metarec.distributed import ray_session
    from metarec.distributed.cluster import startup_seconds
    from metarec.models.baselines import ALSRecommender, PopularityRecommender
    from metarec.models.meta import MetaRecommender
    from metarec.text.cache import EmbeddingCache
    from metarec.text.registry import encode_texts, get_encoder

    os.environ["METAREC_HOME"] = str(home)
    torch.set_num_threads(2)
    out: dict[str, Any] = {"users": n_users, "backend": backend, "stages": {}}
    data = Path(tempfile.mkdtemp(prefix=f"scale-{n_users}-"))
    t0 = time.perf_counter()
    out["data"] = generate(n_users, data, seed=args.seed)
    out["generate_seconds"] = time.perf_counter() - t0
    ray_on = backend == "ray"

    @contextmanager
    def stage(name: str, **extra: Any) -> Any:
        with PeakMemory(ray_on) as mem:
            t = time.perf_counter()
            yield
            seconds = time.perf_counter() - t
        out["stages"][name] = {"seconds": seconds, "peak_gib": mem.peak / 2**30, **extra}
        print(f"  {n_users:>9,} {backend:5} {name:10} {seconds:8.1f} s  {mem.peak / 2**30:6.2f} GiB", flush=True)

    dcfg = {"backend": backend, "address": "auto", "num_workers": 2, "cpus_per_worker": 1}
    with ray_session(dcfg if ray_on else None) as session:
        out["ray_connect_seconds"] = startup_seconds.get("connect", 0.0) if ray_on else 0.0
        with PeakMemory(ray_on) as idle:  # before any stage: this process, plus the Ray cluster at rest
            pass
        out["baseline_gib"] = idle.peak / 2**30
        with stage("ingest"):
            ds = tabular.load(data / "interactions", items=data / "items.parquet", name=f"scale-{n_users}")
            matrix = ds.matrix()
        out["data"]["nnz"] = int(matrix.nnz)
        with stage("split"):
            rng = np.random.default_rng(args.seed)
            inter = ds.interactions
            eval_users = np.sort(rng.choice(ds.n_users, min(EVAL_USERS, ds.n_users), replace=False))
            mine = inter[inter[USER].isin(eval_users)]
            last = mine.loc[mine.groupby(USER)[TIME].idxmax()]
            train = ds.with_interactions(inter.drop(index=last.index))
            target = last.set_index(USER).loc[eval_users, ITEM].to_numpy()
            history = train.matrix()[eval_users]
        enc = get_encoder({"encoder": "sentence-transformers", "threads": 2})
        texts = ds.items["title"].tolist()
        with stage("encode", cached_before=len(EmbeddingCache(enc, "{title}"))):  # 0: a cold cache
            encode_texts(enc, texts, "{title}")  # the namespace the meta model's text source reads
        with stage("popularity"):
            PopularityRecommender().fit(train)
        with stage("als"):
            als = ALSRecommender(factors=64, iterations=args.als_iterations, num_threads=2, seed=args.seed).fit(train)
        meta_params: dict[str, Any] = {
            "algorithm": "maml", "dim": 64, "negatives": 2000, "meta_batch": 32, "tasks_per_epoch": args.tasks,
            "epochs": args.meta_epochs, "patience": args.meta_epochs, "valid_users": 500, "valid_k": [5],
            "train_shots": [1, 5, 10, 20], "threads": 2, "seed": args.seed,
            "item_features": {"text": {"template": "{title}"}, "id": {}},
            "text": {"encoder": "sentence-transformers"},
        }  # fmt: skip
        with stage("meta", workers=2 if ray_on else 1):
            if ray_on:
                from metarec.distributed.train import train_distributed
                from metarec.models.io import load_model

                assert session is not None
                cfg = {"seed": args.seed, "models": {"maml": {"type": "meta", **{k: v for k, v in meta_params.items()
                       if k not in ("threads", "seed", "text")}}}, "text": meta_params["text"]}  # fmt: skip
                cfg["models"]["maml"]["threads"] = 1
                dest = data / "meta-model"
                train_distributed(cfg, "maml", train, session.model_copy(update={"cpus_per_worker": 1}), dest)
                meta, _ = load_model(dest)
            else:
                meta = MetaRecommender(**meta_params).fit(train)
        out["meta_fit"] = {k: v for k, v in getattr(meta, "fit_info_", {}).items() if k != "history"}
        checks: dict[str, Any] = {}
        with stage("eval"):
            out["eval"] = evaluate(als, meta, history, target, eval_users, checks)
        for name, recall in ann_recall(checks, history).items():  # not timed: a check, not a stage
            out["eval"][name]["ann_recall@10"] = recall
    if ray_on:
        out["ray_connect_seconds"] = startup_seconds.get("connect", 0.0)
    return out


def evaluate(als: Any, meta: Any, history: Any, target: np.ndarray, users: np.ndarray,
             checks: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """HR@10 / NDCG@10 of the held-out item, by HNSW retrieval, for ALS and the meta model; `checks` gets
    what `ann_recall` compares with exact search (outside the timed stage)."""
    import torch

    from metarec.serve.index import ItemIndex

    res: dict[str, Any] = {}
    E, b = meta.item_vectors()
    with torch.no_grad():  # the meta model adapts each user from their history, 500 at a time
        H = np.concatenate([meta.query_vector(meta.fold_in(history[s : s + 500]))
                            for s in range(0, len(users), 500)])  # fmt: skip
    meta_items, meta_queries = np.hstack([E, b[:, None]]), np.hstack([H, np.ones((len(H), 1))])  # bias rides along
    for name, items, queries in (
        ("als", als.model_.item_factors, als.model_.user_factors[users]),
        ("meta", meta_items, meta_queries),
    ):
        items, queries = np.asarray(items, np.float32), np.asarray(queries, np.float32)
        t = time.perf_counter()
        index = ItemIndex(items, exact_below=0)
        build = time.perf_counter() - t
        t = time.perf_counter()
        top = index.search_batch(queries, 10, history)
        search = time.perf_counter() - t
        hit = top == target[:, None]
        rank = np.where(hit.any(1), hit.argmax(1), -1)
        ndcg = np.where(rank >= 0, 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
        checks[name] = (items, queries[:1000], top[:1000])
        res[name] = {"hr@10": float(hit.any(1).mean()), "ndcg@10": float(ndcg.mean()),
                     "index_build_seconds": build, "search_seconds": search}  # fmt: skip
    pop_top = np.argsort(-np.asarray(history.sum(0)).ravel())[:10]  # reference: the 10 most popular of the sample
    res["popularity_hr@10_sample"] = float(np.isin(target, pop_top).mean())
    return res


def ann_recall(checks: dict[str, Any], history: Any) -> dict[str, float]:
    """Recall@10 of the HNSW top-10 against exact search, on 1,000 of the evaluated users."""
    from metarec.serve.index import ItemIndex

    out = {}
    for name, (items, queries, top) in checks.items():
        exact = ItemIndex(items, exact_below=10**12).search_batch(queries, 10, history[: len(queries)])
        out[name] = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(top, exact, strict=True)]))
    return out


# ---------------------------------------------------------------------------------------------- driver
@contextmanager
def ray_cluster() -> Any:
    """A two-node local Ray cluster on loopback (1 CPU each), stopped afterwards even on failure."""
    ray = str(Path(sys.executable).parent / "ray")
    head = [ray, "start", "--head", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--port", "6390",
            "--include-dashboard", "false", "--disable-usage-stats"]  # fmt: skip
    subprocess.run([ray, "stop", "--force"], capture_output=True)
    try:
        subprocess.run(head, check=True, capture_output=True)
        subprocess.run([ray, "start", "--address", "127.0.0.1:6390", "--num-cpus", "1", "--node-ip-address",
                        "127.0.0.1", "--disable-usage-stats"], check=True, capture_output=True)  # fmt: skip
        yield "127.0.0.1:6390"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)


def exponents(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, log(t_b / t_a) / log(n_b / n_a) between consecutive sizes."""
    out: dict[str, dict[str, float]] = {}
    for a, b in itertools.pairwise(rows):
        for name, st in b["stages"].items():
            ta = a["stages"].get(name, {}).get("seconds")
            if ta and st["seconds"] > 0:
                out.setdefault(name, {})[f"{a['users']}->{b['users']}"] = math.log(st["seconds"] / ta) / math.log(
                    b["users"] / a["users"]
                )
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ("numpy", "pandas", "pyarrow", "scipy", "torch", "implicit", "hnswlib", "sentence-transformers", "ray")
    out = {"python": platform.python_version()}
    for n in names:
        with suppress(md.PackageNotFoundError):
            out[n] = md.version(n)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Scale benchmark: 10k / 100k / 1M users, 100k items, ~50 interactions per user", "",
        f"commit `{report['commit']}`, {report['machine']}; args {report['args']}", "",
        "Times are wall seconds; memory is the stage's peak PSS (this process tree, plus every Ray process on Ray; "
        "shared pages counted once), the data of all earlier stages included.",
        "The `encode` stage encodes the 100k item titles (the same catalogue at every size): the embedding cache is "
        "cold at the first size only and read at the others, so its exponent is not a cost of users.", "",
    ]  # fmt: skip
    for backend, rows in report["runs"].items():
        if not rows:
            continue
        stages = list(rows[0]["stages"])
        lines += [f"## {backend}", "", "| stage | " + " | ".join(f"{r['users']:,} users" for r in rows) + " |",
                  "|---|" + "---|" * len(rows)]  # fmt: skip
        for st in stages:
            cells = [f"{r['stages'][st]['seconds']:.1f} s / {r['stages'][st]['peak_gib']:.2f} GiB"
                     if st in r["stages"] else "-" for r in rows]  # fmt: skip
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
        total = [sum(s["seconds"] for s in r["stages"].values()) for r in rows]
        peak = [max(s["peak_gib"] for s in r["stages"].values()) for r in rows]
        lines.append("| **all stages** | " + " | ".join(f"**{t:.0f} s / {p:.2f} GiB**" for t, p in zip(total, peak,
                     strict=True)) + " |")  # fmt: skip
        lines.append("| interactions | " + " | ".join(f"{r['data']['nnz']:,}" for r in rows) + " |")
        lines.append("| memory before the stages | " + " | ".join(f"{r['baseline_gib']:.2f} GiB" for r in rows) + " |")
        if backend == "ray":
            lines.append("| Ray connect | " + " | ".join(f"{r['ray_connect_seconds']:.1f} s" for r in rows) + " |")
        pairs = list(next(iter(report["exponents"][backend].values()), {}))
        lines += ["", "Growth exponents (1.0 = linear in users):", "", "| stage | " + " | ".join(pairs) + " |",
                  "|---|" + "---|" * len(pairs)]  # fmt: skip
        for st, ex in report["exponents"][backend].items():
            lines.append(f"| {st} | " + " | ".join(f"{v:.2f}" for v in ex.values()) + " |")
        lines += ["", "Quality on 10k sampled users (held-out last item, HNSW top-10, seen items skipped):", "",
                  "| users | ALS HR@10 | ALS NDCG@10 | ALS ANN recall | meta HR@10 | meta NDCG@10 | meta ANN recall "
                  "| top-10 popular HR@10 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            e = r["eval"]
            lines.append(f"| {r['users']:,} | {e['als']['hr@10']:.3f} | {e['als']['ndcg@10']:.3f} | "
                         f"{e['als']['ann_recall@10']:.3f} | {e['meta']['hr@10']:.3f} | {e['meta']['ndcg@10']:.3f} | "
                         f"{e['meta']['ann_recall@10']:.3f} | {e['popularity_hr@10_sample']:.3f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backends", default="local,ray")
    ap.add_argument("--als-iterations", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=4000, help="user tasks per meta epoch")
    ap.add_argument("--meta-epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "scale")
    ap.add_argument(
        "--cache",
        type=Path,
        help="keep METAREC_HOME (the embedding cache) here across runs; "
        "default: a fresh one per back-end, cold at the first size",
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-backend", help=argparse.SUPPRESS)
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = child(args.child, args.child_backend, args.home, args)
        args.result.write_text(json.dumps(res, indent=1))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    report: dict[str, Any] = {
        "commit": os.environ.get("METAREC_GIT_COMMIT") or subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}", "versions": versions(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                 if k not in ("child", "child_backend", "home", "result")}, "runs": {}, "exponents": {},
    }  # fmt: skip
    for backend in args.backends.split(","):
        rows: list[dict[str, Any]] = []
        report["runs"][backend] = rows
        home_dir = nullcontext(str(args.cache)) if args.cache else tempfile.TemporaryDirectory()
        with home_dir as home, ray_cluster() if backend == "ray" else nullcontext() as address:
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            if address:
                env["RAY_ADDRESS"] = address
            for n in sizes:
                result = Path(home) / f"result-{n}.json"
                cmd = [sys.executable, __file__, "--child", str(n), "--child-backend", backend, "--home", home,
                       "--result", str(result), "--als-iterations", str(args.als_iterations), "--tasks",
                       str(args.tasks), "--meta-epochs", str(args.meta_epochs), "--seed", str(args.seed)]  # fmt: skip
                t = time.perf_counter()
                proc = subprocess.run(cmd, env=env)
                if proc.returncode != 0:
                    rows.append({"users": n, "failed": proc.returncode, "stages": {}})
                    print(f"size {n} on {backend} failed with {proc.returncode}", flush=True)
                    break
                row = json.loads(result.read_text())
                row["process_seconds"] = time.perf_counter() - t
                rows.append(row)
        report["exponents"][backend] = exponents([r for r in rows if r["stages"]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(report, indent=1))
        Path(f"{args.out}.md").write_text(
            markdown({**report, "runs": {k: [r for r in v if r["stages"]] for k, v in report["runs"].items()}})
        )
    print(Path(f"{args.out}.md").read_text())


if __name__ == "__main__":
    main()
