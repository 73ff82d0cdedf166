"""The CLI end to end: a real experiment writes its run folder; bad input is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.config import load_config
from metarec.data.sources import synthetic
from metarec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _evaluated(cfg: Path, runs: Path) -> dict:
    """`metarec evaluate` of `cfg`, which must succeed; the results of its one run in `runs`."""
    res = runner.invoke(app, ["evaluate", "-c", str(cfg), "--runs-dir", str(runs), "--quiet"])
    assert res.exit_code == 0, res.output
    (run,) = runs.iterdir()
    return json.loads((run / "results.json").read_text())["results"]


runner = CliRunner()


def test_evaluate_synthetic_writes_run(tmp_path):
    res = runner.invoke(
        app, ["evaluate", "-c", str(ROOT / "configs/synthetic.toml"), "--runs-dir", str(tmp_path), "--quiet"]
    )
    assert res.exit_code == 0, res.output
    # --quiet still shows one line per fitted model with elapsed time and ETA (a long run never looks hung)
    assert "warm fold 0 maml:" in res.output and "ETA" in res.output
    (run,) = tmp_path.iterdir()
    for f in ("config.json", "config.toml", "versions.json", "results.json", "results.md", "ndcg_vs_k.png"):
        assert (run / f).stat().st_size > 0, f
    out = json.loads((run / "results.json").read_text())
    res_ = out["results"]
    assert set(res_) == {"warm", "cold-user@1", "cold-user@5", "cold-user@10", "cold-item", "cold-both@5"}
    assert res_["cold-item"]["als"]["skipped"]
    warm = res_["warm"]
    assert warm["als"]["metrics"]["ndcg@10"]["mean"] > warm["random"]["metrics"]["ndcg@10"]["mean"]
    # every model is scored on the very same users in a cell, and compared pairwise
    assert len({e["n_users"] for e in res_["cold-user@5"].values()}) == 1
    assert "vs_popularity" in res_["cold-user@5"]["als"]
    assert out["peak_memory_mb"] > 0 and out["timings_seconds"]["total"] > 0
    assert "| model |" in (run / "results.md").read_text()


def test_evaluate_is_reproducible(tmp_path):
    outs = []
    for sub in ("a", "b"):
        res = runner.invoke(
            app,
            [
                "evaluate",
                "-c",
                str(ROOT / "configs/synthetic.toml"),
                "--runs-dir",
                str(tmp_path / sub),
                "--quiet",
                "--folds",
                "0",
            ],
        )
        assert res.exit_code == 0, res.output
        (run,) = (tmp_path / sub).iterdir()
        outs.append(json.loads((run / "results.json").read_text())["results"])
    strip = lambda r: {lab: {m: e.get("metrics") for m, e in c.items()} for lab, c in r.items()}  # noqa: E731
    assert strip(outs[0]) == strip(outs[1])


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[dataset]\nsource = "synthetic"\n[protocols.warm]\n[models.random]\n[evaluaton]\nks=[1]\n')
    res = runner.invoke(app, ["evaluate", "-c", str(bad)])
    assert res.exit_code == 2 and "evaluaton" in res.output
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad.write_text('[dataset]\nsource = "synthetic"\n[protocols.warm]\n[models.magic]\n')
    res = runner.invoke(app, ["evaluate", "-c", str(bad)])
    assert res.exit_code == 2 and "unknown model" in res.output


def test_data_info_synthetic_and_errors():
    res = runner.invoke(app, ["data", "info", "synthetic"])
    assert res.exit_code == 0 and '"users": 300' in res.output
    res = runner.invoke(app, ["data", "info", "amazon"])
    assert res.exit_code == 2 and "--path" in res.output


@pytest.mark.slow
def test_data_fetch_ml100k():
    res = runner.invoke(app, ["data", "fetch", "ml-100k"])
    assert res.exit_code == 0, res.output
    assert "100,000 ratings" in res.output and "knowledge graph" in res.output


def test_train_writes_an_artifact_that_evaluate_and_python_load(tmp_path):
    out = tmp_path / "model"
    res = runner.invoke(
        app, ["train", "-c", str(ROOT / "configs/synthetic.toml"), "--model", "maml", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "best meta-valid NDCG@10" in res.output
    assert (out / "model.safetensors").exists() and not list(out.glob("*.pkl"))
    # scoring the artefact on users it trained on is refused (it would be a test leak) ...
    cfg = tmp_path / "eval.toml"
    cfg.write_text(
        '[dataset]\nsource = "synthetic"\nn_users = 300\nn_items = 200\nseed = 0\n'
        "[protocols.warm]\n[models.popularity]\n"
        f'[models.trained]\ntype = "meta"\nartifact = "{out}"\n'
    )
    res = runner.invoke(app, ["evaluate", "-c", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert res.exit_code == 2 and "scores there would be inflated" in " ".join(res.output.split()), res.output
    # ... and on new users of the same catalogue (same planted structure) it is scored and beats chance
    ds = synthetic.make(n_users=300, n_items=200, seed=0)
    fresh = synthetic.make(n_users=500, n_items=200, seed=0)
    assert fresh.items.equals(ds.items)  # the catalogue does not depend on the number of users
    inter = fresh.interactions.assign(
        user_id="new-" + fresh.users["user_id"].to_numpy()[fresh.interactions["user"]],
        item_id=fresh.items["item_id"].to_numpy()[fresh.interactions["item"]],
    )
    inter[["user_id", "item_id", "rating", "timestamp"]].to_csv(tmp_path / "new.csv", index=False)
    fresh.items.to_csv(tmp_path / "items.csv", index=False)
    cfg.write_text(
        f'[dataset]\nsource = "csv"\ninteractions = "{tmp_path / "new.csv"}"\nitems = "{tmp_path / "items.csv"}"\n'
        "[protocols.cold-user]\nshots = [5]\nn_folds = 2\n[evaluation]\nks = [10]\n"
        f'[models.random]\n[models.trained]\ntype = "meta"\nartifact = "{out}"\n'
    )
    scores = _evaluated(cfg, tmp_path / "runs")["cold-user@5"]
    ndcg = {m: scores[m]["metrics"]["ndcg@10"]["mean"] for m in ("trained", "random")}
    assert ndcg["trained"] > 2 * ndcg["random"], ndcg
    # any registered model is an artefact; a one-off recommendation reads it back
    als = tmp_path / "als"
    res = runner.invoke(app, ["train", "-c", str(ROOT / "configs/synthetic.toml"), "--model", "als", "--out", str(als)])
    assert res.exit_code == 0 and "trained als (als)" in res.output, res.output
    res = runner.invoke(app, ["recommend", "--artifact", str(als), "--user", "u3", "--k", "3"])
    assert res.exit_code == 0 and res.output.count("(i") == 3, res.output
    res = runner.invoke(app, ["train", "-c", str(ROOT / "configs/synthetic.toml"), "--model", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


def test_train_checkpoints_and_resumes(tmp_path):
    ckpt = tmp_path / "ckpt"
    base = ["train", "-c", str(ROOT / "configs/synthetic.toml"), "--model", "maml", "--checkpoint-dir", str(ckpt)]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--set", "models.maml.epochs=2"])
    assert res.exit_code == 0 and ", 2 epochs" in res.output, res.output
    assert json.loads((ckpt / "checkpoint.json").read_text())["epoch"] == 1
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--set", "models.maml.epochs=4", "--resume"])
    assert res.exit_code == 0 and ", 2 epochs" in res.output, res.output  # epochs 2 and 3 only
    assert json.loads((ckpt / "checkpoint.json").read_text())["epoch"] == 3
    res = runner.invoke(app, ["train", "-c", str(ROOT / "configs/synthetic.toml"), "--model", "als", "--resume"])
    assert res.exit_code == 2 and "neural" in res.output


def test_embed_reads_a_csv_item_file(tmp_path):
    """Regression (issue 10, item 14): `embed csv` had no --items, so its template found no titles."""
    (tmp_path / "i.csv").write_text("uid,sku\n1,a\n1,b\n2,a\n")
    (tmp_path / "items.csv").write_text("sku,name\na,Red Guitar Strings\nb,Blue Drum Sticks\n")
    res = runner.invoke(app, ["embed", "csv", "--path", str(tmp_path / "i.csv"), "--items", str(tmp_path / "items.csv"),
                              "--column", "user=uid", "--column", "item=sku", "--template", "{name}",
                              "--encoder", "tfidf", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "items: 2 texts" in res.output


def test_query_set_protocol_runs_from_an_exported_csv_split(tmp_path):
    """`data split` writes the protocol as columns; `predefined` reads them back from a CSV."""
    out = tmp_path / "qs.csv"
    res = runner.invoke(app, ["data", "split", "synthetic", "--out", str(out), "--seeds", "2"])
    assert res.exit_code == 0, res.output
    head = out.read_text().splitlines()[0].split(",")
    assert {"split_0", "role_0", "split_1", "role_1", "rating"} <= set(head)
    users = (tmp_path / "qs_users.csv").read_text()
    assert "age" in users.splitlines()[0]
    cfg = tmp_path / "qs.toml"
    cfg.write_text(
        f'[dataset]\nsource = "csv"\ninteractions = "{out}"\nitems = "{tmp_path / "qs_items.csv"}"\n'
        f'users = "{tmp_path / "qs_users.csv"}"\n'
        '[protocols.predefined]\ncolumn = ["split_0", "split_1"]\nrole = ["role_0", "role_1"]\n'
        'rank_within = "query"\nlabel_threshold = 4\n'
        '[evaluation]\nks = [5]\nmetrics = ["ndcg"]\nmain_metric = "ndcg@5"\nreport_metrics = ["ndcg@5"]\n'
        'compare_to = "random"\n[models.random]\n[models.itemmean]\n'
    )
    cells = _evaluated(cfg, tmp_path / "runs")["predefined"]
    ndcg = {m: cells[m]["metrics"]["ndcg@5"]["mean"] for m in ("random", "itemmean")}
    assert 0 < ndcg["random"] < ndcg["itemmean"] <= 1, ndcg
    res = runner.invoke(app, ["data", "split", "synthetic", "--out", str(out), "--protocol", "warm"])
    assert res.exit_code == 2 and "query-set" in res.output


def test_evaluate_bridge_protocol_reports_both_task_variants(tmp_path):
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        '[dataset]\nsource = "synthetic"\nn_users = 300\nn_items = 200\nseed = 0\n'
        "[protocols.bridge]\nshots = [0, 2]\nn_folds = 2\nmin_source = 3\n"
        'partition = { column = "topic", target = [0, 1] }\n'
        "[evaluation]\nks = [10]\n[models.popularity]\n[models.itemknn]\nneighbours = 50\n"
    )
    r = _evaluated(cfg, tmp_path / "runs")
    assert {"bridge@0", "bridge-target-only@0", "bridge@2", "bridge-target-only@2"} <= set(r)
    knn = {lab: r[lab]["itemknn"]["metrics"]["ndcg@10"]["mean"] for lab in ("bridge@0", "bridge-target-only@0")}
    assert knn["bridge@0"] > 2 * knn["bridge-target-only@0"]  # the source history is what item-KNN reads at k = 0
    pop = {lab: r[lab]["popularity"]["metrics"]["ndcg@10"]["mean"] for lab in ("bridge@2", "bridge-target-only@2")}
    assert pop["bridge@2"] == pytest.approx(pop["bridge-target-only@2"])  # same users, same queries
