"""Opening Ray and the actor pools, once for every stage: `replica_pool` (model replicas for a
dissection or an SAE's activation pass) and `gateway_pool` (the LLM gateway actors of the
agents). Each is a context manager: connect (a local Ray unless `address` is given), start the
pool, wait until it is ready, yield it, then shut the pool down and close the session (a session
this process did not start is left open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coin_scale.errors import UserError
from coin_scale.models.activations import SAEUnits
from coin_scale.models.batches import (
    Batch,
    BatchResult,
    BatchRunner,
    MapsResult,
    OpenReplicas,
    ReplicaWork,
)
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload

if TYPE_CHECKING:  # Ray is imported only when a pool starts (a dry run or a cached result never)
    from coin_scale.actors.llm_gateway import GatewayPool
    from coin_scale.actors.pool import ReplicaPool
    from coin_scale.explain.llm import PreparedLLM

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartedReplicas:
    """A ready `ReplicaPool` as the stages see it (`BatchRunner`), with its start-up time."""

    pool: ReplicaPool
    startup_seconds: float

    def run(self, batches: Sequence[Batch]) -> Iterator[BatchResult]:
        return self.pool.run(batches)

    def run_maps(self, batches: Sequence[Batch], layer: str) -> Iterator[MapsResult]:
        return self.pool.run_maps(batches, layer)


@contextmanager
def replica_pool(
    payload: ModelPayload,
    layers: Mapping[str, Layout],
    reductions: Sequence[str],
    *,
    address: str | None,
    replicas: int | None,
    unit_transforms: Mapping[str, SAEUnits] | None = None,
) -> Iterator[StartedReplicas]:
    """Model replicas on Ray (one per GPU, else one using every core, unless `replicas`),
    ready; `startup_seconds` times their start alone, not Ray's."""
    from coin_scale.actors.cluster import connect, cpu_gpu_per_replica
    from coin_scale.actors.pool import ReplicaPool

    session = connect(address)
    try:
        n, cpus, gpus = cpu_gpu_per_replica(replicas)
        log.info("%d replica(s), %s CPU and %s GPU each", n, cpus, gpus)
        startup = time.perf_counter()
        pool = ReplicaPool(
            payload, dict(layers), list(reductions), replicas=n, cpus_each=cpus, gpus_each=gpus,
            unit_transforms=dict(unit_transforms) if unit_transforms else None,
        )  # fmt: skip
        try:
            pool.wait_ready()
            yield StartedReplicas(pool, time.perf_counter() - startup)
        finally:
            pool.shutdown()
    finally:
        session.close()


def replica_opener(*, address: str | None, replicas: int | None) -> OpenReplicas:
    """The `OpenReplicas` a stage calls when it has work: `replica_pool` at `address`."""

    def open_replicas(work: ReplicaWork) -> AbstractContextManager[BatchRunner]:
        return replica_pool(
            work.payload, work.layers, work.reductions, address=address, replicas=replicas,
            unit_transforms=work.unit_transforms,
        )  # fmt: skip

    return open_replicas


def start_gateways(prepared: PreparedLLM) -> GatewayPool:
    """The gateway actors for `prepared` (Ray must be connected)."""
    from coin_scale.actors.llm_gateway import GatewayPool, GatewaySpec

    if prepared.api_key is None:
        raise UserError("the LLM gateway needs an API key (prepare(require_key=True))")
    spec = GatewaySpec(
        config=prepared.gateway_config(), limits=prepared.limits,
        base_url=prepared.config.base_url,
    )  # fmt: skip
    return GatewayPool(spec, prepared.api_key, actors=prepared.config.gateway_actors)


@contextmanager
def gateway_pool(prepared: PreparedLLM, *, address: str | None) -> Iterator[GatewayPool]:
    """The LLM gateway actors of `prepared` on Ray at `address` (`Gateways` to the agents)."""
    from coin_scale.actors.cluster import connect

    session = connect(address)
    try:
        pool = start_gateways(prepared)
        try:
            yield pool
        finally:
            pool.shutdown()
    finally:
        session.close()
