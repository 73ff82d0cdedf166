"""Benchmark: the full evaluate pipeline per dataset, with the time of each step and peak memory.

Each config runs in its own process so that peak memory (RSS) belongs to that dataset alone.
Writes benchmarks/results/evaluate_<name>.json and .md. Usage:

    python benchmarks/bench_evaluate.py [configs/ml-100k.toml configs/amazon-mi.toml ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT = [
    "configs/ml-100k.toml",
    "configs/amazon-mi.toml",
    "configs/ml-100k-meta.toml",
    "configs/ml-100k-ablation.toml",
    "configs/ml-100k-explicit.toml",
    "configs/amazon-mi-meta.toml",
    "configs/ml-100k-items.toml",
    "configs/ml-100k-llm-rerank.toml",  # needs `metarec llm fetch` (make bench runs it first)
    "configs/ml-100k-text.toml",  # the LM as an encoder also needs `metarec llm fetch`
    "configs/amazon-mi-text.toml",
    "configs/ml-100k-kg.toml",  # the knowledge graph (PyKEEN embeddings, facts as text, CKE)
    "configs/ml-100k-bridge.toml",  # bridge users: source history vs none, target domain only
    "configs/ml-100k-next-item.toml",  # SASRec / GRU4Rec, leave-last-out, 3 seeds
    "configs/amazon-mi-next-item.toml",
    "configs/ml-100k-cold-user-seq.toml",  # cold users: with / without KG, the sequence-aware set encoder
]


def run_one(config: str) -> None:
    from metarec.config import load_config
    from metarec.eval.experiment import run_experiment
    from metarec.eval.report import markdown, plot_shots
    from metarec.utils import versions

    cfg = load_config(ROOT / config)
    result = run_experiment(cfg, progress=False)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config,
        "dataset": result.dataset,
        "timings_seconds": result.timings,
        "peak_memory_mb": result.peak_memory_mb,
        "results": result.summary(),
        "versions": versions(),
    }
    (RESULTS / f"evaluate_{cfg['name']}.json").write_text(json.dumps(payload, indent=2, default=str))
    md = markdown(result)
    md += f"\nMachine: {versions()['platform']}; commit `{versions().get('git_commit')}`; "
    md += f"produced by `python benchmarks/bench_evaluate.py {config}`.\n"
    (RESULTS / f"evaluate_{cfg['name']}.md").write_text(md)
    main = cfg["evaluation"]["main_metric"]
    plot_shots(result.summary(), cfg["name"], RESULTS / f"evaluate_{cfg['name']}_{main}_vs_k.png", main)
    print(f"{cfg['name']}: {result.timings['total']:.1f}s, peak {result.peak_memory_mb:.0f} MiB")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--one":
        run_one(argv[1])
        return 0
    configs = argv or DEFAULT
    from metarec.utils import git_commit

    os.environ["METAREC_GIT_COMMIT"] = git_commit() or "unknown"  # read once: the workers inherit it
    from metarec.config import load_config

    for config in configs:
        data = load_config(ROOT / config)["dataset"]
        missing = [data[k] for k in ("path", "interactions") if data.get(k) and not (ROOT / data[k]).exists()]
        if missing:
            print(f"{config}: skipped, its data is not on this machine ({', '.join(map(str, missing))})")
            continue
        rc = subprocess.call([sys.executable, __file__, "--one", config], cwd=ROOT)
        if rc != 0:
            print(f"{config}: failed (exit {rc})", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
