"""Ray Data for the heavy data steps: reading interaction tables (CSV / Parquet / JSON lines, a file or a
folder of part files, read block by block in parallel) and text encoding on an actor pool in which each
worker loads the encoder once.

The embedding cache stays the single store: `encode_texts` looks every text up in it first and sends only
the missing ones to Ray; their vectors come back in order and are written to the cache in one transaction,
exactly as a local encode would. So a second run, local or distributed, encodes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec.distributed.settings import DistributedSettings as DistributedConfig
from metarec.utils import require


class _EncodeActor:
    """One per worker: loads the encoder once, then encodes the batches Ray Data hands it."""

    def __init__(self, text_cfg: dict[str, Any], threads: int) -> None:
        import os

        # the worker owns `threads` cores: the tokenizer's own (Rayon) pool would take every core of the node
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == 1 else "true"
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
        # longest first, as sentence-transformers orders a local encode: each worker batch then holds texts
        # of about one length, so little of a batch is padding (unsorted batches pad to their longest text)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows = ray.data.from_items([{"row": int(i), "text": texts[i]} for i in order], override_num_blocks=blocks)
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


def read_table_ray(path: Path, sep: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """`data.sources.tabular.read_table` on Ray Data: the same table, read in parallel blocks.

    CSV cells stay strings, as in the local reader (pyarrow is told every column's type is string, so
    ids keep leading zeros)."""
    ray = require("ray", "ray")
    import pyarrow as pa
    from pyarrow import csv

    from metarec.data.sources.tabular import part_files, table_format
    from metarec.errors import DataError

    fmt = table_format(path)
    context = ray.data.DataContext.get_current()
    keep = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # row order is time order when there is no timestamp
    try:
        if fmt == "parquet":
            ds = ray.data.read_parquet(str(path), file_extensions=["parquet", "pq"])
        elif fmt == "json":
            ds = ray.data.read_json(str(path), file_extensions=["jsonl", "json", "ndjson", "gz"])
        else:
            first = path if path.is_file() else part_files(path)[0]
            sep = sep or ("\t" if first.suffix in (".tsv", ".tab") else ",")
            header = pd.read_csv(first, sep=sep, nrows=0, encoding=encoding).columns
            ds = ray.data.read_csv(
                str(path),
                read_options=csv.ReadOptions(encoding=encoding),
                parse_options=csv.ParseOptions(delimiter=sep, newlines_in_values=True),
                convert_options=csv.ConvertOptions(
                    column_types={c: pa.string() for c in header}, strings_can_be_null=False
                ),
            )
        return ds.to_pandas()
    except DataError:
        raise
    except Exception as exc:  # Ray wraps the reader's error; the user needs the file and the reason
        raise DataError(f"{path}: Ray Data cannot read it as a {fmt} table ({type(exc).__name__}: {exc})") from None
    finally:
        context.execution_options.preserve_order = keep
