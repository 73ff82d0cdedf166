"""MLflow tracking: evaluate and train runs are read back from the tracking store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from metarec.cli import app

pytest.importorskip("mlflow")
runner = CliRunner()

CONFIG = """
name = "tracked"
seed = 3
[dataset]
source = "synthetic"
n_users = 120
n_items = 80
seed = 0
[protocols.cold-user]
shots = [5]
n_folds = 2
[evaluation]
ks = [10]
[models.popularity]
[models.maml]
type = "meta"
epochs = 3
dim = 8
item_features = { id = {} }
"""


def test_evaluate_and_train_are_logged_to_mlflow(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    res = runner.invoke(app, ["evaluate", "-c", "c.toml", "--quiet", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert "tracked in MLflow run" in res.output
    res = runner.invoke(app, ["train", "-c", "c.toml", "--model", "maml", "--out", "m", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tracked"], output_format="list")
    by_kind = {r.data.tags["metarec.kind"]: r for r in runs}
    assert set(by_kind) == {"evaluate", "train"}
    ev = by_kind["evaluate"]
    assert ev.data.params["models.maml.epochs"] == "3"
    assert ev.data.params["seed"] == "3"
    ndcg = ev.data.metrics["cold-user_at_5/maml/ndcg_at_10"]
    assert 0.0 <= ndcg <= 1.0
    assert ev.data.metrics["cold-user_at_5/popularity/ndcg_at_10"] != ndcg
    files = {f.path for f in mlflow.artifacts.list_artifacts(run_id=ev.info.run_id)}
    assert {"results.json", "results.md", "config.json"} <= files
    tr = by_kind["train"]
    assert tr.data.metrics["epochs"] == 3
    curve = mlflow.MlflowClient().get_metric_history(tr.info.run_id, "valid_ndcg_at_10")
    assert [m.step for m in curve] == [0, 1, 2]  # the training curve, one point per epoch
    assert "manifest.json" in {f.path for f in mlflow.artifacts.list_artifacts(run_id=tr.info.run_id)}


def test_no_tracking_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)
    res = runner.invoke(app, ["evaluate", "-c", "c.toml", "--quiet"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "mlruns").exists()


def test_train_writes_tensorboard_scalars_per_epoch(tmp_path, monkeypatch):
    """`--tensorboard DIR`: every epoch's loss and meta-valid NDCG@10 as scalars, read back with
    TensorBoard's own event reader; a model without epochs is refused."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "-c", "c.toml", "--model", "maml", "--out", "m", "--tensorboard", "tb"])
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "tb").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "valid_ndcg@10"} <= set(tags), tags
    epochs = json.loads((tmp_path / "m" / "manifest.json").read_text())["metrics"]["epochs"]
    steps = [e.step for e in events.Scalars("valid_ndcg@10")]
    assert steps == list(range(epochs))
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("valid_ndcg@10"))
    res = runner.invoke(app, ["train", "-c", "c.toml", "--model", "popularity", "--out", "p", "--tensorboard", "tb"])
    assert res.exit_code != 0 and "has none: drop --tensorboard" in res.output
