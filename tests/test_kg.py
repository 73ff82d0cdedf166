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
    t, lk = _files(tmp_path, "head\trelation\ttail\nm.1\tfilm.director\tm.9\nm.1\tfilm.genre\tm.8\n",
                   "item_id,entity\ni0,m.1\ni1,m.2\n")  # fmt: skip
    cfg = {"source": "synthetic", "n_users": 50, "n_items": 30, "kg_triples": str(t), "kg_links": str(lk)}
    ds = load_dataset(cfg)
    info = ds.summary()
    assert info["kg_triples"] == 2 and info["kg_relations"] == 2
    assert info["kg_linked_items"] == 2 and info["kg_items_with_facts"] == 1  # i1's entity has no facts
    facts = kg_facts(ds)
    assert facts[0] == "director m.9; genre m.8" and facts[1] == "" and facts[2] == ""


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
