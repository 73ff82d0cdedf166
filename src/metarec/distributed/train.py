"""Ray Train for the meta models: `TorchTrainer` runs the model's own `fit` (the one training loop) on
`num_workers` CPU workers joined in a gloo process group. Each worker keeps its slice of every meta-batch of
user tasks and the gradients are all-reduced (`training.sharding`), so the workers hold identical weights.

Worker 0 reports each epoch's metrics and a checkpoint (the trained tensors) to Ray Train; with
`max_failures`, a killed worker makes Ray restart the group, which resumes from the last checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from metarec.distributed.settings import DistributedSettings as DistributedConfig
from metarec.errors import MetarecError
from metarec.utils import require


def _loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import torch

    from metarec.models import build_model
    from metarec.models.io import save_model
    from metarec.training.callbacks import Callback, Checkpoint, TensorBoard
    from metarec.training.sharding import all_reduce

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    ds = ray.get(config["dataset"])  # from the object store: the workers on one node share its pages
    model = build_model(config["kind"], config["params"], seed=config["seed"])
    work = Path(tempfile.mkdtemp(prefix="metarec-train-"))  # this worker's checkpoint, removed at the end
    resume = ray.train.get_checkpoint()
    if resume is not None:  # a restarted group: every worker starts from the last reported weights
        with resume.as_directory() as d:
            for name in ("checkpoint.safetensors", "checkpoint.json"):
                (work / name).write_bytes((Path(d) / name).read_bytes())

    class Report(Callback):
        """After each epoch (and the local Checkpoint's write), hand the metrics and weights to Ray Train."""

        def on_epoch_end(self, trainer: Any, step: Any, epoch: int, logs: dict[str, float]) -> None:
            metrics = {k: float(v) for k, v in logs.items()}
            if rank == 0:
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(work)))
            else:
                ray.train.report(metrics)

    callbacks: list[Callback] = [Checkpoint(work, resume=resume is not None), Report()]
    if rank == 0 and config.get("tensorboard"):  # one writer: the workers hold the same weights and logs
        callbacks.append(TensorBoard(config["tensorboard"]))
    try:
        model.fit(ds, valid=config.get("valid"), callbacks=callbacks, wrap_optimizer=all_reduce,
                  shard=(rank, world))  # type: ignore[call-arg]  # fmt: skip
        if rank == 0:
            save_model(model, config["out"], ds, config["cfg"])
    finally:
        shutil.rmtree(work, ignore_errors=True)  # Ray Train keeps its own copy of every reported checkpoint


def train_distributed(cfg: dict[str, Any], model_name: str, ds: Any, dcfg: DistributedConfig, out: Path,
                      valid: Any = None, max_failures: int = 1, tensorboard: Path | None = None
                      ) -> dict[str, Any]:  # fmt: skip
    """Train `[models.<model_name>]` (a meta model) with Ray Train inside an open `ray_session`; the artefact
    goes to `out`. Returns Ray Train's final metrics and the checkpoint path."""
    require("ray.train", "ray", "ray")
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from metarec.models import model_spec

    kind, params = model_spec(cfg, model_name)
    ray = require("ray", "ray")
    # put once, passed by reference: pickled into the train function, the dataset would be copied into
    # Ray Train's controller and every worker's heap; from the object store, numpy columns are read in place
    loop_cfg = {"dataset": ray.put(ds), "valid": valid, "kind": kind, "params": params, "seed": int(cfg["seed"]),
                "threads": max(1, int(dcfg.cpus_per_worker)), "out": str(out.resolve()), "cfg": cfg,
                "tensorboard": str(tensorboard.resolve()) if tensorboard else None}  # fmt: skip
    trainer = TorchTrainer(
        _loop,
        train_loop_config=loop_cfg,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=dcfg.num_workers, use_gpu=False, resources_per_worker={"CPU": dcfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=f"train-{model_name}",
            storage_path=str((out.parent / "ray_train").resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
        error = result.error
    except Exception as exc:  # Ray wraps the workers' error; the user needs its last line, not Ray's traceback
        error = exc
    if error is not None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise MetarecError(f"Ray Train failed: {lines[-1] if lines else type(error).__name__} (Ray's log above "
                           "has the workers' tracebacks)") from error  # fmt: skip
    return {"metrics": dict(result.metrics or {}), "checkpoint": result.checkpoint.path if result.checkpoint else None}
