"""Connecting to a Ray cluster for one run.

`address = "auto"` joins a cluster started with `ray start` (on this machine or, with a head node's
address, anywhere: Ray's cluster launcher and KubeRay start such clusters; see README), `"local"` starts a
private single-node cluster for the run and stops it after, `"ray://host:10001"` goes through Ray Client.
Workers must see the same `metarec` install and `$METAREC_HOME` (the embedding cache and datasets): on one
machine they do; on several, put METAREC_HOME on shared storage.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from metarec.distributed.settings import DistributedSettings as DistributedConfig
from metarec.utils import metarec_home, require

#: environment every Ray worker gets: where the caches are, and no hub downloads from workers
_PASS_ENV = ("METAREC_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "METAREC_GIT_COMMIT", "PYTHONPATH")


#: seconds the last `ray_session` spent connecting / starting a cluster (reported apart from the work)
startup_seconds: dict[str, float] = {}


@contextmanager
def ray_session(cfg: DistributedConfig | dict[str, Any] | None) -> Iterator[DistributedConfig | None]:
    """Open (and afterwards close) the Ray connection a config asks for; a no-op for the local back-end.

    Inside, text encoding sends texts missing from the cache to Ray workers (`text.registry.remote`) and
    interaction tables are read by Ray Data (`data.sources.tabular.remote`).
    A cluster this call started is shut down on exit, even when the run fails."""
    dcfg = DistributedConfig.model_validate(cfg or {})
    if dcfg.backend != "ray":
        yield None
        return
    ray = require("ray", "ray")
    started = False
    t0 = time.perf_counter()
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        if "PYTHONPATH" in env:  # workers start elsewhere: a relative entry would point nowhere
            env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
        env.setdefault("METAREC_HOME", str(metarec_home()))
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "logging_level": "warning"}
        if dcfg.address == "local":  # only a cluster we start takes resource and dashboard settings
            kwargs.update(num_cpus=max(1, int(dcfg.num_workers * dcfg.cpus_per_worker)), include_dashboard=False)
            ray.init(**kwargs)
        else:
            ray.init(address=dcfg.address, **kwargs)
        started = True
    startup_seconds["connect"] = time.perf_counter() - t0
    from metarec.data.sources import tabular
    from metarec.distributed.data import RayDataEncoder, read_table_ray
    from metarec.text import registry

    previous, reader = registry.remote, tabular.remote
    registry.remote = lambda encoder, text_cfg: RayDataEncoder(encoder, text_cfg, dcfg)
    tabular.remote = read_table_ray
    try:
        yield dcfg
    finally:
        registry.remote, tabular.remote = previous, reader
        if started:
            ray.shutdown()
