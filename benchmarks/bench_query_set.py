"""Benchmark: the query-set protocol (MeLU / RecBole-MetaRec) on ml-100k, run from a CSV + predefined split.

Exports ml-100k with five split seeds as columns (`metarec data split`), then evaluates
configs/ml-100k-query-set.toml, which reads that CSV like any user's file. Results land in
benchmarks/results/evaluate_ml-100k-query-set.* (through bench_evaluate.py).

    python benchmarks/bench_query_set.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = ROOT / "runs" / "data" / "ml-100k-query-set.csv"
    subprocess.run([sys.executable, "-m", "metarec.cli", "data", "split", "ml-100k", "--out", str(out),
                    "--seeds", "5"], check=True, cwd=ROOT)  # fmt: skip
    cmd = [sys.executable, "benchmarks/bench_evaluate.py", "configs/ml-100k-query-set.toml"]
    return subprocess.run(cmd, check=False, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
