"""Text layer: offline LLM loading, pooling, templates, the embedding cache, content models."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from metarec.data.schema import Dataset
from metarec.data.splits import cold_item
from metarec.errors import ConfigError, DataError
from metarec.eval.evaluate import evaluate_task
from metarec.models import build_model
from metarec.text.cache import EmbeddingCache, text_key
from metarec.text.encoders import POOLINGS, HFPooledEncoder, SentenceTransformerEncoder, TfidfEncoder
from metarec.text.templates import item_texts, render, user_texts


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEncoder()


class CountingEncoder:
    """Wraps a real encoder and counts what reaches it (the cache's job is to keep this low)."""

    def __init__(self, inner):
        self.inner, self.name, self.dim, self.calls = inner, "count:" + inner.name, inner.dim, []

    def encode(self, texts, batch_size=64, show_progress_bar=False):
        self.calls.append(list(texts))
        return self.inner.encode(texts, batch_size)


def test_packaged_model_loads_with_the_hub_unreachable(tmp_path):
    code = (
        "from metarec.text.encoders import SentenceTransformerEncoder\n"
        "e = SentenceTransformerEncoder()\n"
        "v = e.encode(['a film about space', 'a movie set among the stars', 'a cooking show'])\n"
        "import numpy as np\n"
        "assert v.shape == (3, 384) and v.dtype == np.float32\n"
        "assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)\n"
        "assert v[0] @ v[1] > v[0] @ v[2] + 0.1\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), HTTPS_PROXY="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_unknown_model_without_internet_is_a_clear_error():
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by conftest before the first import
    with pytest.raises(ConfigError, match="packaged"):
        SentenceTransformerEncoder("no-such-org/no-such-model")


def test_chinese_text_passes_through_untouched(minilm):
    items = pd.DataFrame({"item_id": ["1", "2", "3"], "title": ["星际穿越", "我的爱情故事", "Interstellar"]})
    ds = Dataset.from_frames("zh", pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["1", "2", "3"]}), items)
    texts = item_texts(ds, "{title}")
    assert texts == ["星际穿越", "我的爱情故事", "Interstellar"]
    # the characters reach the tokenizer as written (MiniLM's English vocabulary knows only some
    # CJK characters; a multilingual model name is the fix for a Chinese catalogue, not our code)
    tokens = minilm.model.tokenizer.tokenize(texts[0])
    assert tokens[0] == "星" and len(tokens) == 4
    v = minilm.encode(texts)
    assert np.isfinite(v).all() and not np.allclose(v[0], v[1])


def test_pooling_variants_have_the_right_shape_and_differ():
    texts = ["a quiet drama about family", "loud action with explosions", "星际穿越"]
    outs = {}
    for pooling in POOLINGS:
        enc = HFPooledEncoder(pooling=pooling)
        v = enc.encode(texts, batch_size=2)
        assert v.shape == (3, enc.dim) == (3, 384)
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
        outs[pooling] = v
    for a in POOLINGS:
        for b in POOLINGS:
            if a < b:
                assert not np.allclose(outs[a], outs[b], atol=1e-3), (a, b)
    # mean pooling over MiniLM's tokens is what sentence-transformers does for this model
    st = SentenceTransformerEncoder().encode(texts)
    assert np.allclose(outs["mean"], st, atol=1e-4)
    for removed in ("median", "attention"):  # attention pooling was an untrained head: removed, not a stub
        with pytest.raises(ConfigError, match="pooling"):
            HFPooledEncoder(pooling=removed)


def test_cache_encodes_each_text_once_and_only_changed_texts_again(tmp_path, minilm):
    enc = CountingEncoder(minilm)
    texts = [f"item number {i}: a story" for i in range(1500)]  # enough digests to end in a NUL byte
    cache = EmbeddingCache(enc, "tpl", root=tmp_path)
    first = cache.encode(texts)
    assert cache.last.encoded == 1500 and cache.last.hits == 0
    EmbeddingCache.forget()  # what a new process starts with: nothing in memory
    again = EmbeddingCache(enc, "tpl", root=tmp_path)
    second = again.encode(texts)
    assert again.last.encoded == 0 and again.last.hits == 1500
    assert np.array_equal(first, second)
    changed = [*texts[:-1], "item number 1499: a different story"]
    third = again.encode(changed)
    assert enc.calls[-1] == ["item number 1499: a different story"]
    assert np.array_equal(third[:-1], first[:-1]) and not np.allclose(third[-1], first[-1])
    other = EmbeddingCache(enc, "other-template", root=tmp_path)
    other.encode(texts[:3])
    assert other.last.encoded == 3  # keyed by template too
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_stays_one_file_and_one_off_texts_never_reach_disk(tmp_path, minilm):
    """Regression (issue 10): one shard per call made every later call re-read all shards."""
    enc = CountingEncoder(minilm)
    cache = EmbeddingCache(enc, "q", root=tmp_path)
    for i in range(50):  # fifty distinct persisted calls: still one file, rows appended
        cache.encode([f"query {i}"])
    files = sorted(p.name for p in cache.dir.iterdir())
    assert "vectors.sqlite" in files and not [f for f in files if f.startswith("shard-")]
    assert len(cache) == 50
    size = (cache.dir / "vectors.sqlite").stat().st_size
    for _ in range(3):  # repeated and one-off texts: no disk growth, repeats are not re-encoded
        cache.encode([f"query {i}" for i in range(50)])
        cache.encode(["a one-off search", "another one"], persist=False)
    assert len(cache) == 50 and (cache.dir / "vectors.sqlite").stat().st_size == size
    assert sum(c == ["a one-off search", "another one"] for c in enc.calls) == 1
    # a vector another process wrote after this one read the file is found on disk, not re-encoded
    other = CountingEncoder(minilm)
    writer = EmbeddingCache(other, "q", root=tmp_path)
    vec = minilm.encode(["written elsewhere"])[0]
    with sqlite3.connect(writer.path) as con:
        con.execute("INSERT INTO vectors VALUES (?, ?)", (text_key("written elsewhere"), vec.tobytes()))
    assert np.allclose(writer.encode(["written elsewhere"])[0], vec) and not other.calls


