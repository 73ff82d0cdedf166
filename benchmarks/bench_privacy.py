"""Privacy benchmark: what user-level DP and federated training cost in quality, and what they hide.

One run, the same users throughout: ml-100k cold-user protocol (k = 5 earliest items of each test user,
full ranking, NDCG@10), the folds asked for. Per fold: popularity; non-private MAML (the
`[models.maml]` of configs/ml-100k-meta.toml); MAML with user-level DP-SGD at epsilon 1, 3, 8
(delta = 1 / training users; settings chosen on meta-valid users, `select_privacy.py`); MAML trained
federated over 10 Flower clients. Then the loss-threshold membership attack, training users vs the
fold's held-out test users, for every meta model. Writes benchmarks/results/privacy.{json,md} and
privacy_utility_vs_epsilon.png.

    python benchmarks/bench_privacy.py [--folds 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EPSILONS = (1.0, 3.0, 8.0)
# chosen on fold 0's meta-valid users at epsilon = 8 (benchmarks/results/selection_privacy.md)
DP = {"patience": 20, "lr": 3e-3}
DP_CLIP = 0.2
FED = {"lr": 3e-3, "federated": {"clients": 10, "rounds": 30, "local_epochs": 5}}


def main() -> None:
    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.data.splits import make_folds
    from metarec.eval.evaluate import evaluate_task
    from metarec.eval.stats import mean_ci, paired_bootstrap
    from metarec.meta.tasks import time_rank_matrix
    from metarec.models import build_model
    from metarec.privacy.membership import loss_threshold_auc

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", default="0,1,2,3,4")
    args = ap.parse_args()
    chosen = [int(f) for f in args.folds.split(",")]
    cfg = load_config(ROOT / "configs/ml-100k-meta.toml", ["protocols.cold-user.shots=[5]"])
    seed = int(cfg["seed"])
    ds = load_dataset(cfg["dataset"])
    params = dict(cfg["protocols"]["cold-user"])
    params.pop("type", None)
    ev = cfg["evaluation"]
    maml = {k: v for k, v in cfg["models"]["maml"].items() if k != "type"}
    models: dict[str, tuple[str, dict]] = {"popularity": ("popularity", {}), "maml": ("meta", maml)}
    for eps in EPSILONS:
        # reproducible: noise and batches from the seed, so the table can be re-run number for number (a
        # deployment leaves it off: whoever holds the artefact could replay the noise)
        dp = {"epsilon": eps, "max_grad_norm": DP_CLIP, "reproducible": True}
        models[f"maml-dp-eps{eps:g}"] = ("meta", {**maml, **DP, "dp": dp})
    models["maml-federated"] = ("meta", {**maml, **FED})
    ranks_all = time_rank_matrix(ds)
    per_user: dict[str, list[np.ndarray]] = {name: [] for name in models}
    fits: list[dict] = []
    attacks: dict[str, list[dict]] = {}
    for fold in make_folds(ds, "cold-user", params, seed):
        if fold.fold not in chosen:
            continue
        (task,) = fold.tasks
        pop = np.bincount(fold.train.interactions["item"].to_numpy(), minlength=ds.n_items)
        n_train = int(fold.train.interactions["user"].nunique())
        rng = np.random.default_rng(seed + fold.fold)
        train_users = np.unique(fold.train.interactions["user"].to_numpy())
        members = ranks_all[np.sort(rng.choice(train_users, len(task.users), replace=False))]
        outsiders = ranks_all[np.sort(task.users)]
        for name, (kind, p) in models.items():
            t = time.perf_counter()
            text = {"text": cfg.get("text")} if kind == "meta" else {}
            model = build_model(kind, {**text, **p}, seed=seed + fold.fold).fit(fold.train, valid=fold.valid)
            seconds = time.perf_counter() - t
            r = evaluate_task(model, task, list(ev["ks"]), ("ndcg",), pop, n_train, int(ev["chunk_elements"]), seed)
            per_user[name].append(r.per_user["ndcg@10"])
            info = getattr(model, "fit_info_", {})
            score = float(np.mean(r.per_user["ndcg@10"]))
            fit = {"fold": fold.fold, "model": name, "seconds": seconds, "ndcg@10": score}
            if "privacy" in info:
                fit["privacy"] = info["privacy"]
            if "federated" in info:
                fit["federated"] = info["federated"]
            if kind == "meta":
                fit["best_epoch"], fit["epochs"] = info.get("best_epoch"), info.get("epochs")
                attack = loss_threshold_auc(model, members, outsiders)
                attacks.setdefault(name, []).append({"fold": fold.fold, **attack})
            fits.append(fit)
            print(json.dumps({k: v for k, v in fit.items() if k != "federated"}), flush=True)
    base = np.concatenate(per_user["maml"])
    popu = np.concatenate(per_user["popularity"])
    rows = []
    for name in models:
        v = np.concatenate(per_user[name])
        ci = mean_ci(v)
        vs = paired_bootstrap(v, base, kind="ratio", seed=seed)
        vp = paired_bootstrap(v, popu, kind="ratio", seed=seed)
        mine = [f for f in fits if f["model"] == name]
        row = {"model": name, "users": len(v), "ndcg@10": ci.mean, "ci": [ci.low, ci.high],
               "vs_maml": vs.mean, "vs_maml_ci": [vs.low, vs.high], "vs_popularity": vp.mean,
               "vs_popularity_ci": [vp.low, vp.high],
               "fit_seconds": float(np.mean([f["seconds"] for f in mine]))}  # fmt: skip
        if any("privacy" in f for f in mine):
            row["epsilon_reported"] = [f["privacy"]["epsilon"] for f in mine]
            row["target_epsilon"] = mine[0]["privacy"]["target_epsilon"]
            row["noise_multiplier"] = mine[0]["privacy"]["noise_multiplier"]
            row["delta"] = [f["privacy"]["delta"] for f in mine]
        if any("federated" in f for f in mine):
            fed = [f["federated"] for f in mine]
            row["rounds"] = FED["federated"]["rounds"]  # type: ignore[index]
            row["best_round"] = [f["best_round"] for f in fed]
            row["bytes_per_client_round"] = fed[0]["bytes_per_client_round"]
            row["bytes_per_client_total"] = float(np.mean([
                (f["bytes_per_client_round"]["down"] + f["bytes_per_client_round"]["up"]) * (len(f["rounds"]) - 1)
                for f in fed]))  # fmt: skip
        if name in attacks:
            row["attack_auc"] = float(np.mean([a["auc"] for a in attacks[name]]))
            row["attack_auc_per_fold"] = [a["auc"] for a in attacks[name]]
        rows.append(row)
    commit = os.environ.get("METAREC_GIT_COMMIT") or subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    import metarec

    versions = {}
    for mod in ("torch", "opacus", "flwr", "ray"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "?"
    report = {"commit": commit, "machine": f"{os.cpu_count()} cores, {platform.machine()}", "folds": chosen,
              "k": 5, "dp_settings": {**DP, "max_grad_norm": DP_CLIP}, "federated_settings": FED, "rows": rows,
              "fits": fits, "attacks": attacks, "versions": {"metarec": metarec.__version__, **versions}}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "privacy.json").write_text(json.dumps(report, indent=1, default=float))
    _plot(rows, RESULTS / "privacy_utility_vs_epsilon.png")
    _markdown(report, RESULTS / "privacy.md")
    print((RESULTS / "privacy.md").read_text())


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["model"]: r for r in rows}
    dp = [r for r in rows if "target_epsilon" in r]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    eps = [r["target_epsilon"] for r in dp]
    err = [[r["ndcg@10"] - r["ci"][0] for r in dp], [r["ci"][1] - r["ndcg@10"] for r in dp]]
    ax.errorbar(eps, [r["ndcg@10"] for r in dp], yerr=err, marker="o", capsize=3, label="MAML, user-level DP-SGD")
    for name, style in (("maml", "-"), ("popularity", ":"), ("maml-federated", "--")):
        if name in by:
            ax.axhline(by[name]["ndcg@10"], linestyle=style, color="grey", label=name)
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("epsilon (delta = 1 / training users)")
    ax.set_ylabel("cold-user NDCG@10, k = 5")
    ax.set_title("ml-100k: utility vs privacy budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _markdown(report: dict, path: Path) -> None:
    rows = report["rows"]
    lines = ["# Privacy: user-level DP-SGD and federated meta-learning on ml-100k cold users", "",
             f"commit `{report['commit']}`, {report['machine']}; folds {report['folds']} of 5, k = 5 earliest items, "
             "full ranking, NDCG@10 over the folds' test users (the same users in every row). Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             "| model | NDCG@10 [95% CI] | / MAML [paired 95%] | / popularity [paired 95%] | epsilon reported | "
             "attack AUC | fit s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        eps = ", ".join(f"{e:.2f}" for e in r["epsilon_reported"]) if "epsilon_reported" in r else "-"
        auc = f"{r['attack_auc']:.3f}" if "attack_auc" in r else "-"
        lines.append(f"| {r['model']} | {r['ndcg@10']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] | {r['vs_maml']:.3f} "
                     f"[{r['vs_maml_ci'][0]:.3f}, {r['vs_maml_ci'][1]:.3f}] | {r['vs_popularity']:.3f} "
                     f"[{r['vs_popularity_ci'][0]:.3f}, {r['vs_popularity_ci'][1]:.3f}] | {eps} | {auc} | "
                     f"{r['fit_seconds']:.0f} |")  # fmt: skip
    dp = [r for r in rows if "target_epsilon" in r]
    if dp:
        lines += ["", f"DP-SGD: settings {json.dumps(report['dp_settings'])}; noise multipliers "
                  + ", ".join(f"eps {r['target_epsilon']:g}: {r['noise_multiplier']:.2f}" for r in dp)
                  + f"; delta = 1 / training users ({dp[0]['delta'][0]:.2e} on the first fold). The epsilon reported "
                  "is the RDP accountant's over every step run plus the one popularity release (early stopping can "
                  "end a run below its target)."]  # fmt: skip
    fed = [r for r in rows if "rounds" in r]
    for r in fed:
        b = r["bytes_per_client_round"]
        lines += ["", f"Federated: {json.dumps(report['federated_settings']['federated'])}; best round per fold "
                  f"{r['best_round']}; per client and round {b['down'] / 1e6:.2f} MB down, {b['up'] / 1e6:.2f} MB up "
                  f"(measured by Flower's records); {r['bytes_per_client_total'] / 1e6:.1f} MB per client over the "
                  "run."]  # fmt: skip
    lines += ["", "Attack: loss-threshold membership inference (score = -query loss after adapting on 5 items), "
              "training users vs the fold's held-out test users, as many of each; ROC AUC, mean over folds "
              "(0.5 = a coin).", "", "![utility vs epsilon](privacy_utility_vs_epsilon.png)", ""]  # fmt: skip
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
