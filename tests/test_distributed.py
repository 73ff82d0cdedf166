"""The Ray back-end against a real two-node Ray cluster on loopback (head + one worker node, 1 CPU each),
started here and stopped after, even when a test fails."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("CI"):
    import ray  # noqa: F401  # CI must exercise the Ray back-end: a missing install fails, never skips
else:
    pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """`ray start --head` plus a second `ray start --address`: two nodes, one CPU each."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    if not os.path.exists(ray_bin):
        ray_bin = shutil.which("ray") or "ray"
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--include-dashboard", "false", "--temp-dir", str(temp), *common],
                       check=True, env=env, capture_output=True, timeout=180)  # fmt: skip
        subprocess.run([ray_bin, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                       check=True, env=env, capture_output=True, timeout=180)  # fmt: skip
        yield address
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _cluster_nodes(address: str) -> int:
    import ray

    ray.init(address=address, logging_level="warning")
    try:
        return len([n for n in ray.nodes() if n["Alive"]])
    finally:
        ray.shutdown()


def test_cluster_has_two_nodes(ray_cluster):
    assert _cluster_nodes(ray_cluster) == 2


def test_distributed_evaluation_equals_local(ray_cluster):
    """Every per-user number of every cell, to the last bit (the units are seeded by fold alone)."""
    from metarec.config import load_config
    from metarec.eval.experiment import run_experiment

    sets = ["protocols.cold-user.n_folds=2", "protocols.cold-item.n_folds=2", "protocols.cold-both.n_folds=2"]
    local = run_experiment(load_config(ROOT / "configs/synthetic.toml", sets), progress=False)
    ray_sets = [*sets, 'distributed.backend="ray"', f'distributed.address="{ray_cluster}"']
    remote = run_experiment(load_config(ROOT / "configs/synthetic.toml", ray_sets), progress=False)
    assert list(local.cells) == list(remote.cells)
    compared = 0
    for key, cell in local.cells.items():
        other = remote.cells[key]
        assert cell.skipped == other.skipped
        for metric in cell.per_user:
            np.testing.assert_array_equal(cell.values(metric), other.values(metric), err_msg=f"{key} {metric}")
            compared += 1
        np.testing.assert_array_equal(np.concatenate(cell.users or [[]]), np.concatenate(other.users or [[]]))
    assert compared > 50
    assert _without_seconds(local.summary()) == _without_seconds(remote.summary())  # intervals, ratios too


def _without_seconds(summary: dict) -> dict:
    return {label: {m: {k: v for k, v in e.items() if k != "eval_seconds"} for m, e in row.items()}
            for label, row in summary.items()}  # fmt: skip


def test_ray_data_encoding_fills_the_shared_cache(ray_cluster, tmp_path, monkeypatch):
    """Texts go to an actor pool on the cluster; the vectors equal a local encode and land in the cache."""
    monkeypatch.setenv("METAREC_HOME", str(tmp_path))
    from metarec.distributed import ray_session
    from metarec.text.cache import EmbeddingCache
    from metarec.text.registry import encode_texts, get_encoder

    EmbeddingCache.forget()
    texts = [f"film number {i} about {w}" for i, w in enumerate(["space", "love", "war", "jazz"] * 10)]
    enc = get_encoder({"encoder": "sentence-transformers"})
    with ray_session({"backend": "ray", "address": ray_cluster, "num_workers": 2, "encode_batch_size": 8}):
        remote = encode_texts(enc, texts, "ray-test")
    assert remote.shape == (len(texts), enc.dim)
    local = enc.encode(texts)
    np.testing.assert_allclose(remote, local, atol=1e-5)
    assert len(EmbeddingCache(enc, "ray-test")) == len(set(texts))
    EmbeddingCache.forget()


def test_ray_data_reads_tables_like_the_local_reader(ray_cluster, tmp_path):
    """Inside a Ray session `tabular.load` reads with Ray Data (CSV cells stay text: ids keep leading zeros;
    a folder of Parquet or CSV parts is one table); the Dataset equals the local reader's."""
    import pandas as pd

    from metarec.data.sources import tabular
    from metarec.distributed import ray_session
    from metarec.errors import DataError

    rows = "".join(f"{u:03d},i{(u * 7 + j) % 50},{1000 + 10 * u + j}\n" for u in range(40) for j in range(5))
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n" + rows)
    frame = pd.read_csv(tmp_path / "i.csv", dtype=str)
    (tmp_path / "pq").mkdir()
    (tmp_path / "csv").mkdir()
    for j, part in enumerate([frame.iloc[:70], frame.iloc[70:140], frame.iloc[140:]]):
        part.to_parquet(tmp_path / "pq" / f"part-{j}.parquet")
        part.to_csv(tmp_path / "csv" / f"part-{j}.csv", index=False)
    frame.to_json(tmp_path / "i.jsonl", orient="records", lines=True)
    local = tabular.load(tmp_path / "i.csv")
    assert tabular.remote is None
    with ray_session({"backend": "ray", "address": ray_cluster, "num_workers": 2}):
        assert tabular.remote is not None
        for path in ("i.csv", "pq", "csv", "i.jsonl"):
            ds = tabular.load(tmp_path / path)
            assert ds.users["user_id"].tolist() == local.users["user_id"].tolist(), path  # "000", "001", ...
            pd.testing.assert_frame_equal(ds.interactions, local.interactions, obj=path)
        (tmp_path / "bad.csv").write_bytes(b"user_id,item_id\n1,\xff\xfe\n")
        with pytest.raises(DataError, match=r"bad\.csv: Ray Data cannot read it"):
            tabular.load(tmp_path / "bad.csv")
    assert tabular.remote is None


def test_ray_backend_config_errors():
    from metarec.config import load_config
    from metarec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"distributed\.backend"):
        load_config(ROOT / "configs/synthetic.toml", ['distributed.backend="spark"'])
    with pytest.raises(ConfigError, match="num_workers"):
        load_config(ROOT / "configs/synthetic.toml", ["distributed.num_workers=0"])
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(ROOT / "configs/synthetic.toml", ["distributed.num_worker=2"])