def test_cache_imports_legacy_shards_then_deletes_them(tmp_path, minilm):
    enc = CountingEncoder(minilm)
    cache = EmbeddingCache(enc, "legacy", root=tmp_path)
    vecs = minilm.encode(["old one", "old two"])
    keys = np.frombuffer(text_key("old one") + text_key("old two"), np.uint8).reshape(2, 20)
    np.savez(cache.dir / "shard-1-1.npz", keys=keys, vecs=vecs)
    EmbeddingCache.forget()
    again = EmbeddingCache(enc, "legacy", root=tmp_path)
    assert np.allclose(again.encode(["old two", "old one"]), vecs[::-1]) and not enc.calls
    assert not list(again.dir.glob("shard-*.npz")) and len(again) == 2


def test_templates_fields_value_maps_and_errors():
    users = pd.DataFrame(
        {"user_id": ["1", "2"], "age": [24, 53], "gender": ["M", "F"], "occupation": ["technician", None]}
    )
    inter = pd.DataFrame({"user_id": ["1", "2"], "item_id": ["a", "a"], "summary": ["great amp", "too loud"]})
    ds = Dataset.from_frames("t", inter, users=users)
    assert user_texts(ds, "A {age}-year-old {gender} {occupation}.") == [
        "A 24-year-old male technician.",
        "A 53-year-old female .",
    ]
    assert item_texts(ds, "Reviews: {reviews}") == ["Reviews: great amp | too loud"]
    assert render("{title} ({year})", pd.DataFrame({"title": ["Heat"], "year": [None]})) == ["Heat"]
    with pytest.raises(DataError, match="title"):
        item_texts(ds, "{title}")
    with pytest.raises(DataError, match="empty text for every item"):
        item_texts(ds.with_interactions(ds.interactions.drop(columns="summary")), "{reviews}")


def test_content_knn_ranks_cold_items_and_text_only_users(synth):
    fold = next(cold_item(synth, n_folds=3))
    task = fold.tasks[0]
    rnd = evaluate_task(build_model("random").fit(fold.train), task).per_user["ndcg@10"].mean()
    tpl = "{title}. {description}"
    for agg in ("centroid", "knn"):
        content = build_model("content", {"item_template": tpl, "aggregation": agg}).fit(fold.train)
        got = evaluate_task(content, task).per_user["ndcg@10"].mean()
        assert got > 1.5 * rnd, (agg, got, rnd)
    # a brand-new user with no interaction, only a profile text, gets that topic's items
    topics = synth.items["topic"].to_numpy()
    state = content.adapt(pd.DataFrame({"item": []}), profile_text="I enjoy space and rocket stories")
    top = [i for i, _ in content.recommend_for(state, 10)]
    assert np.mean(topics[top] == 0) > 0.7


def test_content_with_tfidf_and_user_profiles(synth):
    m = build_model(
        "content",
        {"item_template": "{title}", "user_template": "{profile}", "text": {"encoder": "tfidf"}, "aggregation": "knn"},
    ).fit(synth)
    assert m.user_vectors_.shape[0] == synth.n_users
    assert m.score(np.array([0, 1])).shape == (2, synth.n_items)
    assert isinstance(m.encoder_, TfidfEncoder)
    with pytest.raises(ConfigError, match="aggregation"):
        build_model("content", {"aggregation": "mode"})


@pytest.mark.slow
def test_movielens_item_text_with_knowledge_graph():
    from metarec.data.sources import movielens

    ds = movielens.load("ml-100k")
    texts = item_texts(ds, "{title} ({year}). Genres: {genres}. Facts: {kg}")
    assert texts[0].startswith("Toy Story (1995). Genres: Animation Children's Comedy. Facts: ")
    facts = [t.split("Facts:")[1].strip() for t in texts]
    assert sum(bool(f) for f in facts) >= 1500  # 1,598 of 1,682 films are linked to Freebase
    # Freebase ids are named by the films that share them; at most max_facts = 10 facts
    assert "actor (also: " in facts[0] and "m.0" not in facts[0] and facts[0].count("(also: ") <= 10
