"""Run every configured model on the same splits in one go and summarise with intervals.

Models are fitted once per fold and scored on all of that fold's tasks. Per-user scores of the
K folds are concatenated, so each user of the dataset counts once per (protocol, k), and models
are compared pairwise on identical users.
"""

from __future__ import annotations

import resource
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from metarec.data.schema import Dataset
from metarec.data.sources import load_dataset
from metarec.data.splits import Fold, make_folds
from metarec.errors import ConfigError
from metarec.eval.evaluate import TaskResult, evaluate_task
from metarec.eval.stats import mean_ci, paired_bootstrap
from metarec.models import WRAPPERS, Recommender, build_model, model_spec
from metarec.utils import seed_everything


@dataclass
class Cell:
    """One (protocol, k, model) entry: per-user scores over all folds."""

    protocol: str
    k: int | None
    model: str
    users: list[np.ndarray] = field(default_factory=list)
    per_user: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    aggregate: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    skipped: str | None = None
    eval_seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.protocol if self.k is None else f"{self.protocol}@{self.k}"

    def add(self, r: TaskResult) -> None:
        if r.skipped:
            self.skipped = r.skipped
            return
        self.users.append(r.task.users + 0)
        for key, v in r.per_user.items():
            self.per_user[key].append(v)
        for key, value in r.aggregate.items():
            self.aggregate[key].append(value)
        self.eval_seconds += r.seconds

    def values(self, metric: str) -> np.ndarray:
        return np.concatenate(self.per_user[metric]) if self.per_user.get(metric) else np.empty(0)


