"""Joining or starting Ray: the local machine by default, a cluster with --address."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RaySession:
    """A Ray connection; `owned` says whether this process started it (and so shuts it down)."""

    address: str | None
    owned: bool

    def close(self) -> None:
        if self.owned and ray.is_initialized():
            ray.shutdown()


def connect(address: str | None = None, *, num_cpus: int | None = None) -> RaySession:
    """`None` starts a local Ray on this machine (or joins `RAY_ADDRESS` when the environment names
    one, as `ray job submit` does); `auto` or `ray://host:10001` joins a cluster.

    A local start is asked for explicitly (`address="local"`): a bare `ray.init()` would instead
    join whatever `/tmp/ray/ray_current_cluster` names, which a `ray start` or a test cluster that
    died without cleaning up leaves behind, and then hang on a dead address or refuse `num_cpus`."""
    if ray.is_initialized():
        return RaySession(address=address, owned=False)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        log.info("joining the Ray cluster at RAY_ADDRESS=%s", address)
    if address is None:
        log.info("starting a local Ray instance (pass --address auto to join a cluster)")
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 logging_level=logging.WARNING)  # fmt: skip
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return RaySession(address=address, owned=True)


def cpu_gpu_per_replica(replicas: int | None) -> tuple[int, float, int]:
    """(replicas, cpus each, gpus each): one replica per GPU, else one CPU replica using all cores.
    No replica asks for more CPUs than the largest live node has (on a cluster of several small
    nodes a replica could otherwise never be placed)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    node_cpus = [
        int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")
    ]
    largest = max(node_cpus, default=cpus) or 1
    if gpus:
        n = replicas or gpus
        return n, max(1, min(cpus // (2 * n), largest)), 1
    n = replicas or 1
    return n, max(1, min(cpus // n, largest)), 0
