"""Ray Data for the heaviest data step, text encoding: an actor pool in which each worker loads the
encoder once.

The embedding cache stays the single store: `encode_texts` looks every text up in it first and sends only
the missing ones to Ray; their vectors come back in order and are written to the cache in one transaction,
exactly as a local encode would. So a second run, local or distributed, encodes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metarec.distributed.settings import DistributedSettings as DistributedConfig
from metarec.utils import require


class _EncodeActor:
    """One per worker: loads the encoder once, then encodes the batches Ray Data hands it."""

    def __init__(self, text_cfg: dict[str, Any], threads: int) -> None:
        from metarec.text.registry import get_encoder

        self.encoder = get_encoder({**text_cfg, "threads": threads})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = self.encoder.encode(list(batch["text"]), batch_size=len(batch["text"]))  # one Ray batch, one pass
        return {"row": batch["row"], "vec": np.asarray(vecs, np.float32)}


class RayDataEncoder:
    """A `TextEncoder` whose `encode` runs on a Ray Data actor pool of `num_workers` encoders.

    `name` and `dim` are those of the local encoder it stands for, so the cache namespace (and every
    cached vector) is shared between local and distributed runs."""

    def __init__(self, local: Any, text_cfg: dict[str, Any], dcfg: DistributedConfig) -> None:
        self.local, self.text_cfg, self.dcfg = local, dict(text_cfg), dcfg
        self.name, self.dim = local.name, local.dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        """`batch_size` is ignored: the workers' batches are `[distributed] encode_batch_size`."""
        ray = require("ray", "ray")
        batch_size = self.dcfg.encode_batch_size
        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        d = self.dcfg
        threads = max(1, int(d.cpus_per_worker))
        # blocks made on the driver (no task needs a CPU the encoders hold): enough for every worker to get
        # work, each a few encoder batches
        blocks = max(d.num_workers, -(-len(texts) // (batch_size * 4)))
        rows = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=blocks)
        out = rows.map_batches(
            _EncodeActor,
            fn_constructor_kwargs={"text_cfg": self.text_cfg, "threads": threads},
            batch_size=batch_size,
            batch_format="numpy",
            concurrency=d.num_workers,
            num_cpus=d.cpus_per_worker,
        ).to_pandas()
        vecs = np.zeros((len(texts), self.dim), np.float32)
        vecs[out["row"].to_numpy()] = np.stack(out["vec"].to_numpy())
        return vecs
