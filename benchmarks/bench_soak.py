"""Soak benchmark: the service under a long mixed load, minute by minute (not a test).

`metarec serve` runs in its own process (SQLite, loopback); 4 asyncio clients send a mix of
recommend / feedback / search / explain / new item / new user requests until the time is up. Every
minute it records p50 / p99 per endpoint, the server's RSS and open file descriptors, and the disk
used by the database and the embedding cache; at the end it counts database rows against the writes
the server acknowledged. Writes benchmarks/results/soak.json and soak.md.

    python benchmarks/bench_soak.py [--minutes 10] [--catalogue ml-100k|synthetic-100k|both] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import start_server, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CATALOGUES = {
    "ml-100k": {"dataset": {"source": "movielens", "variant": "ml-100k"}, "model": {"algorithm": "maml"}},
    "synthetic-100k": {
        "dataset": {"source": "synthetic", "n_users": 2000, "n_items": 100_000, "seed": 0},
        "model": {"algorithm": "maml", "negatives": 2000, "epochs": 10},
    },
}
QUERIES = [f"{a} {b}" for a in ("space", "love", "war", "music", "family", "crime", "magic") for b in
           ("adventure", "comedy", "drama", "story", "night", "hero", "city")][:50]  # fmt: skip
MIX = [("recommend", 40), ("feedback", 25), ("search", 15), ("explain", 10), ("new_item", 5), ("new_user", 5)]


def _proc_stats(pid: int) -> dict[str, float]:
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS"))  # fmt: skip
    return {"rss_mb": rss / 1024, "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _disk_mb(*paths: Path) -> float:
    total = 0
    for p in paths:
        files = [p] if p.is_file() else list(p.rglob("*")) if p.exists() else []
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total / 2**20


def _request(what: str, rng: random.Random, users: list[str], counter: dict, item_ids: list[str]
             ) -> tuple[str, str, dict | None, str | None]:  # fmt: skip
    """(method, path, body, what it adds when acknowledged)."""
    user = rng.choice(users)
    if what == "recommend":
        return "GET", f"/users/{user}/recommendations?k=10", None, None
    if what == "explain":
        return "GET", f"/users/{user}/recommendations?k=10&explain=true", None, None
    if what == "search":
        return "GET", f"/items?query={rng.choice(QUERIES)}&k=10", None, None
    if what == "feedback":
        events = [{"item": rng.choice(item_ids), "kind": rng.choice(["like", "click", "dislike"])}]
        return "POST", f"/users/{user}/interactions", {"events": events}, "interactions"
    if what == "new_item":
        counter["item"] += 1
        item = {"id": f"soak-{counter['item']}", "title": f"{rng.choice(QUERIES)} {counter['item']}",
                "fields": {"genres": rng.choice(["space", "love", "war"])}}  # fmt: skip
        return "POST", "/items", {"items": [item]}, "items"
    counter["user"] += 1  # the id joins `users` once the server has acknowledged it
    return "POST", "/users", {"id": f"s{counter['user']}", "profile_text": rng.choice(QUERIES)}, "users"


async def soak(base: str, item_ids: list[str], minutes: float, clients: int, watch: dict) -> dict:
    rng = random.Random(0)
    t0 = time.perf_counter()
    end = t0 + 60 * minutes
    lat: dict[tuple[int, str], list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    failures: list[dict] = []  # what each failed request got back (the first 50)
    acked = {"interactions": 0, "users": 0, "items": 0}
    users = [f"s{u}" for u in range(50)]
    kinds, weights = zip(*MIX, strict=True)
    counter = {"user": 50, "item": 0}

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < end:
            what = rng.choices(kinds, weights)[0]
            method, path, body, adds = _request(what, rng, users, counter, item_ids)
            t = time.perf_counter()
            try:
                r = await client.request(method, path, json=body)
                failure = f"{r.status_code} {r.text[:200]}" if r.status_code >= 400 else None
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            lat[(int((t - t0) // 60), what)].append((time.perf_counter() - t) * 1e3)
            if failure is not None:
                errors[what] += 1
                if len(failures) < 50:
                    failures.append({"endpoint": what, "method": method, "path": path, "failure": failure,
                                     "second": round(t - t0, 1)})  # fmt: skip
            elif adds:
                acked[adds] += 1
                if adds == "users" and body is not None:
                    users.append(body["id"])

    async def monitor() -> None:
        while time.perf_counter() < end:
            await asyncio.sleep(60 - ((time.perf_counter() - t0) % 60))
            minute = int((time.perf_counter() - t0) // 60)
            disk = {"db_mb": _disk_mb(*watch["db"]), "cache_mb": _disk_mb(watch["cache"])}
            watch["minutes"].append({"minute": minute, **_proc_stats(watch["pid"]), **disk})

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)), monitor())
    per_minute: dict[str, list[dict]] = defaultdict(list)
    for (minute, what), values in sorted(lat.items()):
        per_minute[what].append({"minute": minute, "n": len(values), "p50_ms": float(np.percentile(values, 50)),
                                 "p99_ms": float(np.percentile(values, 99))})  # fmt: skip
    return {"per_minute": per_minute, "errors": dict(errors), "failures": failures, "acknowledged": acked}


def run(name: str, minutes: float, clients: int, work: Path) -> dict:
    art = work / name
    ds, _, train_s = train(CATALOGUES[name], art)
    db = work / f"{name}.db"
    home = work / f"home-{name}"
    proc, base = start_server(art, db, METAREC_HOME=str(home))
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for u in range(50):
                c.post("/users", json={"id": f"s{u}"}).raise_for_status()
        watch = {"pid": proc.pid, "db": [db, Path(f"{db}-wal")], "cache": home / "embeddings", "minutes": []}
        out = asyncio.run(soak(base, ds.items["item_id"].tolist(), minutes, clients, watch))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a graceful shutdown that hangs must not lose the results
            proc.kill()
            proc.wait()
    with sqlite3.connect(db) as con:
        rows = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("interactions", "users", "items")}
    acked = out["acknowledged"]
    expected = {"interactions": acked["interactions"], "users": 50 + acked["users"],
                "items": ds.n_items + acked["items"]}  # fmt: skip
    mins = watch["minutes"]
    p99_ratio = {what: pts[-1]["p99_ms"] / pts[0]["p99_ms"] for what, pts in out["per_minute"].items() if len(pts) > 1}
    last5 = [m for m in mins if m["minute"] >= mins[-1]["minute"] - 5] if mins else []
    rss_growth = last5[-1]["rss_mb"] / last5[0]["rss_mb"] - 1 if len(last5) > 1 else float("nan")
    return {"catalogue": name, "items": ds.n_items, "minutes": minutes, "clients": clients, "train_seconds": train_s,
            **out, "monitor": mins, "db_rows": rows, "expected_rows": expected,
            "every_write_in_db": rows == expected, "last_over_first_minute_p99": p99_ratio,
            "rss_growth_last_5_min": rss_growth}  # fmt: skip


def markdown(runs: list[dict], versions: dict) -> str:
    md = ["# Soak: the service under a long mixed load (SQLite, loopback, 2 cores)", ""]
    for r in runs:
        md += [f"## {r['catalogue']} ({r['items']:,} items), {r['minutes']:g} min, {r['clients']} clients", "",
               f"- errors: {sum(r['errors'].values())} {r['errors'] or ''}",
               f"- every acknowledged write in the database: {r['every_write_in_db']} "
               f"(rows {r['db_rows']}, expected {r['expected_rows']})",
               "- last-minute / first-minute p99: "
               + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["last_over_first_minute_p99"].items())),
               f"- RSS growth over the last 5 minutes: {100 * r['rss_growth_last_5_min']:.1f}%",
               *[f"- failed: {f['method']} {f['path']} at {f['second']} s -> {f['failure']}"
                 for f in r["failures"][:10]],
               "",
               "| minute | RSS MiB | open fds | DB MiB | embedding cache MiB |", "|---|---|---|---|---|"]  # fmt: skip
        md += [f"| {m['minute']} | {m['rss_mb']:.0f} | {m['open_fds']} | {m['db_mb']:.2f} | {m['cache_mb']:.2f} |"
               for m in r["monitor"]]  # fmt: skip
        md += ["", "| endpoint | minute | requests | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for what, pts in sorted(r["per_minute"].items()):
            md += [f"| {what} | {p['minute']} | {p['n']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |" for p in pts]
        md.append("")
    md.append(f"Machine: {versions['platform']}; commit `{versions.get('git_commit')}`; "
              "produced by `python benchmarks/bench_soak.py`.")  # fmt: skip
    return "\n".join(md) + "\n"


def main() -> int:
    from metarec.utils import versions

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--catalogue", choices=[*CATALOGUES, "both"], default="both")
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    names = list(CATALOGUES) if args.catalogue == "both" else [args.catalogue]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run(n, args.minutes, args.clients, Path(tmp)) for n in names]
    v = versions()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({"runs": runs, "versions": v}, indent=2, default=str))
    (RESULTS / "soak.md").write_text(markdown(runs, v))
    for r in runs:
        print(r["catalogue"], "errors", sum(r["errors"].values()), "writes in db", r["every_write_in_db"],
              "p99 last/first", r["last_over_first_minute_p99"])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
