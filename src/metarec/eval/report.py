"""Reports of an experiment: terminal table, results.json, results.md and a plot, in a run folder."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from metarec.eval.experiment import ExperimentResult
from metarec.utils import versions


def _fmt(entry: dict[str, Any] | None, metric: str) -> str:
    if entry is None:
        return ""
    if "skipped" in entry:
        return "n/a"
    m = entry["metrics"].get(metric) or {}
    if not m:  # e.g. MAE of a model that ranks but predicts no rating
        return "n/a"
    return f"{m['mean']:.4f} ± {(m['high'] - m['low']) / 2:.4f}"


def label_table(summary: dict[str, Any], metric: str) -> list[list[str]]:
    """Transposed view for narrow terminals: rows are protocol labels, columns are models."""
    models = _models(summary)
    rows = [["protocol", *models]]
    for lab, cells in summary.items():
        rows.append([lab, *[_fmt(cells.get(m), metric) for m in models]])
    return rows


def _labels(summary: dict[str, Any]) -> list[str]:
    return list(summary)


def _models(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(m for cells in summary.values() for m in cells))


def metric_table(summary: dict[str, Any], metric: str) -> list[list[str]]:
    """Rows: models; columns: protocol labels; cells: mean ± CI half-width."""
    labels = _labels(summary)
    rows = [["model", *labels]]
    for model in _models(summary):
        rows.append([model, *[_fmt(summary[lab].get(model), metric) for lab in labels]])
    return rows


def _md(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def print_tables(result: ExperimentResult, console: Console | None = None) -> None:
    console = console or Console()
    summary = result.summary()
    for metric in result.config["evaluation"]["report_metrics"]:
        rows = label_table(summary, metric)
        label_w = max(len(r[0]) for r in rows) + 3
        per_table = max(1, (console.width - label_w) // 19)  # a cell "0.5171 ± 0.0185" + borders
        models = rows[0][1:]
        for start in range(0, len(models), per_table):
            cols = slice(1 + start, 1 + start + per_table)
            part = f" ({start // per_table + 1}/{-(-len(models) // per_table)})" if len(models) > per_table else ""
            table = Table(title=f"{result.config['name']}: {metric} (mean ± 95% CI over users){part}")
            table.add_column("protocol", no_wrap=True)
            for h in rows[0][cols]:
                table.add_column(h, justify="right", no_wrap=True)
            for r in rows[1:]:
                table.add_row(r[0], *r[cols])
            console.print(table)
    skipped = {(lab, m): e["skipped"] for lab, cells in summary.items() for m, e in cells.items() if "skipped" in e}
    if skipped:
        console.print(
            "n/a = not measurable, not zero: " + "; ".join(sorted({f"{m}: {why}" for (_, m), why in skipped.items()}))
        )


def _ranking_note(cfg: dict[str, Any]) -> str:
    """What the models rank, in the words of the protocols this run used."""
    within = [name for name, p in cfg["protocols"].items()
              if p.get("type", name) == "query-set" or p.get("rank_within") == "query"
              or p.get("explicit")]  # fmt: skip
    full = "Full ranking over all candidates, seen items excluded"
    if not within:
        return full
    note = f"{', '.join(within)}: each user's query items ranked among themselves only"
    return note if len(within) == len(cfg["protocols"]) else f"{full} ({note})"


def beyond_accuracy(summary: dict[str, Any], main_metric: str) -> list[str]:
    """Markdown lines: per protocol, how widely and how far into the tail each model recommends, at the
    main metric's cut-off (catalogue coverage, Gini of exposure, novelty in bits, long-tail share)."""
    k = main_metric.split("@")[1] if "@" in main_metric else "10"
    names = [f"coverage@{k}", f"gini@{k}", f"novelty@{k}", f"tail@{k}"]
    out = [f"## Beyond accuracy (@{k})", "",
           "Coverage: share of the candidates recommended to anyone; Gini: inequality of exposure (0 = even); "
           "novelty: mean -log2 popularity; tail: share of recommended items outside the 20% most popular.",
           ""]  # fmt: skip
    for lab, cells in summary.items():
        rows = [["model", *names]]
        for model, e in cells.items():
            if "skipped" in e:
                continue
            vals = {**{m: v["mean"] for m, v in e.get("metrics", {}).items()}, **e.get("aggregate", {})}
            rows.append([model, *(f"{vals[n]:.4f}" if n in vals else "n/a" for n in names)])
        if len(rows) > 1 and any(r[1:] != ["n/a"] * 4 for r in rows[1:]):
            out += [f"### {lab}", "", _md(rows), ""]
    return out if len(out) > 4 else []


