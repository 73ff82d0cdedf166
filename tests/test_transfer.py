"""Transfer across catalogues (`init_from`, `metarec transfer`): what crosses over, what starts afresh,
that it carries knowledge, and the clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data.sources import synthetic
from metarec.data.splits import cold_user
from metarec.errors import ConfigError
from metarec.eval.evaluate import evaluate_task
from metarec.models import build_model
from metarec.models.io import load_model, save_model
from metarec.models.meta import MetaRecommender

FEATURES = {"text": {"template": "{title}. {description}"}, "id": {}}
SMALL = {"dim": 16, "item_features": FEATURES, "set_encoder": True}


@pytest.fixture(scope="module")
def source(tmp_path_factory, synth) -> tuple[MetaRecommender, Path]:
    """A meta model trained on one synthetic catalogue, saved."""
    model = build_model("meta", {**SMALL, "epochs": 8}).fit(synth)
    assert isinstance(model, MetaRecommender)
    return model, save_model(model, tmp_path_factory.mktemp("source") / "m", synth)


@pytest.fixture(scope="module")
def target():
    """Another catalogue: other items, other users, the same kind of text (topics named by words)."""
    return synthetic.make(n_users=200, n_items=150, seed=1)


def test_shared_weights_cross_over_and_catalogue_weights_start_afresh(source, target, tmp_path):
    src, path = source
    fitted = MetaRecommender(**SMALL, epochs=0, init_from=str(path)).fit(target)
    for key in ("item:text:proj", "item:text:bias", "user_init", "set_W", "set_kappa"):
        assert torch.equal(fitted.theta_[key], src.theta_[key]), key
    assert torch.equal(fitted.lrs_["u"], src.lrs_["u"])
    assert not fitted.theta_["item_res"].any()  # the source's text path speaks alone
    assert fitted.theta_["item_res"].shape[0] == target.n_items
    info = fitted.fit_info_["transfer"]
    assert set(info["fresh"]) == {"item_res", "item_bias"} and "item:text:proj" in info["copied"]
    assert fitted.fit_info_["best_epoch"] == -1 and fitted.fit_info_["epochs"] == 0  # the start, scored
    again, manifest = load_model(save_model(fitted, tmp_path / "t", target))  # a transferred model is a model
    assert manifest["params"]["init_from"] == str(path)
    assert np.allclose(again.item_vectors()[0], fitted.item_vectors()[0])


def test_the_transferred_start_carries_what_the_source_learned(source, target):
    """With no target training at all, the source's network adapts target cold users far better than the
    same untrained network started afresh (the planted topics are named by the same words in both)."""
    _, path = source
    fold = next(iter(cold_user(target, shots=[3], n_folds=3, valid_ratio=0.1, seed=0, folds=[0])))
    pop = np.bincount(fold.train.interactions["item"].to_numpy(), minlength=target.n_items)

    def ndcg(**params: object) -> float:
        model = MetaRecommender(**SMALL, epochs=0, **params).fit(fold.train, valid=fold.valid)  # type: ignore[arg-type]
        return float(np.nanmean(evaluate_task(model, fold.tasks[0], [10], ("ndcg",), pop).per_user["ndcg@10"]))

    transferred, fresh = ndcg(init_from=str(path)), ndcg()
    assert transferred > 1.2 * fresh, (transferred, fresh)


def test_mismatches_are_clear_errors(source, target, tmp_path):
    _, path = source
    with pytest.raises(ConfigError, match=r"shape .* give both the same dim"):
        MetaRecommender(**{**SMALL, "dim": 8}, epochs=0, init_from=str(path)).fit(target)
    pooled = {"text": {"template": "{title}. {description}", "text": {"encoder": "hf"}}, "id": {}}
    with pytest.raises(ConfigError, match="same language model"):
        MetaRecommender(**{**SMALL, "item_features": pooled}, epochs=0, init_from=str(path)).fit(target)
    with pytest.raises(ConfigError, match="objective"):
        MetaRecommender(**SMALL, objective="rating", epochs=0, init_from=str(path)).fit(target)
    # TF-IDF columns are each catalogue's own words: never copied, started afresh
    tfidf = {"text": {"template": "{title}", "text": {"encoder": "tfidf"}}, "id": {}}
    fitted = MetaRecommender(**{**SMALL, "item_features": tfidf}, epochs=0, init_from=str(path)).fit(target)
    assert "item:text:proj" in fitted.fit_info_["transfer"]["fresh"]
    pop = save_model(build_model("popularity").fit(target), tmp_path / "pop", target)
    with pytest.raises(ConfigError, match="transfer starts from a meta model"):
        MetaRecommender(**SMALL, epochs=0, init_from=str(pop)).fit(target)


def _target_toml(tmp_path: Path, protocol: str = "cold-user") -> Path:
    keys = "shots = [3]\nvalid_ratio = 0.1" if protocol == "cold-user" else ""
    cfg = tmp_path / "target.toml"
    cfg.write_text(f"""
name = "synthetic-b"
seed = 7
[dataset]
source = "synthetic"
n_users = 200
n_items = 150
seed = 1
[protocols.{protocol}]
n_folds = 2
{keys}
[evaluation]
ks = [10]
[models.popularity]
[models.maml]
type = "meta"
epochs = 4
dim = 16
set_encoder = true
item_features = {{ text = {{ template = "{{title}}. {{description}}" }}, id = {{}} }}
""")
    return cfg


def test_cli_transfer_scores_every_start_beside_target_only(source, tmp_path):
    _, path = source
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["transfer", "--source", str(path), "--target", str(_target_toml(tmp_path)),
                                   "--few-epochs", "2", "--runs-dir", str(runs)])  # fmt: skip
    assert res.exit_code == 0, res.output
    (run,) = runs.iterdir()
    results = json.loads((run / "results.json").read_text())["results"]
    cell = results["cold-user@3"]
    assert set(cell) == {"random", "popularity", "maml", "maml-zero", "maml-few2", "maml-full"}
    assert all("vs_maml" in cell[m] for m in ("maml-zero", "maml-few2", "maml-full"))  # paired with target-only
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["models"]["maml-zero"]["epochs"] == 0 and cfg["transfer"]["source"] == str(path.resolve())


def test_cli_transfer_needs_cold_users(source, tmp_path):
    _, path = source
    res = CliRunner().invoke(app, ["transfer", "--source", str(path), "--target",
                                   str(_target_toml(tmp_path, "cold-item"))])  # fmt: skip
    assert res.exit_code != 0 and "no cold-user protocol" in res.output and "Traceback" not in res.output
