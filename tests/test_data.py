"""Loaders and cleaning: real formats parse; broken input fails with a message that helps."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from metarec.data.clean import clean, kcore
from metarec.data.schema import Dataset
from metarec.data.sources import amazon, load_dataset, movielens, tabular
from metarec.errors import ConfigError, DataError


def test_from_frames_maps_ids_once_and_keeps_external_ids():
    inter = pd.DataFrame({"user_id": ["b", "a", "b"], "item_id": ["x", "y", "y"], "rating": [1, 2, 3]})
    ds = Dataset.from_frames("t", inter)
    assert ds.n_users == 2 and ds.n_items == 2
    assert ds.user_ids(ds.interactions["user"]) == ["b", "a", "b"]
    assert ds.item_ids(ds.interactions["item"]) == ["x", "y", "y"]
    assert ds.matrix().sum() == 3
    assert ds.user_index("a") == 1
    with pytest.raises(KeyError):
        ds.user_index("zzz")


def test_unknown_item_in_interactions_is_named():
    inter = pd.DataFrame({"user_id": ["a"], "item_id": ["ghost"]})
    items = pd.DataFrame({"item_id": ["x"]})
    with pytest.raises(DataError, match="ghost"):
        Dataset.from_frames("t", inter, items)


def test_missing_id_column_is_named():
    with pytest.raises(DataError, match="item_id"):
        Dataset.from_frames("t", pd.DataFrame({"user_id": ["a"]}))


def test_clean_dedupes_thresholds_and_kcores():
    inter = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "x", "y", "x", "y", "x"],
            "rating": [5, 2, 4, 5, 1, 5],
            "timestamp": [1, 2, 3, 4, 5, 6],
        }
    )
    ds = Dataset.from_frames("t", inter)
    d = clean(ds)
    assert len(d.interactions) == 5  # (a, x) kept once: the latest, rating 2
    assert d.interactions.query("user == 0 and item == 0")["rating"].item() == 2
    assert len(clean(ds, implicit_threshold=4).interactions) == 3
    k2 = clean(ds, min_user_interactions=2, min_item_interactions=2)
    assert k2.n_users == 2 and k2.n_items == 2  # c dropped, ids re-densified
    with pytest.raises(DataError, match="kcore"):
        kcore(ds, 10)


def test_synthetic_has_planted_structure(synth):
    topics = synth.items["topic"].to_numpy()
    fav = synth.users["favourite_topic"].to_numpy()
    df = synth.interactions
    share_fav = (topics[df["item"].to_numpy()] == fav[df["user"].to_numpy()]).mean()
    assert share_fav > 2.0 / (topics.max() + 1)  # far above the 1/n_topics of unstructured data
    assert synth.items["title"].str.len().min() > 0


def _write_ml100k_home(d):
    d.mkdir()
    (d / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n")
    flags = ["0"] * 19
    f1 = flags.copy()
    f1[3] = f1[5] = "1"
    (d / "u.item").write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(f1) + "\n"
        "2|Café Noir (1996)|01-Jan-1996||http://y|" + "|".join(flags) + "\n",
        encoding="latin-1",
    )
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")


def test_ml100k_home_format(tmp_path):
    _write_ml100k_home(tmp_path / "ml")
    inter, items, users = movielens.parse_ml100k_home(tmp_path / "ml")
    assert len(inter) == 3
    assert items.loc[0, "title"] == "Toy Story" and items.loc[0, "year"] == 1995
    assert items.loc[0, "genres"] == "Animation Comedy"
    assert items.loc[1, "title"] == "Café Noir"
    assert users.loc[0, "occupation"] == "technician" and users.loc[0, "age"] == 24


def test_ml1m_and_ml20m_formats_from_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))
    d = tmp_path / "ml-1m"
    d.mkdir()
    (d / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978302109\n")
    (d / "movies.dat").write_text("10::GoldenEye (1995)::Action|Adventure|Thriller\n", encoding="latin-1")
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = movielens.load("ml-1m", path=d, verify=False)
    assert ds.items.loc[0, "genres"] == "Action Adventure Thriller"
    assert ds.users.loc[0, "occupation"] == "K-12 student"
    with pytest.raises(DataError, match="expected 1000209"):
        movielens.load("ml-1m", path=d)
    d20 = tmp_path / "ml-20m"
    d20.mkdir()
    (d20 / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n")
    (d20 / "movies.csv").write_text('movieId,title,genres\n2,"Jumanji (1995)",Adventure|Children\n')
    ds = movielens.load("ml-20m", path=d20, verify=False)
    assert ds.items.loc[0, "title"] == "Jumanji" and ds.interactions["rating"].item() == 3.5


def test_ml1m_malformed_line(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))
    d = tmp_path / "bad"
    d.mkdir()
    (d / "ratings.dat").write_text("1::10::5::978300760\n2::10::3\n")
    (d / "movies.dat").write_text("10::X (1995)::Action\n")
    (d / "users.dat").write_text("1::F::1::10::48067\n")
    with pytest.raises(DataError, match="line 2"):
        movielens.load("ml-1m", path=d, verify=False)


def test_unknown_variant_and_unreachable_download(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_HOME", str(tmp_path))
    with pytest.raises(DataError, match="variant"):
        movielens.fetch("ml-5m")
    monkeypatch.setattr(movielens, "HOME_URL", "http://127.0.0.1:9/{variant}.zip")
    with pytest.raises(DataError, match="--path"):
        movielens.fetch("ml-1m", timeout=1)


def _jsonl(path, rows, gz=True):
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


def test_amazon_jsonl_with_metadata(tmp_path):
    rows = [
        {
            "reviewerID": "u1",
            "asin": "A",
            "overall": 5.0,
            "summary": "great",
            "reviewText": "loud",
            "unixReviewTime": 2,
        },
        {
            "reviewerID": "u2",
            "asin": "B",
            "overall": 3.0,
            "summary": "ok",
            "reviewText": "",
            "unixReviewTime": 1,
        },
        {"reviewerID": "u1", "asin": "B", "overall": 4.0, "unixReviewTime": 3, "reviewerName": "Ann"},
    ]
    _jsonl(tmp_path / "r.json.gz", rows)
    # 2014 metadata files are Python literals, not JSON
    (tmp_path / "meta.json").write_text(
        "{'asin': 'A', 'title': 'Amp 10W', 'description': 'a small amp', 'categories': [['Music', 'Amps']]}\n"
    )
    ds = amazon.load(tmp_path / "r.json.gz", meta_path=tmp_path / "meta.json")
    assert len(ds.interactions) == 3 and ds.n_items == 2
    assert ds.items.set_index("item_id").loc["A", "title"] == "Amp 10W"
    assert ds.items.set_index("item_id").loc["B", "title"] == ""
    assert "summary" in ds.interactions.columns
    assert ds.users.set_index("user_id").loc["u1", "reviewer_name"] == "Ann"


def test_amazon_malformed_and_incomplete_lines(tmp_path):
    _jsonl(tmp_path / "bad.json", [{"reviewerID": "u", "asin": "a", "overall": 1}, "{not json"], gz=False)
    with pytest.raises(DataError, match="line 2"):
        amazon.load(tmp_path / "bad.json")
    _jsonl(tmp_path / "miss.json", [{"reviewerID": "u", "overall": 1}], gz=False)
    with pytest.raises(DataError, match="asin"):
        amazon.load(tmp_path / "miss.json")
    with pytest.raises(DataError, match="no such file"):
        amazon.load(tmp_path / "nope.json")


def test_csv_with_column_mapping_items_users_and_split(tmp_path):
    (tmp_path / "i.csv").write_text("uid,sku,stars,ts,fold\n1,a,5,10,train\n1,b,3,11,test\n2,a,4,12,train\n")
    (tmp_path / "items.csv").write_text("sku,title\na,Red Guitar\nb,Blue Drum\n")
    (tmp_path / "users.csv").write_text("uid,bio\n1,drummer\n2,guitarist\n")
    cfg = {
        "source": "csv",
        "interactions": str(tmp_path / "i.csv"),
        "items": str(tmp_path / "items.csv"),
        "users": str(tmp_path / "users.csv"),
        "columns": {"user": "uid", "item": "sku", "rating": "stars", "timestamp": "ts", "split": "fold"},
    }
    ds = load_dataset(cfg)
    assert ds.n_items == 2 and ds.items["title"].tolist() == ["Red Guitar", "Blue Drum"]
    assert ds.interactions["split"].tolist() == ["train", "test", "train"]
    assert ds.interactions["rating"].dtype == np.float32
    pq = tmp_path / "i.parquet"
    pd.read_csv(tmp_path / "i.csv").to_parquet(pq)
    ds2 = load_dataset({**cfg, "source": "parquet", "interactions": str(pq), "items": None, "users": None})
    assert len(ds2.interactions) == 3


def test_csv_errors_name_file_line_and_column(tmp_path):
    (tmp_path / "i.csv").write_text("uid,sku,stars\n1,a,5\n1,b,five\n")
    with pytest.raises(DataError, match=r"line 3, column 'stars'"):
        tabular.load(tmp_path / "i.csv", columns={"user": "uid", "item": "sku", "rating": "stars"})
    with pytest.raises(DataError, match=r"missing column\(s\) \['user_id', 'item_id'\]"):
        tabular.load(tmp_path / "i.csv")
    (tmp_path / "s.csv").write_text("user_id,item_id,split\n1,a,training\n")
    with pytest.raises(DataError, match="train / valid / test"):
        tabular.load(tmp_path / "s.csv")


def test_load_dataset_config_errors():
    with pytest.raises(ConfigError, match="source"):
        load_dataset({"source": "kaggle"})
    with pytest.raises(ConfigError, match="path"):
        load_dataset({"source": "amazon"})


def test_real_amazon_musical_instruments(amazon_path):
    ds = amazon.load(amazon_path)
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (10_261, 1_429, 900)
    assert (ds.interactions["review_text"] == "").sum() == 7


@pytest.mark.slow
def test_real_movielens_100k_with_knowledge_graph():
    ds = movielens.load("ml-100k")
    assert (len(ds.interactions), ds.n_users, ds.n_items) == (100_000, 943, 1_682)
    assert {"title", "year", "genres"} <= set(ds.items.columns)
    assert {"age", "gender", "occupation"} <= set(ds.users.columns)
    assert ds.kg is not None and len(ds.kg.triples) > 90_000 and len(ds.kg.links) > 1_500
    assert ds.items.loc[0, "title"] == "Toy Story"


def test_csv_side_tables_read_numbers_as_numbers(tmp_path):
    from metarec.data.sources import tabular

    (tmp_path / "i.csv").write_text("user_id,item_id\nu1,a\nu2,b\n")
    (tmp_path / "users.csv").write_text("user_id,age,zip\nu1,24,01234\nu2,,94043\n")
    (tmp_path / "items.csv").write_text("item_id,year,title\na,1995,Toy Story\nb,1977,Star Wars\n")
    ds = tabular.load(tmp_path / "i.csv", items=tmp_path / "items.csv", users=tmp_path / "users.csv")
    assert ds.users["age"].dtype.kind == "f" and ds.items["year"].dtype.kind == "i"
    assert ds.users["zip"].tolist() == ["01234", "94043"]  # a code with a leading zero stays text
    assert ds.users["user_id"].tolist() == ["u1", "u2"]


def test_ids_are_factorised_once_and_mixed_spellings_are_one_id():
    """Ids are mapped through their distinct values only (millions of rows never become strings); 7 and "7"
    in one column are the same user, as when the file is read as text."""
    inter = pd.DataFrame({"user_id": [7, "7", 8, 9], "item_id": [1, 2, 1, 3], "timestamp": [1, 2, 3, 4]})
    ds = Dataset.from_frames("mixed", inter)
    assert ds.users["user_id"].tolist() == ["7", "8", "9"]
    assert ds.interactions["user"].tolist() == [0, 0, 1, 2]
    assert ds.items["item_id"].tolist() == ["1", "2", "3"]
    items = pd.DataFrame({"item_id": ["3", "1"], "title": ["c", "a"]})  # the table's order is kept
    with pytest.raises(DataError, match=r"1 interactions name items not in the item table, e.g. item '2'"):
        Dataset.from_frames("x", inter, items)
    ds = Dataset.from_frames("x", inter[inter["item_id"] != 2], items)
    assert ds.interactions["item"].tolist() == [1, 1, 0]
    with pytest.raises(DataError, match="empty user or item ids"):
        Dataset.from_frames("x", pd.DataFrame({"user_id": ["a", None], "item_id": ["1", "2"]}))


def test_parquet_folders_and_json_lines_read_like_csv(tmp_path):
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\n007,a,1\n8,b,2\n007,b,3\n9,c,4\n")
    csv = tabular.load(tmp_path / "i.csv")
    frame = pd.read_csv(tmp_path / "i.csv", dtype=str)
    (tmp_path / "parts").mkdir()
    for j, part in enumerate([frame.iloc[:2], frame.iloc[2:]]):
        part.to_parquet(tmp_path / "parts" / f"part-{j}.parquet")
    frame.to_json(tmp_path / "i.jsonl", orient="records", lines=True)
    for path in (tmp_path / "parts", tmp_path / "i.jsonl"):
        other = tabular.load(path)
        assert other.users["user_id"].tolist() == ["007", "8", "9"], path
        pd.testing.assert_frame_equal(other.interactions, csv.interactions)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no data files"):
        tabular.load(tmp_path / "empty")
    (tmp_path / "csvparts").mkdir()
    (tmp_path / "csvparts" / "a.csv").write_text("user_id,item_id\n1,a\n")
    with pytest.raises(DataError, match="read by Ray Data only"):
        tabular.load(tmp_path / "csvparts")


def test_domain_column_from_interactions_or_items_file(tmp_path):
    (tmp_path / "i.csv").write_text("uid,sku,shelf\n1,a,films\n1,b,music\n2,a,films\n2,c,music\n")
    ds = tabular.load(tmp_path / "i.csv", columns={"user": "uid", "item": "sku", "domain": "shelf"})
    assert dict(zip(ds.items["item_id"], ds.item_domains(), strict=True)) == {"a": "films", "b": "music", "c": "music"}
    assert "domain" not in ds.interactions.columns  # an item's property, kept once in the item table
    (tmp_path / "items.csv").write_text("sku,title,shelf\na,Alien,films\nb,Blue,music\nc,Calm,music\nd,Dune,films\n")
    ds = tabular.load(tmp_path / "i.csv", tmp_path / "items.csv", columns={"user": "uid", "item": "sku",
                                                                            "domain": "shelf"})  # fmt: skip
    assert ds.item_domains().tolist() == ["films", "music", "music", "films"]  # the items file's order and rows
    assert "shelf" in ds.items.columns  # the file's own column stays (a template may read it)
    (tmp_path / "plain.csv").write_text("uid,sku\n1,a\n")
    assert tabular.load(tmp_path / "plain.csv", columns={"user": "uid", "item": "sku"}).item_domains() is None


@pytest.mark.parametrize(
    ("rows", "items", "needle"),
    [
        ("1,a,films\n2,a,music\n", None, r"item 'a' is in domain 'films' on line 2 and 'music' on line 3"),
        ("1,a,films\n2,b,\n", None, r"line 3, column 'shelf' is empty"),
        ("1,a,films\n", "sku,shelf\na,music\n", r"puts item 'a' in domain 'films'.*in 'music'"),
        ("1,a,films\n", "sku,shelf\na,\n", r"items.csv: line 2, column 'shelf' is empty"),
        ("1,a,films\n", "sku,title\na,A\nb,B\n", r"1 items have no interactions and so no domain \(e.g. 'b'\)"),
        ("1,a,films\n", "sku,domain,shelf\na,x,films\n", r"both a 'domain' column and the mapped domain column"),
    ],
)
def test_malformed_domain_column_is_a_clear_error(tmp_path, rows, items, needle):
    (tmp_path / "i.csv").write_text("uid,sku,shelf\n" + rows)
    if items is not None:
        (tmp_path / "items.csv").write_text(items)
    with pytest.raises(DataError, match=needle):
        tabular.load(tmp_path / "i.csv", None if items is None else tmp_path / "items.csv",
                     columns={"user": "uid", "item": "sku", "domain": "shelf"})  # fmt: skip
