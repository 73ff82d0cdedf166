"""Typed configs: typos name the key, its table and the nearest valid key; --set goes through the same checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.config import (
    ExperimentConfig,
    apply_overrides,
    load_config,
    parse_config,
    parse_override,
    validate_config,
)
from metarec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.toml"))
runner = CliRunner()

MINIMAL = """
[dataset]
source = "synthetic"
n_users = 50

[protocols.warm]
test_ratio = 0.2

[protocols.cold-user]
shots = [1, 3]
n_folds = 2

[models.popularity]
[models.maml]
type = "meta"
epochs = 3
"""


def _write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), overrides)
    return str(info.value)


def test_model_key_typo_names_key_table_and_suggestion(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("epochs = 3", "epohcs = 3"))
    assert "epohcs" in msg and "models.maml" in msg and "'epochs'" in msg
    assert msg.startswith(str(tmp_path / "exp.toml"))


def test_protocol_and_evaluation_typos(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("n_folds = 2", "n_fold = 2"))
    assert "protocols.cold-user" in msg and "n_fold" in msg and "'n_folds'" in msg
    # the runner passes seed to split functions: a config may not
    msg = _error(tmp_path, MINIMAL.replace("test_ratio = 0.2", "seed = 1"))
    assert "protocols.warm" in msg and "'seed'" in msg
    msg = _error(tmp_path, MINIMAL + "\n[evaluation]\nks = [10]\nmain_metrc = 'ndcg@10'\n")
    assert "evaluation" in msg and "main_metrc" in msg and "'main_metric'" in msg
    msg = _error(tmp_path, MINIMAL + "\n[evaluation]\nks = [0, 10]\n")
    assert "evaluation.ks[0]" in msg and "greater than or equal to 1" in msg


def test_wrong_types_name_the_key_path(tmp_path):
    msg = _error(tmp_path, MINIMAL.replace("epochs = 3", 'epochs = "three"'))
    assert "models.maml.epochs" in msg and "integer" in msg and "'three'" in msg
    msg = _error(tmp_path, MINIMAL + '\n[text]\nencoder = "hf"\npooling = "attention"\n')
    assert "text.pooling" in msg and "'attention'" in msg


def test_unknown_model_protocol_source_and_missing_tables(tmp_path):
    assert "unknown model 'mta'" in _error(tmp_path, MINIMAL.replace('type = "meta"', 'type = "mta"'))
    msg = _error(tmp_path, MINIMAL.replace("[protocols.warm]", '[protocols.warm]\ntype = "hot"'))
    assert "protocols.warm.type" in msg and "unknown protocol 'hot'" in msg
    msg = _error(tmp_path, MINIMAL.replace('source = "synthetic"', 'source = "movielen"'))
    assert "dataset.source" in msg and "'movielens'" in msg
    msg = _error(tmp_path, MINIMAL.replace("n_users = 50", "n_user = 50"))
    assert "dataset" in msg and "'n_users'" in msg
    msg = _error(tmp_path, '[dataset]\nsource = "synthetic"\n')
    assert "protocols" in msg and "models" in msg
    assert "dataset" in _error(tmp_path, "[protocols.warm]\n[models.random]\n")


def test_resolved_config_is_a_plain_dict_of_the_same_shape(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert type(cfg) is dict and cfg["name"] == "exp" and cfg["seed"] == 42
    assert cfg["text"] == {"encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2"}
    assert cfg["evaluation"]["ks"] == [5, 10, 20] and cfg["evaluation"]["compare_to"] == "popularity"
    # model and protocol tables keep exactly the keys the file set: models apply their own defaults
    assert cfg["models"] == {"popularity": {}, "maml": {"type": "meta", "epochs": 3}}
    assert cfg["protocols"]["cold-user"] == {"shots": [1, 3], "n_folds": 2}
    assert cfg["dataset"] == {"source": "synthetic", "n_users": 50}
    typed = parse_config(cfg)
    assert isinstance(typed, ExperimentConfig) and typed.evaluation.main_metric == "ndcg@10"
    assert validate_config(cfg) == cfg  # resolving is idempotent


def test_set_overrides_reach_the_resolved_config(tmp_path):
    path = _write(tmp_path, MINIMAL)
    cfg = load_config(
        path,
        [
            "model.maml.epochs=10",
            "models.maml.algorithm=fomaml",  # a bare word is a string
            "evaluation.ks=[1, 3]",
            "protocols.cold-user.support='random'",
            "models.maml.text={encoder = 'tfidf'}",
            "seed=7",
        ],
    )
    assert cfg["models"]["maml"] == {"type": "meta", "epochs": 10, "algorithm": "fomaml", "text": {"encoder": "tfidf"}}
    assert cfg["evaluation"]["ks"] == [1, 3] and cfg["seed"] == 7
    assert cfg["protocols"]["cold-user"]["support"] == "random"
    assert parse_override("name=hello world") == (("name",), "hello world")
    assert parse_override('models."a.b".x = 0.5') == (("models", "a.b", "x"), 0.5)
    assert load_config(path, {"models": {"maml": {"epochs": 4}}})["models"]["maml"]["epochs"] == 4


def test_set_typos_fail_with_a_suggestion(tmp_path):
    msg = _error(tmp_path, MINIMAL, ["models.maml.epohcs=10"])
    assert "epohcs" in msg and "models.maml" in msg and "'epochs'" in msg
    msg = _error(tmp_path, MINIMAL, ["models.mamll.epochs=10"])
    assert "models.mamll" in msg and "'maml'" in msg
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["models.maml.epochs"])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg["models"] and cfg["protocols"] and cfg["dataset"]["source"]


def test_cli_config_show(tmp_path):
    path = _write(tmp_path, MINIMAL)
    res = runner.invoke(app, ["config", "show", "-c", str(path), "--set", "models.maml.epochs=9"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert shown["models"]["maml"]["epochs"] == 9 and shown["evaluation"]["main_metric"] == "ndcg@10"
    res = runner.invoke(app, ["config", "show", "-c", str(path), "--set", "models.maml.epohcs=9"])
    assert res.exit_code == 2 and "epohcs" in res.output and "'epochs'" in res.output
    res = runner.invoke(app, ["evaluate", "-c", str(path), "--set", "evaluation.kss=[5]"])
    assert res.exit_code == 2 and "'ks'" in res.output


def test_nested_feature_source_tables_are_checked_at_load(tmp_path):
    """The meta model's feature-source tables are validated by the model's own checks, at load time."""
    msg = _error(tmp_path, MINIMAL + '[models.maml.item_features]\ntext = { templte = "{title}" }\n')
    assert "models.maml" in msg and "templte" in msg and "did you mean 'template'" in msg
    msg = _error(tmp_path, MINIMAL + "[models.maml.item_features]\ntxt = {}\n")
    assert "unknown source type 'txt'" in msg
    ok = load_config(_write(tmp_path, MINIMAL + '[models.maml.item_features]\ntext = { template = "{title}" }\n'))
    assert ok["models"]["maml"]["item_features"] == {"text": {"template": "{title}"}}
