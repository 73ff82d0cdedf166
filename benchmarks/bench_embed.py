"""Benchmark: LLM encoding throughput and the embedding cache on this machine.

For each corpus: a first run with an empty cache (everything encoded), then a second run from a new
cache object, as a new process would (everything read from disk). Writes
benchmarks/results/embed.json and embed.md. Usage: python benchmarks/bench_embed.py
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
AMAZON = ROOT.parent / "shared" / "data" / "amazon-musical-instruments" / "Musical_Instruments_5.json.gz"


def corpora() -> list[tuple[str, str, list[str]]]:
    from metarec.data.sources import amazon, movielens
    from metarec.text.templates import item_texts, user_texts

    ml = movielens.load("ml-100k")
    item_tpl, user_tpl = "{title} ({year}). Genres: {genres}.", "A {age}-year-old {gender} {occupation}."
    texts = [
        ("ml-100k items", item_tpl, item_texts(ml, item_tpl)),
        ("ml-100k users", user_tpl, user_texts(ml, user_tpl)),
    ]
    if AMAZON.exists():
        az = amazon.load(AMAZON)
        tpl = "{reviews}"
        texts.append(("amazon-mi items (10 review summaries)", tpl, item_texts(az, tpl, max_reviews=10)))
    return texts


def main() -> int:
    from metarec.text.cache import EmbeddingCache
    from metarec.text.encoders import SentenceTransformerEncoder
    from metarec.utils import versions

    threads = int(os.environ.get("METAREC_THREADS", "2"))
    t0 = time.perf_counter()
    enc = SentenceTransformerEncoder(threads=threads)
    load_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, tpl, texts in corpora():
            first = EmbeddingCache(enc, tpl, root=root)
            t = time.perf_counter()
            first.encode(texts, batch_size=64)
            cold_s = time.perf_counter() - t
            second = EmbeddingCache(enc, tpl, root=root)
            t = time.perf_counter()
            second.encode(texts, batch_size=64)
            warm_s = time.perf_counter() - t
            rows.append(
                {
                    "corpus": name,
                    "texts": len(texts),
                    "distinct": first.last.unique,
                    "mean_chars": sum(map(len, texts)) / len(texts),
                    "first_run_s": cold_s,
                    "texts_per_s": first.last.encoded / first.last.seconds,
                    "second_run_s": warm_s,
                    "second_run_encoded": second.last.encoded,
                    "speedup": cold_s / warm_s,
                }
            )
            print(rows[-1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    payload = {"encoder": enc.name, "threads": threads, "model_load_s": load_s, "peak_memory_mb": peak,
               "runs": rows, "versions": versions()}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embed.json").write_text(json.dumps(payload, indent=2))
    md = [
        f"# Embedding throughput and cache ({enc.name}, {threads} torch threads, CPU)",
        "",
        f"Model load {load_s:.1f} s; peak memory {peak:.0f} MiB. Second run = a new cache object reading disk.",
        "",
        "| corpus | texts | distinct | mean chars | first run s | texts/s | second run s | re-encoded | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['corpus']} | {r['texts']:,} | {r['distinct']:,} | {r['mean_chars']:.0f} | {r['first_run_s']:.2f} | "
            f"{r['texts_per_s']:.0f} | {r['second_run_s']:.3f} | {r['second_run_encoded']} | {r['speedup']:.0f}x |"
        )
    md += ["", f"Machine: {versions()['platform']}; produced by `python benchmarks/bench_embed.py`.", ""]
    (RESULTS / "embed.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
