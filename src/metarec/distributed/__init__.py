"""Ray back-end: the heavy steps of the same pipeline (text encoding, evaluation, hyper-parameter search)
run on a Ray cluster when a config says `[distributed] backend = "ray"`. Needs the `ray` extra.

Nothing here re-implements the pipeline: a Ray task calls the very function the local run calls
(`eval.experiment.score_unit`, `text.cache.EmbeddingCache.encode`), so both back-ends give the same numbers.
"""

from metarec.distributed.cluster import ray_session
from metarec.distributed.settings import DistributedSettings as DistributedConfig

__all__ = ["DistributedConfig", "ray_session"]