def kg_section(ds: dict[str, Any]) -> list[str]:
    """Coverage of the dataset's knowledge graph, and of the cold items a protocol asks about."""
    if "kg_triples" not in ds:
        return []
    n = max(1, int(ds["items"]))
    rows = [["what", "count", "share of items"],
            ["triples", f"{ds['kg_triples']:,}", ""], ["relations", str(ds["kg_relations"]), ""],
            ["items linked to an entity", f"{ds['kg_linked_items']:,}", f"{ds['kg_linked_items'] / n:.1%}"],
            ["items with facts", f"{ds['kg_items_with_facts']:,}", f"{ds['kg_items_with_facts'] / n:.1%}"]]  # fmt: skip
    for protocol, c in ds.get("kg_cold_items", {}).items():
        share = c["with_facts"] / max(1, c["cold_items"])
        rows.append(
            [f"{protocol}: cold items with facts", f"{c['with_facts']:,} of {c['cold_items']:,}", f"{share:.1%}"]
        )
    dropped = {k: v for k, v in (ds.get("kg_dropped") or {}).items() if v}
    out = ["## Knowledge graph", "", _md(rows), ""]
    if dropped:
        out += ["Dropped while loading: " + ", ".join(f"{k} {v}" for k, v in dropped.items()) + ".", ""]
    return out


def markdown(result: ExperimentResult) -> str:
    summary = result.summary()
    cfg = result.config
    ds = result.dataset
    parts = [
        f"# {cfg['name']}",
        "",
        f"Dataset `{ds['name']}`: {ds['interactions']:,} interactions, {ds['users']:,} users, "
        f"{ds['items']:,} items (fingerprint `{ds['fingerprint']}`). Seed {cfg['seed']}. "
        + _ranking_note(cfg)
        + "; mean ± 95% t-interval half-width over users.",
        "",
    ]
    for metric in cfg["evaluation"]["report_metrics"]:
        parts += [f"## {metric}", "", _md(metric_table(summary, metric)), ""]
    parts += beyond_accuracy(summary, cfg["evaluation"]["main_metric"])
    refs = cfg["evaluation"].get("compare_to") or []
    refs = [refs] if isinstance(refs, str) else list(refs)
    main = cfg["evaluation"]["main_metric"]
    for ref in refs:
        comp = [["protocol", "model", f"{main} ratio to {ref}", "95% paired bootstrap"]]
        for lab, cells in summary.items():
            for model, e in cells.items():
                c = e.get(f"vs_{ref}")
                if c:
                    r = c["ratio"]
                    comp.append([lab, model, f"{r['mean']:.3f}", f"[{r['low']:.3f}, {r['high']:.3f}]"])
        if len(comp) > 1:
            parts += [f"## Paired comparison with {ref}", "", _md(comp), ""]
    comp = [["protocol", "model", "best of the others", f"{main} ratio", "95% paired bootstrap"]]
    for lab, cells in summary.items():
        for model, e in cells.items():
            c = e.get("vs_best")
            if c and model not in cfg["evaluation"]["compare_to_best"]:
                r = c["ratio"]
                comp.append([lab, model, c["reference"], f"{r['mean']:.3f}", f"[{r['low']:.3f}, {r['high']:.3f}]"])
    if len(comp) > 1:
        listed = ", ".join(cfg["evaluation"]["compare_to_best"])
        parts += [f"## Paired comparison with the best of {listed}", "", _md(comp), ""]
    parts += kg_section(ds)
    parts += ["## All metrics", ""]
    for lab, cells in summary.items():
        metrics = list(dict.fromkeys(m for e in cells.values() for m in e.get("metrics", {})))
        rows = [["model", "users", *metrics]]
        for model, e in cells.items():
            n = str(e.get("n_users", ""))
            rows.append([model, n, *[_fmt(e, m) for m in metrics]])
        agg = list(dict.fromkeys(m for e in cells.values() for m in e.get("aggregate", {})))
        for a in agg:
            rows[0].append(a)
            for row, e in zip(rows[1:], cells.values(), strict=True):
                row.append(f"{e['aggregate'][a]:.4f}" if a in e.get("aggregate", {}) else "n/a")
        parts += [f"### {lab}", "", _md(rows), ""]
    parts += ["## Time and memory", "", "| step | seconds |", "|---|---|"]
    parts += [f"| {k} | {v:.2f} |" for k, v in result.timings.items()]
    parts += ["", f"Peak memory (process RSS): {result.peak_memory_mb:.0f} MiB", ""]
    return "\n".join(parts)


