"""Benchmark: the cost of text towers that learn (issue 12), on ml-100k, CPU.

- LoRA tuning of MiniLM on all ml-100k co-used pairs with the default settings (`metarec llm tune`);
- encoding throughput of the 1,682 item titles: frozen MiniLM, MiniLM with the adapter merged into its
  weights (how metarec loads it), and with the adapter attached unmerged (peft's default, for reference);
- the generative LM as an encoder (SmolLM2-135M, middle layer) and the distilled source's fit.
Throughput is the median of 3 runs outside the embedding cache. Writes
benchmarks/results/text_tuning.{json,md}. Usage: python benchmarks/bench_text_tuning.py
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _throughput(encode, texts: list[str], reps: int = 3) -> float:  # type: ignore[no-untyped-def]
    encode(texts[:64])  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        encode(texts)
        times.append(time.perf_counter() - t)
    return len(texts) / statistics.median(times)


def main() -> int:
    import torch

    from metarec.data.sources import movielens
    from metarec.features import DistilledSource
    from metarec.text.encoders import SentenceTransformerEncoder, build_encoder, resolve_model_path
    from metarec.text.templates import item_texts
    from metarec.text.tuning import TuneConfig, cointeraction_pairs, tune_encoder
    from metarec.utils import versions

    threads = int(os.environ.get("METAREC_THREADS", "2"))
    torch.set_num_threads(threads)
    ds = movielens.load("ml-100k")
    texts = item_texts(ds, "{title}")
    cfg = TuneConfig(threads=threads)
    out: dict = {"threads": threads, "tune_config": cfg.model_dump(), "versions": versions()}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = cointeraction_pairs(ds, cfg.pairs_per_epoch, cfg.window, cfg.seed)
        summary = tune_encoder("all-MiniLM-L6-v2", texts, pairs, cfg, Path(tmp) / "adapter")
        out["tune"] = {k: summary[k] for k in ("seconds", "trainable_params", "total_params", "pairs", "losses")}
        print("tuned", out["tune"], flush=True)
        frozen = SentenceTransformerEncoder(threads=threads)
        merged = SentenceTransformerEncoder(threads=threads, adapter=str(Path(tmp) / "adapter"))
        from peft import PeftModel
        from sentence_transformers import SentenceTransformer

        unmerged = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
        unmerged[0].auto_model = PeftModel.from_pretrained(unmerged[0].auto_model, str(Path(tmp) / "adapter"))
        rates = {
            "frozen MiniLM": _throughput(lambda t: frozen.encode(t, 64), texts),
            "MiniLM + LoRA merged (metarec)": _throughput(lambda t: merged.encode(t, 64), texts),
            "MiniLM + LoRA unmerged (peft)": _throughput(lambda t: unmerged.encode(t, batch_size=64), texts),
        }
    lm_texts = item_texts(ds, "Movie: {title} ({year})")
    t = time.perf_counter()
    lm = build_encoder({"encoder": "causal-lm", "threads": threads})
    out["lm_load_s"] = time.perf_counter() - t
    rates["SmolLM2-135M middle layer (causal-lm)"] = _throughput(lambda t: lm.encode(t, 64), lm_texts, reps=1)
    out["texts_per_s"] = rates
    out["adapter_vs_frozen"] = rates["MiniLM + LoRA merged (metarec)"] / rates["frozen MiniLM"]
    spec = {"text": {"template": "{title}"}, "lm": {"type": "text", "template": "Movie: {title} ({year})",
                                                     "text": {"encoder": "causal-lm", "threads": threads}}}  # fmt: skip
    src = DistilledSource(inputs=spec)
    src.fit_transform(ds)  # vectors cached by now: this times the teacher and the student
    t = time.perf_counter()
    src.fit_transform(ds)
    out["distilled_fit_s"] = time.perf_counter() - t
    out["distilled_alpha"] = src.alpha_
    out["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_tuning.json").write_text(json.dumps(out, indent=2, default=str))
    tune = out["tune"]
    md = [
        f"# Text towers that learn: cost on ml-100k ({threads} torch threads, CPU)",
        "",
        f"LoRA tuning of MiniLM (r={cfg.rank} on {', '.join(cfg.target_modules)}; {tune['trainable_params']:,} of "
        f"{tune['total_params']:,} weights trained), {tune['pairs']:,} co-used pairs x {cfg.epochs} epoch(s), "
        f"batch {cfg.batch_size}: **{tune['seconds']:.0f} s** (issue target: <= 15 min); loss "
        f"{' -> '.join(f'{x:.3f}' for x in tune['losses'])}.",
        "",
        "| encoder | item titles / s |",
        "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in rates.items()],
        "",
        f"Adapter (merged) vs frozen: **{out['adapter_vs_frozen']:.2f}x** (issue target: >= 0.8x). "
        f"Generative LM load {out['lm_load_s']:.0f} s. Distilled source fit (ALS teacher + RidgeCV student, "
        f"cross-fitted, vectors cached): {out['distilled_fit_s']:.1f} s, chosen ridge alpha {src.alpha_:g}. "
        f"Peak memory {out['peak_memory_mb']:.0f} MiB.",
        "",
        f"Commit {versions().get('git_commit', '?')}; produced by `python benchmarks/bench_text_tuning.py`.",
        "",
    ]
    (RESULTS / "text_tuning.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
