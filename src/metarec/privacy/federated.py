"""Federated meta-learning with Flower: clients hold disjoint groups of users and send only weights.

`[model] federated = {clients = 10, rounds = 30}` trains the meta-model this way instead of in one loop:
each round Flower's `FedAvg` sends the meta-parameters to the clients; each client runs `local_epochs`
epochs of the same meta-training (MAML, Reptile, ...) on its own users' tasks, through the one training
loop, and sends its weights back; the server averages them weighted by the client's number of users.
Raw interactions never leave a client, and no per-user vector exists to send (the episodic algorithms
adapt users at serving time). The server picks the round by its own meta-valid users (an operator's
held-out panel), as early stopping does in central training.

Runs in Flower's simulation runtime, which places the clients on Ray (`metarec[privacy]`). Each client
reads its users from its own file in a private temporary folder, as a device reads its local store.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from metarec.data.schema import USER, Dataset
from metarec.errors import ConfigError, MetarecError
from metarec.utils import require

if TYPE_CHECKING:
    from metarec.models.meta import MetaRecommender


class FederatedConfig(BaseModel):
    """`[model] federated = {...}`: the simulated federation."""

    model_config = ConfigDict(extra="forbid")

    clients: int = Field(default=10, ge=2, description="simulated clients; users are split among them at random")
    rounds: int = Field(default=30, ge=1, description="federated rounds (the best by meta-valid users is kept)")
    local_epochs: int = Field(default=1, ge=1, description="epochs of meta-training on a client's users per round")
    fraction_train: float = Field(default=1.0, gt=0, le=1, description="share of clients asked each round")
    client_cpus: float = Field(default=1.0, gt=0, description="CPUs Ray reserves per simulated client")


def _template(model: MetaRecommender, folder: Path) -> None:
    """What every client starts from: the hyper-parameters and the catalogue's feature tables (public
    item data), with the current weights (overwritten by each round's message)."""
    arrays, extra = model._state()
    np.savez(folder / "template.npz", **arrays)  # type: ignore[arg-type]
    params = {k: v for k, v in model.get_params().items() if k not in ("federated", "dp", "verbose")}
    (folder / "template.json").write_text(json.dumps({"params": params, "extra": extra}, default=list))


def _load_template(folder: Path) -> MetaRecommender:
    from metarec.models.meta import MetaRecommender

    spec = json.loads((folder / "template.json").read_text())
    with np.load(folder / "template.npz") as z:
        arrays = {k: z[k] for k in z.files}
    model = MetaRecommender(**spec["params"])
    model._load_state(arrays, spec["extra"])
    return model


def _client_app(folder: Path, local_epochs: int, seed: int) -> Any:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        pid = int(context.node_config["partition-id"])
        model = _load_template(folder)
        with open(folder / f"client_{pid}.pkl", "rb") as f:
            data: Dataset = pickle.load(f)
        incoming = msg.content.array_records["arrays"]
        model.set_weights({k: v.numpy() for k, v in incoming.to_torch_state_dict().items()})
        rnd = int(msg.content.config_records["config"]["server-round"])  # type: ignore[arg-type]
        loss = model.local_update(data, local_epochs, seed=seed + 1000 * rnd + pid)
        out = ArrayRecord(torch_state_dict={k: torch.from_numpy(v) for k, v in model.get_weights().items()})
        users = int(data.interactions[USER].nunique())
        metrics = MetricRecord({"num-examples": users, "train-loss": loss, "bytes-up": out.count_bytes(),
                                "bytes-down": incoming.count_bytes()})  # fmt: skip
        return Message(content=RecordDict({"arrays": out, "metrics": metrics}), reply_to=msg)

    return app


def train_federated(model: MetaRecommender, train: Dataset, users: np.ndarray, valid_score: Any,
                    config: FederatedConfig, seed: int) -> dict[str, Any]:  # fmt: skip
    """Meta-trains `model`'s current weights over `config.clients` simulated clients (Flower + Ray); the
    users in `users` are split among them. `valid_score()` scores the model's current weights on the
    server's meta-valid users. Leaves the best round's weights in the model; returns the run's log."""
    require("flwr", "privacy")
    import ray
    from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    if ray.is_initialized():  # Flower's Ray backend shuts Ray down when it ends, whoever started it
        raise ConfigError("federated training starts its own Ray runtime (Flower's simulation) and stops it after: "
                          "run it outside a Ray session ([distributed] backend = 'local')")  # fmt: skip
    if len(users) < config.clients:
        raise ConfigError(f"federated.clients = {config.clients} but only {len(users)} training users: every "
                          "client needs users")  # fmt: skip
    groups = np.array_split(np.random.default_rng(seed + 99).permutation(users), config.clients)
    log: dict[str, Any] = {"rounds": [], "best_round": 0, "best_valid_ndcg@10": -np.inf,
                           "client_users": [len(g) for g in groups]}  # fmt: skip
    best: dict[str, np.ndarray] = model.get_weights()
    with tempfile.TemporaryDirectory(prefix="metarec-fl-") as tmp:
        folder = Path(tmp)
        _template(model, folder)
        inter = train.interactions
        for i, g in enumerate(groups):  # each client's own store: its users' interactions, nothing else
            with open(folder / f"client_{i}.pkl", "wb") as f:
                pickle.dump(train.with_interactions(inter[inter[USER].isin(g)].reset_index(drop=True)), f)

        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            nonlocal best
            weights = {k: v.numpy() for k, v in arrays.to_torch_state_dict().items()}
            model.set_weights(weights)
            score = float(valid_score())
            if rnd == 0 or score > log["best_valid_ndcg@10"]:
                log["best_valid_ndcg@10"], log["best_round"], best = score, rnd, weights
            log["rounds"].append({"round": rnd, "valid_ndcg@10": score, "seconds": time.perf_counter() - t0})
            return MetricRecord({"valid_ndcg@10": score})

        def sum_bytes(records: list[RecordDict], key: str) -> MetricRecord:
            # FedAvg drops failed clients' replies silently: count them, a short round fails the fit below
            ms = [next(iter(r.metric_records.values())) for r in records]
            up = [float(m["bytes-up"]) for m in ms]  # type: ignore[arg-type]
            down = [float(m["bytes-down"]) for m in ms]  # type: ignore[arg-type]
            loss = [float(m["train-loss"]) for m in ms]  # type: ignore[arg-type]
            log.setdefault("traffic", []).append({"clients": len(ms), "bytes_up": up, "bytes_down": down,
                                                  "train_loss": float(np.nanmean(loss))})  # fmt: skip
            return MetricRecord({"clients": len(ms), "bytes-up": sum(up), "bytes-down": sum(down)})

        server = ServerApp()

        @server.main()
        def main(grid: Grid, context: Context) -> None:
            strategy = FedAvg(fraction_train=config.fraction_train, fraction_evaluate=0.0,
                              min_train_nodes=max(1, round(config.fraction_train * config.clients)),
                              min_available_nodes=config.clients, train_metrics_aggr_fn=sum_bytes)  # fmt: skip
            initial = ArrayRecord(torch_state_dict={k: torch.from_numpy(v) for k, v in model.get_weights().items()})
            strategy.start(grid=grid, initial_arrays=initial, num_rounds=config.rounds, evaluate_fn=evaluate)

        t0 = time.perf_counter()
        backend: dict[str, Any] = {"client_resources": {"num_cpus": config.client_cpus, "num_gpus": 0.0}}
        saved_path = os.environ.get("PYTHONPATH")  # Flower's Ray backend rewrites it for its workers
        try:
            run_simulation(server_app=server, client_app=_client_app(folder, config.local_epochs, seed),
                           num_supernodes=config.clients, backend_config=backend)  # fmt: skip
        except Exception as exc:
            raise MetarecError(f"federated training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if saved_path is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved_path
    asked = max(1, round(config.fraction_train * config.clients))
    traffic = log.get("traffic", [])
    short = [i + 1 for i, t in enumerate(traffic) if t["clients"] < asked]
    if len(traffic) < config.rounds or short:
        raise MetarecError(f"federated training lost clients: {len(traffic)} of {config.rounds} rounds aggregated, "
                           f"rounds with failed clients: {short or 'none'} (Flower's log above says why)")  # fmt: skip
    model.set_weights(best)
    log["bytes_per_client_round"] = {"down": float(np.mean([np.mean(t["bytes_down"]) for t in traffic])),
                                     "up": float(np.mean([np.mean(t["bytes_up"]) for t in traffic]))}  # fmt: skip
    log["seconds"] = time.perf_counter() - t0
    return log
