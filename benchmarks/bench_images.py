"""Benchmark: images as an item feature source, fused with text in the item tower (ablation).

None of the shipped datasets has item pictures (ml-100k has no posters; the Amazon MI 5-core file has
no image URLs), so this runs where images exist: synthetic items with planted topics, each with a
generated picture in its topic's colour (`synthetic.topic_images`), written as a user would have them
(interactions.csv, items.csv with an `image` column of file names, a folder of PNGs) and read through
the CSV loader. The vision model is the packaged, ImageNet-trained EfficientNet-Lite0 (real weights).

Two catalogues: every item with its title, and one where half the items lost their title (as real
catalogues lose descriptions): the cold-item protocol asks how well new items are ranked from text
only, image only, and text + image. Writes benchmarks/results/images.{json,md}.

    python benchmarks/bench_images.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOURCES = {
    "text": {"text": {"template": "{title}"}, "id": {}},
    "image": {"image": {"type": "image", "root": "{root}"}, "id": {}},
    "text+image": {"text": {"template": "{title}"}, "image": {"type": "image", "root": "{root}"}, "id": {}},
}


def config(folder: Path, name: str) -> str:
    models = "\n".join(
        f'[models."maml {label}"]\ntype = "meta"\nepochs = 30\ndim = 32\nitem_features = '
        + json.dumps(spec).replace('"{root}"', json.dumps(str(folder / "images"))).replace('": ', '" = ')
        for label, spec in SOURCES.items()
    )
    return f"""name = "{name}"
seed = 42
[dataset]
source = "csv"
interactions = "{folder / "interactions.csv"}"
items = "{folder / "items.csv"}"
[protocols.cold-item]
n_folds = 3
[evaluation]
ks = [10]
metrics = ["ndcg", "recall", "hr"]
report_metrics = ["ndcg@10", "recall@10"]
compare_to = "maml text"
[models.random]
{models}
"""


def main() -> int:
    from metarec.config import load_config
    from metarec.data.schema import ITEM, USER
    from metarec.data.sources import synthetic
    from metarec.eval.experiment import run_experiment
    from metarec.eval.report import markdown
    from metarec.utils import git_commit, versions

    os.environ.setdefault("METAREC_GIT_COMMIT", git_commit() or "unknown")
    ds = synthetic.make(n_users=600, n_items=400, seed=11)
    out: dict = {"versions": versions(), "catalogues": {}}
    md = ["# Images as an item feature source: ablation (cold items)", "",
          "Synthetic items with planted topics and a generated picture each (topic colour, noise, a random "
          "square); vision model: packaged ImageNet-trained EfficientNet-Lite0 (1280-d, offline). Read through the "
          "CSV loader (`image` column of file names). MAML with an ID residual plus the named sources; cold items "
          "(3 folds) are ranked from their features only. No shipped dataset has pictures: this measures the "
          "fusion where images exist, not a real catalogue's pictures.", ""]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for variant, drop in (("all titles", 0.0), ("half the titles missing", 0.5)):
            folder = Path(tmp) / variant.replace(" ", "-")
            folder.mkdir()
            items = ds.items.assign(image=synthetic.topic_images(ds.items, folder / "images", seed=11))
            rng = np.random.default_rng(0)
            items.loc[rng.random(len(items)) < drop, "title"] = ""
            items.to_csv(folder / "items.csv", index=False)
            inter = ds.interactions.assign(
                user_id=ds.users["user_id"].to_numpy()[ds.interactions[USER].to_numpy()],
                item_id=ds.items["item_id"].to_numpy()[ds.interactions[ITEM].to_numpy()],
            )
            inter[["user_id", "item_id", "rating", "timestamp"]].to_csv(folder / "interactions.csv", index=False)
            (folder / "config.toml").write_text(config(folder, f"images-{variant.replace(' ', '-')}"))
            t0 = time.perf_counter()
            result = run_experiment(load_config(folder / "config.toml"), progress=False, log=print)
            summary = result.summary()
            out["catalogues"][variant] = {"results": summary, "seconds": time.perf_counter() - t0,
                                          "timings_seconds": result.timings}  # fmt: skip
            body = markdown(result).split("\n", 1)[1].replace("\n## ", "\n### ")  # under this catalogue's heading
            md += [f"## {variant}", body]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "images.json").write_text(json.dumps(out, indent=2, default=str))
    md.append(f"\nMachine: {versions()['platform']}; commit `{versions().get('git_commit')}`; produced by "
              "`python benchmarks/bench_images.py`.\n")  # fmt: skip
    (RESULTS / "images.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