@dataclass
class ExperimentResult:
    config: dict[str, Any]
    dataset: dict[str, Any]
    cells: dict[tuple[str, int | None, str], Cell]
    timings: dict[str, float]
    peak_memory_mb: float  # process peak RSS, covers native (implicit, BLAS) memory too
    _summary: dict[str, Any] | None = field(default=None, repr=False)

    def labels(self) -> list[str]:
        return list(dict.fromkeys(c.label for c in self.cells.values()))

    def models(self) -> list[str]:
        return list(dict.fromkeys(c.model for c in self.cells.values()))

    def cell(self, label: str, model: str) -> Cell | None:
        return next((c for c in self.cells.values() if c.label == label and c.model == model), None)

    def _best_of(self, label: str) -> str | None:
        """The best model by the main metric among `compare_to_best` (e.g. every non-meta model)."""
        main = self.config["evaluation"]["main_metric"]
        scored = [
            (float(np.nanmean(c.values(main))), c.model)  # a user undefined for every model (NaN) is left out
            for m in self.config["evaluation"]["compare_to_best"]
            if (c := self.cell(label, m)) is not None and not c.skipped and len(c.values(main))
        ]
        return max(scored)[1] if scored else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: mean / 95% CI / n per metric, plus paired comparisons to the reference model."""
        if self._summary is not None:  # bootstrap is not free; every report reads the same summary
            return self._summary
        ev = self.config["evaluation"]
        refs = ev.get("compare_to") or []
        refs = [refs] if isinstance(refs, str) else list(refs)
        out: dict[str, Any] = {}
        for cell in self.cells.values():
            entry: dict[str, Any] = {"protocol": cell.protocol, "k": cell.k, "model": cell.model}
            if cell.skipped:
                entry["skipped"] = cell.skipped
            else:
                entry["n_users"] = int(sum(len(u) for u in cell.users))
                entry["metrics"] = {m: mean_ci(cell.values(m)).as_dict() for m in cell.per_user}
                entry["aggregate"] = {m: float(np.mean(v)) for m, v in cell.aggregate.items()}
                entry["eval_seconds"] = cell.eval_seconds
                for r in [*refs, *([self._best_of(cell.label)] if ev.get("compare_to_best") else [])]:
                    base = self.cell(cell.label, r) if r else None
                    if base is None or base is cell or base.skipped:
                        continue
                    main = ev["main_metric"]
                    a, b = cell.values(main), base.values(main)
                    if len(a) == len(b) and np.array_equal(np.concatenate(cell.users), np.concatenate(base.users)):
                        key = "vs_best" if r not in refs else "vs_" + r
                        entry[key] = {
                            "reference": r,
                            "metric": main,
                            "diff": paired_bootstrap(a, b, "diff", ev["bootstrap"], seed=0).as_dict(),
                            "ratio": paired_bootstrap(a, b, "ratio", ev["bootstrap"], seed=0).as_dict(),
                        }
            out.setdefault(cell.label, {})[cell.model] = entry
        self._summary = out
        return out


def _load_artifact(path: str, ds: Dataset) -> tuple[Recommender, set[str]]:
    """The model and the ids of the users it was trained on."""
    from metarec.models.io import load_model

    model, info = load_model(path)
    if info["item_ids"] != ds.items["item_id"].tolist():
        raise ConfigError(f"artifact {path} was trained on another item catalogue than {ds.name}")
    return model, set(info["user_ids"])


def _check_unseen(path: str, trained_on: set[str], ds: Dataset, fold: Fold) -> None:
    """An artefact is scored as is, so it must never have trained on a test user: its numbers on
    them would be inflated (a warm protocol always fails this, as the artefact saw the test rows)."""
    ids = ds.users["user_id"].to_numpy()
    for task in fold.tasks:
        seen = [u for u in ids[task.users] if u in trained_on]
        if seen:
            raise ConfigError(
                f"artifact {path} was trained on {len(seen):,} of the {len(task.users):,} test users of "
                f"{task.protocol} fold {fold.fold} (e.g. {seen[0]!r}), so its scores there would be inflated. "
                "Evaluate it on users it never saw (a cold-user protocol on another file of users), "
                "or let evaluate train the model per fold (drop `artifact`)"
            )


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def _line(bar: Progress, task_id: Any, t0: float, what: str, seconds: float) -> str:
    """One plain progress line: what finished, how long it took, elapsed and the ETA so far."""
    task = bar.tasks[task_id]
    done, total = int(task.completed), int(task.total or 0)
    elapsed = time.perf_counter() - t0
    eta = elapsed / max(done, 1) * max(total - done, 0)
    return f"{what}: {seconds:.1f}s; {done}/{total} fits, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"


def _cannot_score(model: Recommender, kind: str, fold: Fold) -> bool:
    """A launch-day fold (cold items, no early adopters revealed) asked of a model that says, before any
    fit, that it cannot score items unseen in training: fitting it would only be thrown away."""
    launch_day = fold.cold_items is not None and (fold.revealed is None or not len(fold.revealed))
    return launch_day and not model.supports_cold_items and kind not in WRAPPERS


@dataclass
class Unit:
    """One model on one fold: fitted once, scored on every task of the fold. The unit of distributed work."""

    protocol: str
    fold: Fold
    display: str
    kind: str
    params: dict[str, Any]


def _units(cfg: dict[str, Any], protocol: str, fold: Fold) -> list[Unit]:
    out = []
    for display in cfg["models"]:
        kind, mcfg = model_spec(cfg, display)
        if cfg.get("num_threads") and kind in ("itemknn", "als", "bpr"):
            mcfg.setdefault("num_threads", cfg["num_threads"])
        out.append(Unit(protocol, fold, display, kind, mcfg))
    return out


Artifacts = dict[str, tuple[Recommender, set[str]]]


def score_unit(
    cfg: dict[str, Any], ds: Dataset, unit: Unit, artifacts: Artifacts | None = None
) -> tuple[list[TaskResult], float]:
    """Fit (or load) the unit's model and score it on each task of its fold: (one result per task, fit seconds).

    Seeded from the run's seed and the fold alone, so a unit gives the same numbers whichever process runs
    it and in whatever order (the local loop and the Ray back-end call this same function)."""
    seed = int(cfg["seed"])
    ev = cfg["evaluation"]
    fold, mcfg = unit.fold, unit.params
    seed_everything(seed + fold.fold)
    t_fit = time.perf_counter()
    if "artifact" in mcfg:
        # a trained artefact is scored as is: it must not have seen this split's test users
        artifacts = {} if artifacts is None else artifacts
        if mcfg["artifact"] not in artifacts:  # loaded once, scored on every fold
            artifacts[mcfg["artifact"]] = _load_artifact(mcfg["artifact"], ds)
        model, trained_on = artifacts[mcfg["artifact"]]
        _check_unseen(mcfg["artifact"], trained_on, ds, fold)
    else:
        model = build_model(unit.kind, mcfg, seed=seed + fold.fold)
        if not _cannot_score(model, unit.kind, fold):  # else every task reports it skipped, unfitted
            model.fit(fold.train, valid=fold.valid, revealed=fold.revealed)
    model.display_name = unit.display  # type: ignore[attr-defined]
    fit_seconds = time.perf_counter() - t_fit
    pop = np.bincount(fold.train.interactions["item"].to_numpy(), minlength=ds.n_items)
    n_train_users = int(fold.train.interactions["user"].nunique())
    ks, names, chunk = list(ev["ks"]), tuple(ev["metrics"]), int(ev["chunk_elements"])
    results = [evaluate_task(model, t, ks, names, pop, n_train_users, chunk, seed) for t in fold.tasks]
    return results, fit_seconds


def run_experiment(cfg: dict[str, Any], dataset: Dataset | None = None, progress: bool = True,
                   log: Callable[[str], Any] | None = None) -> ExperimentResult:  # fmt: skip
    """Every model on every fold of every protocol. `progress` draws a bar; `log` (e.g. `print`) gets one
    line per fitted model instead, so a quiet run of many minutes still shows it is alive and when it ends.

    With `[distributed] backend = "ray"` the (fold, model) units run as Ray tasks; results are gathered
    in the local run's order, so every number and every report is the same as a local run's."""
    from metarec.distributed.cluster import ray_session, startup_seconds

    timings: dict[str, float] = {}
    seed = int(cfg["seed"])
    seed_everything(seed)
    with ray_session(cfg.get("distributed")) as dcfg:  # first: inside it, Ray Data reads the tables
        t0 = time.perf_counter()
        ds = dataset if dataset is not None else load_dataset(cfg["dataset"])
        timings["load_data"] = time.perf_counter() - t0
        cells: dict[tuple[str, int | None, str], Cell] = {}
        artifacts: Artifacts = {}
        info = ds.summary()
        units: list[Unit] = []
        for protocol, params in cfg["protocols"].items():
            t_split = time.perf_counter()
            params = dict(params)
            kind = params.pop("type", protocol)  # two variants of one protocol can run side by side
            folds = list(make_folds(ds, kind, params, seed))
            timings[f"split:{protocol}"] = time.perf_counter() - t_split
            if ds.kg is not None and any(f.cold_items is not None for f in folds):  # the report's kg section
                cold = np.concatenate([f.cold_items for f in folds if f.cold_items is not None])
                facts = ds.items_with_facts()
                info.setdefault("kg_cold_items", {})[protocol] = {
                    "cold_items": len(np.unique(cold)),
                    "with_facts": int(facts[np.unique(cold)].sum()),
                }
            units += [u for fold in folds for u in _units(cfg, protocol, fold)]
        with _progress() as bar:
            task_id = bar.add_task("evaluating", total=len(units), visible=progress)

            def done(unit: Unit, results: list[TaskResult], fit_seconds: float) -> None:
                key = f"fit:{unit.protocol}:{unit.display}"
                timings[key] = timings.get(key, 0.0) + fit_seconds
                for r in results:
                    key = f"eval:{unit.protocol}:{unit.display}"
                    timings[key] = timings.get(key, 0.0) + r.seconds
                bar.advance(task_id)
                if log is not None:
                    log(_line(bar, task_id, t0, f"{unit.protocol} fold {unit.fold.fold} {unit.display}",
                              fit_seconds + sum(r.seconds for r in results)))  # fmt: skip

            if dcfg is None:
                outcomes = []
                for unit in units:
                    bar.update(task_id, description=f"{unit.protocol} fold {unit.fold.fold}: {unit.display}")
                    outcomes.append(score_unit(cfg, ds, unit, artifacts))
                    done(unit, *outcomes[-1])
            else:
                from metarec.distributed.evaluate import run_units

                timings["ray_connect"] = startup_seconds.get("connect", 0.0)
                bar.update(task_id, description=f"{len(units)} units on Ray ({dcfg.num_workers} workers)")
                outcomes = run_units(cfg, ds, units, dcfg, done)
            for unit, (results, _) in zip(units, outcomes, strict=True):  # the local run's order
                for task, r in zip(unit.fold.tasks, results, strict=True):
                    r.task = task
                    # a protocol may pose variants of one task (bridge@k and bridge-target-only@k): own cells
                    name = unit.protocol + task.protocol.removeprefix(unit.fold.protocol)
                    cell = cells.setdefault((name, task.k, unit.display), Cell(name, task.k, unit.display))
                    cell.add(r)
    timings["total"] = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return ExperimentResult(cfg, info, cells, timings, peak_mb)
