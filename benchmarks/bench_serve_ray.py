"""Benchmark: a killed Ray Serve replica under load.

The service (a MAML artefact trained on all ml-100k users) runs as a Ray Serve deployment with 2 replicas
over one PostgreSQL database, on a private 2-CPU Ray cluster. For 60 s, 4 client threads ask for
recommendations of 300 users (created first; the model was trained on them) and post likes (1 in 5). At
20 s one replica's process is killed (SIGKILL); Ray Serve's controller starts a replacement. Reported:
requests, failed requests (a non-2xx answer or a connection error) before / during / after the kill, latency
percentiles, the seconds until 2 replicas are RUNNING again, and whether every like was stored exactly once.
Each like carries an Idempotency-Key, so the gateway (`distributed.serve.Gateway`) may re-send it.
Writes benchmarks/results/serve_ray.{json,md}.

Needs PostgreSQL: METAREC_TEST_PG_URL (as in the tests), e.g.
    METAREC_TEST_PG_URL=postgresql+psycopg://metarec:metarec@127.0.0.1:5432/metarec_test \\
        python benchmarks/bench_serve_ray.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DURATION, KILL_AT, THREADS = 60.0, 20.0, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:  # noqa: C901  # one scripted run, read top to bottom
    import httpx
    import psutil
    import ray
    from ray import serve
    from sqlalchemy import create_engine, text

    from metarec.data.sources import load_dataset
    from metarec.distributed import serve as ray_serve
    from metarec.models import build_model
    from metarec.models.io import save_model

    pg = os.environ["METAREC_TEST_PG_URL"]
    tmp = Path(tempfile.mkdtemp())
    ds = load_dataset({"source": "movielens", "variant": "ml-100k"})
    t = time.perf_counter()
    model = build_model("meta", {"algorithm": "maml"}, seed=42).fit(ds)
    save_model(model, tmp / "model", ds, {"dataset": {"source": "movielens", "variant": "ml-100k"}})
    train_seconds = time.perf_counter() - t
    name = f"metarec_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    url = pg.rsplit("/", 1)[0] + "/" + name
    port, auth = free_port(), {"Authorization": "Bearer t0ken"}
    users = ds.users["user_id"].tolist()
    items = ds.items["item_id"].tolist()
    log: list[tuple[float, float, bool, str]] = []  # (start, latency, ok, what went wrong)
    replicas: list[tuple[float, int]] = []
    likes: list[int] = []  # likes answered 2xx (each stores one event)
    resent: list[tuple[float, str, int]] = []  # (sent at, method, re-sends) of requests the gateway re-sent
    in_database = -1
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_serve.deployment(tmp / "model", url, replicas=2, app_kwargs={"token": "t0ken"}),
                  name="metarec", route_prefix="/")  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        users = users[:300]  # known to the model; the service knows a user once created
        with httpx.Client(base_url=base, timeout=60) as c:
            for user in users:
                r = c.post("/users", json={"id": user}, headers=auth)
                if r.status_code != 201:
                    raise SystemExit(f"creating user {user} answered {r.status_code}: {r.text}")
        t0 = time.perf_counter()
        stop = threading.Event()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=base, timeout=30) as c:
                while not stop.is_set():
                    user = rng.choice(users)
                    start = time.perf_counter()
                    try:
                        if rng.random() < 0.2:  # a key per like: the gateway may re-send it, stored once
                            key = {"Idempotency-Key": f"{seed}-{uuid.uuid4().hex}"}
                            r = c.post(f"/users/{user}/interactions", headers={**auth, **key},
                                       json={"events": [{"item": rng.choice(items), "kind": "like"}]})  # fmt: skip
                        else:
                            r = c.get(f"/users/{user}/recommendations", params={"k": 10}, headers=auth)
                        ok, what = r.status_code < 400, "" if r.status_code < 400 else f"HTTP {r.status_code}"
                    except httpx.HTTPError as exc:
                        ok, what = False, type(exc).__name__
                    if ok and r.headers.get("x-metarec-resent"):  # the gateway re-sent it after a replica died
                        resent.append((start - t0, r.request.method, int(r.headers["x-metarec-resent"])))
                    log.append((start - t0, time.perf_counter() - start, ok, what))
                    if ok and r.request.method == "POST":
                        likes.append(1)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
        for th in threads:
            th.start()
        killed, replaced, dropped = None, None, False
        while time.perf_counter() - t0 < DURATION:
            now = time.perf_counter() - t0
            running = serve.status().applications["metarec"].deployments["metarec"].replica_states.get("RUNNING", 0)
            replicas.append((now, running))
            if killed is None and now >= KILL_AT:
                # a replica of the model deployment (the gateway in front of it only forwards)
                victims = [p for p in psutil.process_iter(["cmdline"])
                           if "ServeReplica:metarec:metarec" in " ".join(p.info["cmdline"] or [])]  # fmt: skip
                if victims:
                    victims[0].kill()
                    killed = now
                elif now > KILL_AT + 5:
                    raise SystemExit("no process of a metarec replica found to kill")
            elif killed is not None and running < 2:
                dropped = True  # the controller has seen the replica die
            elif dropped and replaced is None and running == 2:
                replaced = now
            time.sleep(0.5)
        stop.set()
        for th in threads:
            th.join()
        counter = create_engine(url)
        with counter.connect() as c:
            in_database = int(c.execute(text("SELECT count(*) FROM interactions")).scalar_one())
        counter.dispose()
    finally:
        serve.shutdown()
        ray.shutdown()
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    if not log:
        raise SystemExit("no request was answered: see Ray's log above")
    lat = np.array([x[1] for x in log]) * 1000
    failed = [x for x in log if not x[2]]
    kill_t = killed if killed is not None else float("nan")
    report = {
        "commit": os.environ.get("METAREC_GIT_COMMIT") or subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}", "train_seconds": train_seconds,
        "duration_s": DURATION, "threads": THREADS, "killed_at_s": killed, "replaced_at_s": replaced,
        "requests": len(log), "failed": len(failed),
        # by when a request ended: one sent just before the kill fails when its replica dies under it
        "failed_before_kill": sum(1 for x in failed if x[0] + x[1] < kill_t),
        "failed_after_kill": sum(1 for x in failed if x[0] + x[1] >= kill_t),
        "failed_requests": [{"sent_s": x[0], "seconds": x[1], "what": x[3]} for x in failed],
        "failures": sorted({x[3] for x in failed}),
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                       "p99": float(np.percentile(lat, 99)), "max": float(lat.max())},
        "requests_per_s": len(log) / DURATION, "replicas_running": replicas,
        "likes_answered": len(likes), "likes_in_database": in_database,
        "resent_by_gateway": [{"sent_s": t, "method": m, "times": n} for t, m, n in resent],
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_ray.json").write_text(json.dumps(report, indent=1))
    back = f"{replaced - killed:.1f} s" if killed is not None and replaced is not None else "not within the run"
    md = [
        "# Ray Serve: a replica killed under load (2 replicas, PostgreSQL, ml-100k MAML)", "",
        f"commit `{report['commit']}`, {report['machine']}; {THREADS} client threads for {DURATION:.0f} s on the "
        "same 2 cores; 80 % GET recommendations, 20 % POST a like", "",
        "| requests | failed | failed from the kill on | req/s | p50 ms | p95 ms | p99 ms | max ms | back to 2 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {len(log)} | {len(failed)} | {report['failed_after_kill']} | {report['requests_per_s']:.1f} | "
        f"{report['latency_ms']['p50']:.0f} | {report['latency_ms']['p95']:.0f} | {report['latency_ms']['p99']:.0f} | "
        f"{report['latency_ms']['max']:.0f} | {back} |", "",
        f"Killed at {kill_t:.1f} s. Failed requests (sent at, took, answer): "
        + ("; ".join(f"{f['sent_s']:.2f} s, {f['seconds'] * 1000:.0f} ms, {f['what']}"
                     for f in report["failed_requests"]) or "none") + ".",
        f"Likes answered 2xx: {len(likes)}; events in the database after the run: {in_database} "
        "(equal: no like lost or stored twice).",
        "Requests the gateway re-sent after their replica died (sent at, method): "
        + ("; ".join(f"{t:.2f} s, {m}" + (f" x{n}" if n > 1 else "") for t, m, n in resent) or "none") + ".", "",
    ]  # fmt: skip
    (RESULTS / "serve_ray.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