SEARCH = """
[search]
model = "maml"
protocol = "cold-user"
trials = 4
grace_period = 1
[search.space]
inner_lr = { type = "loguniform", low = 0.01, high = 1.0 }
dim = { type = "choice", values = [8, 16] }
"""


def test_tune_searches_on_valid_users_and_reports_default_beside_chosen(ray_cluster, tmp_path):
    """`metarec tune`: Optuna + ASHA trials on the cluster, the trial table, the chosen config (which loads),
    then one test run with the default and the chosen model on the same users."""
    from typer.testing import CliRunner

    from metarec.cli import app
    from metarec.config import load_config

    text = (ROOT / "configs/synthetic.toml").read_text()
    text = text.replace("[protocols.cold-user]\nshots = [1, 5, 10]\nn_folds = 3",
                        "[protocols.cold-user]\nshots = [5]\nn_folds = 2\nvalid_ratio = 0.2")  # fmt: skip
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + f'\n[distributed]\naddress = "{ray_cluster}"\n' + SEARCH)
    res = CliRunner().invoke(app, ["tune", "-c", str(cfg), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    import json

    log = json.loads((tmp_path / "out" / "search.json").read_text())
    scored = [r for r in log["trials"] if "valid_ndcg@10" in r]
    assert len(log["trials"]) == 4 and len(scored) >= 3
    assert log["best"] == max(scored, key=lambda r: r["valid_ndcg@10"])["params"]
    assert all(0.01 <= r["params"]["inner_lr"] <= 1.0 and r["params"]["dim"] in (8, 16) for r in scored)
    chosen = load_config(tmp_path / "out" / "synthetic-tuned.toml")
    assert chosen["models"]["maml-tuned"]["dim"] == log["best"]["dim"]
    runs = [p for p in (tmp_path / "out").iterdir() if p.is_dir() and p.name.startswith("synthetic-tuned")]
    summary = json.loads((runs[0] / "results.json").read_text())["results"]
    assert {"maml", "maml-tuned", "popularity"} <= set(summary["cold-user@5"])
    assert "vs_maml" in summary["cold-user@5"]["maml-tuned"]  # paired with the default on the same users


def test_tune_needs_a_search_table_and_valid_users(tmp_path):
    from typer.testing import CliRunner

    from metarec.cli import app

    res = CliRunner().invoke(app, ["tune", "-c", str(ROOT / "configs/synthetic.toml")])
    assert res.exit_code == 2 and "no [search] table" in res.output
    cfg = tmp_path / "c.toml"
    cfg.write_text((ROOT / "configs/synthetic.toml").read_text() + SEARCH.replace('"cold-user"', '"warm"'))
    res = CliRunner().invoke(app, ["tune", "-c", str(cfg)])
    assert res.exit_code == 2 and "no validation users" in res.output
    cfg.write_text((ROOT / "configs/synthetic.toml").read_text() + SEARCH.replace("low = 0.01", "low = 0"))
    res = CliRunner().invoke(app, ["tune", "-c", str(cfg)])
    assert res.exit_code == 2 and "low > 0" in res.output


def test_ray_train_two_workers_matches_local_training(ray_cluster, tmp_path):
    """`metarec train` with the Ray back-end: 2 gloo workers, each on half of every meta-batch, gradients
    all-reduced. The result is the local training's, up to float summation order (and Adam's amplification)."""
    from typer.testing import CliRunner

    from metarec.cli import app
    from metarec.models.io import load_model

    cfg = ROOT / "configs/synthetic.toml"
    res = CliRunner().invoke(app, ["train", "-c", str(cfg), "--model", "maml", "--out", str(tmp_path / "local")])
    assert res.exit_code == 0, res.output
    sets = ["--set", 'distributed.backend="ray"', "--set", f'distributed.address="{ray_cluster}"']
    res = CliRunner().invoke(app, ["train", "-c", str(cfg), "--model", "maml", "--out", str(tmp_path / "ray"), *sets])
    assert res.exit_code == 0, res.output
    local, info_l = load_model(tmp_path / "local")
    remote, info_r = load_model(tmp_path / "ray")
    assert (tmp_path / "ray_train").exists()  # Ray Train's run folder with the reported checkpoints
    assert info_r["metrics"]["epochs"] == info_l["metrics"]["epochs"]
    assert abs(info_r["metrics"]["best_valid_ndcg@10"] - info_l["metrics"]["best_valid_ndcg@10"]) < 0.02
    # not bit-equal: the all-reduce sums in another order, and Adam's normalised steps carry such differences
    # on near-zero weights (biases) over epochs; the learned weights stay the same weights
    for name, value in local.theta_.items():
        a, b = remote.theta_[name].numpy().ravel(), value.numpy().ravel()
        assert np.linalg.norm(a - b) <= 0.25 * np.linalg.norm(b) + 1e-6, (
            name,
            np.linalg.norm(a - b) / np.linalg.norm(b),
        )


def test_ray_train_resumes_from_the_last_checkpoint_when_a_worker_is_killed(ray_cluster, tmp_path):
    """A Ray Train worker is killed (SIGKILL) once checkpoints are reported: Ray restarts the worker
    group, every worker loads the last checkpoint and training goes on from the epoch after it."""
    import threading
    import time

    import psutil

    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.distributed import ray_session
    from metarec.distributed.train import train_distributed
    from metarec.models.io import load_model

    epochs = 40
    cfg = load_config(ROOT / "configs/synthetic.toml", [f"models.maml.epochs={epochs}", "models.maml.patience=1000"])
    ds = load_dataset(cfg["dataset"])
    out, outcome = tmp_path / "model", {}

    def run() -> None:
        try:
            with ray_session({"backend": "ray", "address": ray_cluster, "num_workers": 2}) as session:
                outcome["result"] = train_distributed(cfg, "maml", ds, session, out, max_failures=1)
        except BaseException as exc:  # re-raised in the test's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed, first = None, 0.0
    deadline = time.time() + 300
    while thread.is_alive() and killed is None and time.time() < deadline:
        # a checkpoint on disk is not yet Ray Train's: its controller registers reports when it next polls
        # the workers (about every second), so the kill waits a few seconds after the first one
        first = first or (time.time() if any((tmp_path / "ray_train").rglob("checkpoint.safetensors")) else 0.0)
        if first and time.time() > first + 3:
            workers = [
                p for p in psutil.process_iter(["cmdline"]) if "RayTrainWorker" in " ".join(p.info["cmdline"] or [])
            ]
            if workers:
                killed = workers[-1].pid
                workers[-1].kill()
        time.sleep(0.05)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "training ended before a worker could be killed"
    _, manifest = load_model(out)
    history = manifest["metrics"]["history"]
    assert history[-1]["epoch"] == epochs - 1
    assert history[0]["epoch"] > 0, "the restarted group started from epoch 0, not from the checkpoint"
    assert manifest["metrics"]["epochs"] < epochs


def test_ray_serve_two_replicas_on_postgresql(ray_cluster, artifact, tmp_path):
    """The service as a Ray Serve deployment with 2 replicas over one PostgreSQL database: what one replica
    writes (a new item, a user's likes) every replica serves at once."""
    pg = os.environ.get("METAREC_TEST_PG_URL")
    if not pg:
        pytest.skip("METAREC_TEST_PG_URL not set (.ci/run starts PostgreSQL and sets it)")
    import uuid

    import httpx
    import ray
    from ray import serve
    from sqlalchemy import create_engine, text

    from metarec.distributed import serve as ray_serve

    name = f"metarec_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    url = pg.rsplit("/", 1)[0] + "/" + name
    port = _free_port()
    auth = {"Authorization": "Bearer t0ken"}
    ray.init(address=ray_cluster, logging_level="warning")
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_serve.deployment(artifact, url, replicas=2, app_kwargs={"token": "t0ken"}),
                  name="metarec", route_prefix="/")  # fmt: skip
        status = serve.status().applications["metarec"].deployments["metarec"]
        assert status.replica_states.get("RUNNING") == 2
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            assert c.get("/health").json()["database"] == "postgresql"
            assert c.post("/users", json={"id": "ann"}, headers=auth).status_code == 201
            item = {"id": "new-1", "title": "Rocket Galaxy Orbit", "text": "A tale of space, alien and planet."}
            assert c.post("/items", json={"items": [item]}, headers=auth).status_code == 201
            for _ in range(8):  # requests spread over both replicas: each finds the item another one added
                assert c.get("/items", params={"query": "rocket galaxy orbit", "k": 3}).json()[0]["id"] == "new-1"
            liked = ["i0", "i1", "i2"]
            r = c.post("/users/ann/interactions", json={"events": [{"item": i, "kind": "like"} for i in liked]},
                       headers=auth)  # fmt: skip
            assert r.status_code == 201
            lists = {tuple(x["id"] for x in c.get("/users/ann/recommendations?k=10", headers=auth).json())
                     for _ in range(8)}  # fmt: skip
            assert len(lists) == 1 and not set(next(iter(lists))) & set(liked)  # same adapted state everywhere
            assert c.post("/users", json={"id": "ann"}, headers=auth).status_code == 409  # 4xx, not 5xx
    finally:
        serve.shutdown()
        ray.shutdown()
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _scope(method: str, raw_path: bytes, headers: dict[str, str], query: bytes = b"") -> dict:
    """An HTTP scope as a server (uvicorn, Ray Serve's proxy) hands it over: path decoded, raw_path kept."""
    from urllib.parse import unquote

    raw_headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path,
            "query_string": query, "headers": raw_headers, "scheme": "http", "server": ("svc", 80),
            "client": ("c", 1), "root_path": "", "http_version": "1.1"}  # fmt: skip


