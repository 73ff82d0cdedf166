"""A user's knowledge graph: loaded for any source, checked row by row, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data.sources import load_dataset
from metarec.data.sources.kg import KGDropWarning, read_kg
from metarec.errors import ConfigError, DataError
from metarec.text.templates import kg_facts


def _files(tmp_path, triples: str, links: str):
    t, lk = tmp_path / "kg.tsv", tmp_path / "links.csv"
    t.write_text(triples)
    lk.write_text(links)
    return t, lk


def test_a_clean_graph_attaches_and_reads_as_facts(synth, tmp_path):
    t, lk = _files(tmp_path, "head\trelation\ttail\nm.1\tfilm.director\tJane Doe\nm.1\tfilm.genre\tm.8\n",
                   "item_id,entity\ni0,m.1\ni1,m.2\n")  # fmt: skip
    cfg = {"source": "synthetic", "n_users": 50, "n_items": 30, "kg_triples": str(t), "kg_links": str(lk)}
    ds = load_dataset(cfg)
    info = ds.summary()
    assert info["kg_triples"] == 2 and info["kg_relations"] == 2
    assert info["kg_linked_items"] == 2 and info["kg_items_with_facts"] == 1  # i1's entity has no facts
    facts = kg_facts(ds)
    # a readable tail is written as is; an opaque id nobody else shares names nothing and is left out
    assert facts[0] == "director Jane Doe" and facts[1] == "" and facts[2] == ""


def test_bad_rows_are_dropped_counted_and_named(synth, tmp_path):
    triples = "head_id:token\trelation_id:token\ttail_id:token\nm.1\tr\tm.2\nm.1\tr\tm.2\nm.3\t\tm.4\nm.3\tr\tm.5\n"
    links = "item_id,entity\ni0,m.1\nnope,m.3\ni0,m.3\ni1,m.3\n"
    t, lk = _files(tmp_path, triples, links)
    with pytest.warns(KGDropWarning) as caught:
        kg = read_kg(t, lk, synth.items)
    msg = str(caught[0].message)
    assert "1 repeated triple(s) dropped (lines 3)" in msg and "line" in msg and "'nope'" in msg
    r = kg.report
    assert (r["triples_duplicate"], r["triples_empty_field"], r["links_unknown_item"], r["links_second_entity"]) == (
        1, 1, 1, 1)  # fmt: skip
    assert len(kg.triples) == 2 and kg.links["item_id"].tolist() == ["i0", "i1"]


def test_a_missing_column_or_a_lone_file_is_a_clear_error(synth, tmp_path):
    t, lk = _files(tmp_path, "subject,predicate,object\na,b,c\n", "item_id,entity\ni0,a\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['head', 'relation', 'tail'\].*header row"):
        read_kg(t, lk, synth.items)
    t.write_text("head,relation,tail\na,b,c\n")  # commas in a .tsv
    with pytest.raises(DataError, match="looks separated by ','"):
        read_kg(t, lk, synth.items)
    t.write_text("head\trelation\ttail\n\t\t\n")
    with pytest.raises(DataError, match="no usable triples"):
        read_kg(t, lk, synth.items)
    with pytest.raises(ConfigError, match="go together"):
        load_dataset({"source": "synthetic", "kg_triples": str(t)})
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[dataset]\nsource = "synthetic"\nkg_triples = "{t}"\n[protocols.warm]\n[models.random]\n')
    res = CliRunner().invoke(app, ["evaluate", "-c", str(cfg)])
    assert res.exit_code == 2 and "go together" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------------------- into the models
def _topic_graph(ds, tmp_path, unlinked: int = 5):
    """Each item's entity points at its planted topic (and a second, noisy fact); the last `unlinked`
    items have no link."""
    rows = ["head\trelation\ttail"]
    for i, t in zip(ds.items["item_id"], ds.items["topic"], strict=True):
        rows.append(f"e.{i}\thas_topic\tt.{t}")  # opaque ids, as Freebase's
        rows.append(f"e.{i}\tmade_in\tp.{int(i[1:]) % 3}")
    links = ["item_id,entity"] + [f"{i},e.{i}" for i in ds.items["item_id"][: len(ds.items) - unlinked]]
    return _files(tmp_path, "\n".join(rows) + "\n", "\n".join(links) + "\n")


def test_kg_embeddings_place_items_by_their_facts(synth, tmp_path, monkeypatch):
    import numpy as np

    from metarec.features import build_sources

    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))
    t, lk = _topic_graph(synth, tmp_path)
    ds = load_dataset(
        {"source": "synthetic", "n_users": 300, "n_items": 200, "kg_triples": str(t), "kg_links": str(lk)}
    )
    (src,) = build_sources({"kg": {"model": "TransE", "dim": 16, "epochs": 60, "batch_size": 64}}, "item")
    x = src.fit_transform(ds)
    assert x.shape == (200, 17) and src.fit_info_["linked_items"] == 195 and not src.fit_info_["cached"]
    assert (x[-5:] == 0).all() and (x[:-5, -1] == 1).all()  # unlinked: zeros, "has facts" flag off
    v = x[:-5, :-1] / np.linalg.norm(x[:-5, :-1], axis=1, keepdims=True)
    topic = ds.items["topic"].to_numpy()[:-5]
    same = topic[:, None] == topic[None, :]
    sim = v @ v.T - 2 * np.eye(len(v))
    purity = same[np.arange(len(v)), sim.argmax(1)].mean()  # nearest other item shares the topic (chance: ~1/6)
    assert purity > 0.6 and sim[same & (sim > -1)].mean() > sim[~same].mean() + 0.05, purity
    # a second fit of the same graph reads the cache; transform after a state round trip is the same
    (again,) = build_sources({"kg": {"model": "TransE", "dim": 16, "epochs": 60, "batch_size": 64}}, "item")
    np.testing.assert_allclose(again.fit_transform(ds), x, atol=1e-6)
    assert again.fit_info_["cached"]
    (loaded,) = build_sources({"kg": {"dim": 16}}, "item")
    loaded.set_state(src.get_state())
    np.testing.assert_allclose(loaded.transform(ds.items.iloc[[0, 199]]), x[[0, 199]], atol=1e-5)
    with pytest.raises(DataError, match="no knowledge graph"):
        src.fit(synth)
    with pytest.raises(ConfigError, match="PyKEEN has no model"):
        build_sources({"kg": {"model": "NoSuchModel", "epochs": 1}}, "item")[0].fit(ds)


def test_facts_are_named_by_the_catalogue_and_cke_scores_new_items(synth, tmp_path, monkeypatch):
    import numpy as np

    from metarec.data.splits import cold_item
    from metarec.eval.evaluate import evaluate_task
    from metarec.models import build_model

    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))
    t, lk = _topic_graph(synth, tmp_path, unlinked=0)
    t.write_text(t.read_text() + "e.i0\tdirected_by\tSteven Spielberg\n")
    ds = load_dataset(
        {"source": "synthetic", "n_users": 300, "n_items": 200, "kg_triples": str(t), "kg_links": str(lk)}
    )
    facts = kg_facts(ds, also_in=1)
    titles = ds.items["title"].tolist()
    first_same_topic = next(titles[j] for j in range(1, 200) if ds.items["topic"][j] == ds.items["topic"][0])
    assert facts[0].startswith("directed by Steven Spielberg, has topic (also: ")  # readable label as is, ranked first
    assert f"has topic (also: {first_same_topic})" in facts[0] and "t." not in facts[0].replace("(also: ", "")
    fold = next(cold_item(ds, n_folds=5, seed=0, folds=[0]))
    cke = build_model("cke", {"dim": 16, "epochs": 15, "batch_size": 512}).fit(fold.train)
    rnd = build_model("random").fit(fold.train)
    ndcg = {m.name: float(np.mean(evaluate_task(m, fold.tasks[0], [10], ("ndcg",)).per_user["ndcg@10"]))
            for m in (cke, rnd)}  # fmt: skip
    assert ndcg["cke"] > 1.2 * ndcg["random"], ndcg  # new items through their entity alone (0.30 vs 0.23)
