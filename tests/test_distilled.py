"""Launch-day item vectors from content: a generative LM as an encoder, and collaborative knowledge
distilled into content (features/distilled.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from metarec.data.splits import cold_item
from metarec.errors import ConfigError
from metarec.eval.evaluate import evaluate_task
from metarec.features import DistilledSource, build_sources
from metarec.models import build_model
from metarec.models.io import load_model, save_model
from metarec.text.encoders import build_encoder

TOPIC = {"fields": {"columns": ["topic"], "categorical": ["topic"]}}


def test_causal_lm_encoder_pools_a_layer_and_ignores_padding(tiny_lm):
    enc = build_encoder({"encoder": "causal-lm", "model": tiny_lm, "layer": 1})
    assert enc.name == f"lm:{tiny_lm}:1:mean" and enc.dim == 32
    texts = ["star wars", "the empire strikes back , a film", "fargo"]
    batch = enc.encode(texts, batch_size=3)
    alone = np.vstack([enc.encode([t], batch_size=1) for t in texts])
    assert batch.shape == (3, 32) and np.allclose(batch, alone, atol=1e-5)  # padding changes nothing
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(batch[0], batch[2])
    other = build_encoder({"encoder": "causal-lm", "model": tiny_lm, "layer": 2})
    assert other.name != enc.name  # another layer never shares cached vectors
    with pytest.raises(ConfigError, match=r"text\.layer"):
        build_encoder({"encoder": "causal-lm", "model": tiny_lm, "layer": 9})
    with pytest.raises(ConfigError, match="pooling"):
        build_encoder({"encoder": "causal-lm", "model": tiny_lm, "pooling": "cls"})
    with pytest.raises(ConfigError, match="causal-lm encoder"):  # an option that would do nothing is refused
        build_encoder({"encoder": "sentence-transformers", "layer": 3})


def test_student_places_cold_items_where_the_teacher_puts_their_topic(synth):
    """Cold items never reach the teacher; the student's guess for each lies nearest its own topic's
    warm items in the collaborative space, and training items get out-of-fold guesses."""
    fold = next(cold_item(synth, n_folds=3, seed=0))
    src = DistilledSource(inputs=TOPIC, factors=8, folds=3)
    X = src.fit_transform(fold.train)
    y, warm = src.teacher(fold.train)
    assert X.shape == (synth.n_items, 9) and src.dim_ == 9
    topic = synth.items["topic"].to_numpy()
    cold = np.asarray(fold.tasks[0].candidates)
    assert not warm[cold].any()
    centroid = np.stack([y[warm & (topic == t)].mean(0) for t in range(topic.max() + 1)])
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nearest = (unit(X[cold, :-1]) @ unit(centroid[:, :-1]).T).argmax(1)
    assert (nearest == topic[cold]).mean() > 0.8
    full = src.transform(synth.items)  # the full student: not what training items got (cross-fitted)
    assert np.allclose(full[cold], X[cold], atol=1e-5) and not np.allclose(full[warm], X[warm], atol=1e-3)


def test_meta_model_with_a_distilled_source_ranks_launch_day_items_and_round_trips(synth, tmp_path):
    fold = next(cold_item(synth, n_folds=3, seed=0))
    task = fold.tasks[0]
    features = {"distilled": {"inputs": {"text": {"template": "{title}"}}, "factors": 8}, "id": {}}
    model = build_model("meta", {"epochs": 8, "dim": 16, "item_features": features}).fit(fold.train)
    rnd = build_model("random").fit(fold.train)
    got = evaluate_task(model, task).per_user["ndcg@10"].mean()
    assert got > 2 * evaluate_task(rnd, task).per_user["ndcg@10"].mean()
    art = save_model(model, tmp_path / "m", synth)
    back, _ = load_model(art)
    new = synth.items.iloc[list(task.candidates[:5])]
    a = model.items_.transform(new)["distilled"]
    assert np.allclose(a, back.items_.transform(new)["distilled"], atol=1e-5)


def test_bad_distilled_configs():
    with pytest.raises(ConfigError, match="needs inputs"):
        build_sources({"d": {"type": "distilled"}}, "item")
    with pytest.raises(ConfigError, match="not content"):
        build_sources({"d": {"type": "distilled", "inputs": {"id": {}}}}, "item")
    with pytest.raises(ConfigError, match="only items"):
        build_sources({"d": {"type": "distilled", "inputs": TOPIC}}, "user")
    with pytest.raises(ConfigError, match="unknown key"):
        build_sources({"d": {"type": "distilled", "inputs": TOPIC, "factor": 3}}, "item")


def test_lora_tuning_per_fit_is_cached_carried_by_the_artefact_and_keyed_in_the_cache(synth, tmp_path, monkeypatch):
    """A text source with `tune` trains a LoRA adapter on its fit's co-used items: vectors change, the
    encoder's name (so the cache key) holds the adapter's fingerprint, a second fit trains nothing,
    and a saved model carries the adapter (installed back into an empty cache on load)."""
    import metarec.text.tuning as tuning

    monkeypatch.setattr(tuning, "adapter_home", lambda: tmp_path / "adapters")
    fold = next(cold_item(synth, n_folds=3, seed=0))
    tune = {"pairs_per_epoch": 128, "batch_size": 16, "lr": 1e-3}
    params = {"epochs": 2, "dim": 8, "item_features": {"text": {"template": "{title}", "tune": tune}, "id": {}}}
    model = build_model("meta", params).fit(fold.train)
    src = model.items_.sources[0]
    fingerprint = src.text["adapter"]
    assert src.encoder.name == f"st:all-MiniLM-L6-v2+lora:{fingerprint}"
    frozen = build_encoder({"model": "all-MiniLM-L6-v2"}).encode(["Space Rocket", "Love Heart"])
    tuned = src.encoder.encode(["Space Rocket", "Love Heart"])
    assert not np.allclose(frozen, tuned, atol=1e-4)
    calls = []
    monkeypatch.setattr(tuning, "tune_encoder", lambda *a, **k: calls.append(1))
    again = build_model("meta", params).fit(fold.train)
    assert not calls and again.items_.sources[0].text["adapter"] == fingerprint  # reused, not retrained
    art = save_model(model, tmp_path / "m", synth)
    assert (art / "adapters" / fingerprint / "adapter_model.safetensors").exists()
    monkeypatch.setattr(tuning, "adapter_home", lambda: tmp_path / "elsewhere")
    back, _ = load_model(art)
    assert (tmp_path / "elsewhere" / fingerprint).is_dir()
    new = synth.items.iloc[:4]
    assert np.allclose(model.items_.transform(new)["text"], back.items_.transform(new)["text"], atol=1e-5)
    with pytest.raises(ConfigError, match="tune"):
        build_sources({"t": {"type": "text", "tune": {"rank": 0}}}, "item")


def test_cli_llm_tune_writes_an_adapter_and_refuses_bad_settings(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import metarec.text.tuning as tuning
    from metarec.cli import app

    monkeypatch.setattr(tuning, "adapter_home", lambda: tmp_path / "adapters")
    cfg = tmp_path / "t.toml"
    head = '[dataset]\nsource = "synthetic"\nn_users = 60\nn_items = 40\n[protocols.warm]\n[models.random]\n'
    cfg.write_text(head + '[tune]\ntemplate = "{title}. {description}"\npairs_per_epoch = 64\nbatch_size = 16\n')
    res = CliRunner().invoke(app, ["llm", "tune", "-c", str(cfg), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    fingerprint = tuning.adapter_fingerprint(tmp_path / "a")
    assert f'[text] adapter = "{fingerprint}"' in res.output and (tmp_path / "adapters" / fingerprint).is_dir()
    (marker,) = (tmp_path / "adapters").glob("tuned-*.json")
    assert json.loads(marker.read_text())["pairs"] == 64  # the [tune] table reached the tuner
    enc = build_encoder({"model": "all-MiniLM-L6-v2", "adapter": fingerprint})  # by fingerprint, from the cache
    assert enc.name.endswith(f"+lora:{fingerprint}")
    cfg.write_text(head + "[tune]\nrank = 0\n")
    res = CliRunner().invoke(app, ["llm", "tune", "-c", str(cfg)])
    assert res.exit_code == 2 and "rank" in res.output
    with pytest.raises(ConfigError, match="not found"):
        build_encoder({"model": "all-MiniLM-L6-v2", "adapter": "no-such-adapter"})
    with pytest.raises(ConfigError, match="LoRA"):
        build_encoder({"encoder": "tfidf", "adapter": fingerprint})


def test_descriptions_are_written_only_where_missing_cached_and_read_by_the_template(tiny_lm, synth, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    import metarec.llm.describe as describe

    monkeypatch.setattr(describe, "descriptions_home", lambda: tmp_path / "d")
    cfg = describe.DescribeConfig(model=tiny_lm, prompt="star wars {title}", max_new_tokens=4, batch_size=3)
    items = synth.items.iloc[:5].copy()
    items.loc[items.index[:2], "description"] = ""
    writer = describe.DescriptionWriter(cfg)
    out = writer.fill(items)
    assert writer.generated == 2 and out["description"].iloc[2:].tolist() == items["description"].iloc[2:].tolist()
    one = writer.lm.generate_batch(["star wars " + items["title"].iloc[0]], max_new_tokens=4)[0]
    assert out["description"].iloc[0] == describe._clean(one)  # batching (left padding) changes nothing
    again = describe.DescriptionWriter(cfg)
    assert again.fill(items).equals(out) and again.generated == 0  # from the cache
    src = build_sources({"text": {"template": "{title}. {description}", "describe": cfg.model_dump()}}, "item")[0]
    text = src.render(items.drop(columns=["description"]))  # no column at all: every item described
    assert all(t.startswith(f"{title}. ") for t, title in zip(text, items["title"], strict=True))
    with pytest.raises(ConfigError, match="describe"):
        build_sources({"text": {"describe": {"tokens": 3}}}, "item")


def test_an_adapter_given_by_path_is_saved_by_fingerprint_with_the_model(synth, tmp_path, monkeypatch):
    import shutil

    import metarec.text.tuning as tuning

    monkeypatch.setattr(tuning, "adapter_home", lambda: tmp_path / "adapters")
    pairs = tuning.cointeraction_pairs(synth, 64, 3, 0)
    tuning.tune_encoder("all-MiniLM-L6-v2", synth.items["title"].tolist(), pairs,
                        tuning.TuneConfig(pairs_per_epoch=64, batch_size=16), tmp_path / "mine")  # fmt: skip
    fingerprint = tuning.adapter_fingerprint(tmp_path / "mine")
    params = {"epochs": 1, "dim": 8, "item_features": {"text": {"template": "{title}"}},
              "text": {"adapter": str(tmp_path / "mine")}}  # fmt: skip
    model = build_model("meta", params).fit(synth)
    art = save_model(model, tmp_path / "m", synth)
    assert (art / "adapters" / fingerprint / "adapter_model.safetensors").exists()
    shutil.rmtree(tmp_path / "mine")  # the training machine's path is gone; the artefact still loads
    shutil.rmtree(tmp_path / "adapters")
    back, _ = load_model(art)
    assert back.items_.sources[0].encoder.name.endswith(f"+lora:{fingerprint}")


def test_an_item_added_over_the_api_gets_the_students_vector(synth, tmp_path):
    """The service places a new item through the distilled source (its text through the student) exactly
    as the model does, and rebuilds the same row after a restart."""
    from fastapi.testclient import TestClient

    from metarec.serve.app import create_app

    features = {"text": {"template": "{title}"}, "id": {},  # the service searches and explains through `text`
                "distilled": {"inputs": {"text": {"template": "{title}"}}, "factors": 8}}  # fmt: skip
    model = build_model("meta", {"epochs": 4, "dim": 16, "item_features": features}).fit(synth)
    art = save_model(model, tmp_path / "m", synth)
    url = f"sqlite:///{tmp_path / 's.db'}"
    item = {"id": "new", "title": "Rocket Galaxy Orbit Alien"}
    with TestClient(create_app(art, url)) as c:
        assert c.post("/items", json={"items": [item]}).status_code == 201
        row = c.app.state.service.index.vectors[-1].copy()
    expected = model.new_item_vectors(pd.DataFrame({"title": [item["title"]]}))[0][0]
    assert np.allclose(row[: len(expected)], expected, atol=1e-4)
    with TestClient(create_app(art, url)) as c:
        assert np.allclose(c.app.state.service.index.vectors[-1], row, atol=1e-6)
