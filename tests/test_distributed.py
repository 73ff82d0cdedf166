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


def test_ray_backend_config_errors():
    from metarec.config import load_config
    from metarec.errors import ConfigError

    with pytest.raises(ConfigError, match="distributed.backend"):
        load_config(ROOT / "configs/synthetic.toml", ['distributed.backend="spark"'])
    with pytest.raises(ConfigError, match="num_workers"):
        load_config(ROOT / "configs/synthetic.toml", ["distributed.num_workers=0"])
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(ROOT / "configs/synthetic.toml", ["distributed.num_worker=2"])