def plot_shots(summary: dict[str, Any], name: str, path: Path, metric: str = "ndcg@10") -> Path | None:
    """Metric against k shots, one line per model with its 95% CI, one panel per k-shot protocol.

    Takes the JSON summary (not the live result) so a plot can be redrawn from any results.json."""
    by_proto: dict[str, dict[str, list[tuple[int, dict]]]] = {}
    for cells in summary.values():
        for model, e in cells.items():
            if e["k"] is None or "skipped" in e or metric not in e["metrics"]:
                continue
            by_proto.setdefault(e["protocol"], {}).setdefault(model, []).append((e["k"], e["metrics"][metric]))
    if not by_proto:
        return None
    fig, axes = plt.subplots(1, len(by_proto), figsize=(6 * len(by_proto), 4.2), squeeze=False)
    for ax, (proto, models) in zip(axes[0], by_proto.items(), strict=True):
        colors = [plt.get_cmap("tab20")(i) for i in range(20)]
        for i, (model, pts) in enumerate(models.items()):
            pts.sort()
            ks = [k for k, _ in pts]
            mean = [m["mean"] for _, m in pts]
            color = colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            ax.plot(ks, mean, marker="os^Dv"[i % 5], color=color, linestyle="-" if i < 10 else "--", label=model)
            ax.fill_between(ks, [m["low"] for _, m in pts], [m["high"] for _, m in pts], color=color, alpha=0.12)
        shown = sorted({k for pts in models.values() for k, _ in pts})
        if shown and shown[0] == 0:  # k = 0 (no support) has no place on a log axis: linear near 0
            ax.set_xscale("symlog", linthresh=1)
        else:
            ax.set_xscale("log")
        ax.set_xticks(shown)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("k (support interactions per user)")
        ax.set_ylabel(metric)
        ax.set_title(f"{name}: {proto}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_run(result: ExperimentResult, runs_dir: str | Path = "runs", config_path: str | Path | None = None) -> Path:
    """runs/<name>-<time>/: config, versions, results.json / .md and the k-shot plot."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", result.config["name"])
    out = Path(runs_dir) / f"{safe}-{stamp}"
    n = 1
    while out.exists():
        out = Path(runs_dir) / f"{safe}-{stamp}-{n}"
        n += 1
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(result.config, indent=2, default=str))
    if config_path is not None:
        shutil.copy(config_path, out / "config.toml")
    (out / "versions.json").write_text(json.dumps(versions(), indent=2))
    payload = {
        "name": result.config["name"],
        "dataset": result.dataset,
        "results": result.summary(),
        "timings_seconds": result.timings,
        "peak_memory_mb": result.peak_memory_mb,
        "versions": versions(),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "results.md").write_text(markdown(result))
    plot_shots(
        result.summary(), result.config["name"], out / "ndcg_vs_k.png", result.config["evaluation"]["main_metric"]
    )
    return out