def _through_gateway(gateway, scope: dict, body: bytes = b""):
    import asyncio

    from starlette.requests import Request

    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    return asyncio.run(gateway(Request(scope, receive)))


def _dying_gateway(fail: int, token: str | None = None):
    """A `Gateway` whose replica handle dies `fail` times, then answers 201; `sent` lists what it forwarded."""
    from ray.exceptions import ActorDiedError

    from metarec.distributed.serve import Gateway

    sent: list[tuple] = []

    class Handle:
        def remote(self, scope, body):
            sent.append((scope, body))

            async def answer():
                if len(sent) <= fail:
                    raise ActorDiedError()
                return 201, [(b"content-type", b"application/json")], b'{"stored": 1}'

            return answer()

    class App:
        handle = Handle()

    return Gateway(App(), max_body=64, token=token), sent


def test_gateway_resends_only_safe_requests_when_a_replica_dies():
    """A replica dying under a request: reads and keyed POSTs go again (to a live replica), other writes
    answer 503 (the client cannot know whether they were stored); writes without the token and bodies over
    the limit are refused before the body is read; the scope goes on unchanged."""
    auth = {"Authorization": "Bearer t"}
    for method, headers, fail, want in (("GET", {}, 0, (201, 1)), ("GET", {}, 2, (201, 3)),
                                        ("POST", {**auth, "Idempotency-Key": "k1"}, 1, (201, 2)),
                                        ("POST", auth, 1, (503, 1)), ("GET", {}, 10, (503, 4))):  # fmt: skip
        gateway, sent = _dying_gateway(fail, token="t")
        scope = _scope(method, b"/users/a%3Fb/interactions", headers, b"k=3")
        r = _through_gateway(gateway, scope, b"{}")
        assert (r.status_code, len(sent)) == want, (method, headers, fail)
        assert all(got == {k: scope[k] for k in got} and got["raw_path"] == scope["raw_path"] and body == b"{}"
                   for got, body in sent)  # fmt: skip
        assert r.headers.get("x-metarec-resent") == (str(len(sent) - 1) if r.status_code == 201 and len(sent) > 1
                                                     else None)  # fmt: skip
        if r.status_code == 503:
            assert b"Idempotency-Key" in r.body or method == "GET"
    for headers, body, status in (({}, b"{}", 401), ({**auth, "Content-Length": "65"}, b"x" * 65, 413),
                                  (auth, b"x" * 65, 413)):  # fmt: skip
        gateway, sent = _dying_gateway(0, token="t")
        assert _through_gateway(gateway, _scope("POST", b"/users", headers), body).status_code == status
        assert not sent  # never forwarded


