"""Serving at scale: the same FastAPI app as `metarec serve`, as a Ray Serve deployment with N replicas (or
autoscaling between bounds) behind Ray Serve's HTTP proxy.

Replicas share one PostgreSQL database (SQLite is one file on one machine: refused beyond one replica). Each
replica builds its own app (model, indexes) from the artefact; the schema is migrated once, here, before they
start. A shared replica indexes items other replicas added before it reads or writes, and adapts users from
the database on every request (no per-replica user cache that another replica's events would make stale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarec.errors import ConfigError
from metarec.utils import require


def check_replicas(db_url: str, replicas: int, max_replicas: int | None, min_replicas: int | None = None) -> None:
    """Refuse what Ray Serve would only fail on later (or serve wrongly): bad bounds, SQLite shared by replicas."""
    if replicas < 1:
        raise ConfigError(f"--replicas must be >= 1, got {replicas}")
    if max_replicas is not None and min_replicas is not None and not 0 <= min_replicas <= max_replicas:
        raise ConfigError(f"autoscaling needs 0 <= --min-replicas <= --max-replicas, got {min_replicas} and "
                          f"{max_replicas}")  # fmt: skip
    if max_replicas is not None and max_replicas < 1:
        raise ConfigError(f"--max-replicas must be >= 1, got {max_replicas}")
    if max(replicas, max_replicas or 0) > 1 and db_url.startswith("sqlite"):
        raise ConfigError(
            "more than one replica needs a database every replica can reach (PostgreSQL): pass --db "
            "postgresql+psycopg://user:password@host/db (SQLite is one file on one machine)"
        )


def deployment(artifact: str | Path, db_url: str, replicas: int = 1, min_replicas: int | None = None,
               max_replicas: int | None = None, cpus_per_replica: float = 1.0,
               app_kwargs: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """The bound Ray Serve application (pass to `serve.run`)."""
    serve = require("ray.serve", "ray", "ray")
    from metarec.serve.storage import migrate

    check_replicas(db_url, replicas, max_replicas, min_replicas)
    migrate(db_url)  # once: replicas starting together must not race on the schema
    artifact, kwargs = str(artifact), dict(app_kwargs or {})
    shared = max(replicas, max_replicas or 0) > 1

    def build() -> Any:  # runs in each replica
        from metarec.serve.app import create_app

        return create_app(artifact, db_url, shared=shared, **kwargs)

    options: dict[str, Any] = {"name": "metarec", "ray_actor_options": {"num_cpus": cpus_per_replica}}
    if max_replicas:  # --replicas is where autoscaling starts, within the bounds
        low = 1 if min_replicas is None else min_replicas
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": max_replicas,
                                         "initial_replicas": min(max(replicas, low, 1), max_replicas)}  # fmt: skip
    else:
        options["num_replicas"] = replicas
    return serve.deployment(serve.ingress(build)(), **options).bind()


def run(app: Any, host: str, port: int, blocking: bool = True) -> None:
    serve = require("ray.serve", "ray", "ray")
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="metarec", route_prefix="/", blocking=blocking)