def test_gateway_and_replica_keep_odd_user_ids_whole(artifact, tmp_path):
    """Ids with ?, #, % and .. travel as raw bytes through Gateway -> AppReplica (in-process, no Ray): the
    DELETE of user 'a?b' deletes that user, never user 'a'; the Host header survives (redirects)."""
    import json

    from metarec.distributed.serve import AppReplica, Gateway
    from metarec.serve.app import create_app

    replica = AppReplica(lambda: create_app(artifact, f"sqlite:///{tmp_path / 'svc.db'}", token="t"))

    class App:
        class handle:  # the shape of a Ray Serve handle
            @staticmethod
            def remote(scope, body):
                return replica.handle(scope, body)

    gateway = Gateway(App(), max_body=1 << 20, token="t")
    auth = {"Authorization": "Bearer t", "Content-Type": "application/json", "Host": "shop.example"}
    ids = {"a": b"a", "a?b": b"a%3Fb", "a#b": b"a%23b", "x%41": b"x%2541", "..": b"%2E%2E"}
    for uid in ids:
        r = _through_gateway(gateway, _scope("POST", b"/users", auth), json.dumps({"id": uid}).encode())
        assert r.status_code == 201, (uid, r.body)
    for uid, raw in ids.items():
        r = _through_gateway(gateway, _scope("GET", b"/users/" + raw, auth))
        assert r.status_code == 200 and json.loads(r.body)["id"] == uid, (uid, r.body)
    assert _through_gateway(gateway, _scope("DELETE", b"/users/a%3Fb", auth)).status_code == 200
    assert _through_gateway(gateway, _scope("GET", b"/users/a%3Fb", auth)).status_code == 404
    assert _through_gateway(gateway, _scope("GET", b"/users/a", auth)).status_code == 200  # untouched
    r = _through_gateway(
        gateway,
        _scope("GET", b"/users/a/recommendations/", auth),
    )
    assert r.status_code == 307 and r.headers["location"].startswith("http://shop.example/")


def test_serve_refuses_replicas_on_sqlite(artifact, tmp_path):
    from typer.testing import CliRunner

    from metarec.cli import app

    res = CliRunner().invoke(app, ["serve", "--artifact", str(artifact), "--replicas", "2"])
    assert res.exit_code == 2 and "PostgreSQL" in res.output


def test_replica_bounds_are_checked_before_ray_starts():
    from metarec.distributed.serve import check_replicas
    from metarec.errors import ConfigError

    pg = "postgresql+psycopg://u:p@h/db"
    check_replicas(pg, 2, None)
    check_replicas(pg, 1, 4, 0)  # scale to zero is Ray Serve's to allow
    for args, message in (((pg, 0, None), "--replicas must be >= 1"), ((pg, 1, 2, 3), "min-replicas <= --max"),
                          ((pg, 1, 0, None), "--max-replicas must be >= 1")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            check_replicas(*args)
