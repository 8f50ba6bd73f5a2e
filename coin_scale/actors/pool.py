"""A pool of ModelReplica actors fed batches through the pools' one dispatch loop
(`coin_scale.actors.dispatch`): a bounded number in flight, failover after a lost replica."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import ray

from coin_scale.accounting import FORWARDS
from coin_scale.actors.dispatch import DispatchedPool, Dispatcher
from coin_scale.actors.replica import ModelReplica, WorkRef
from coin_scale.models.batches import (
    Batch,
    BatchResult,
    MapsResult,
    ReplicaWork,
    UnitMapsResult,
    VisualizeResult,
)
from coin_scale.models.module_call import CallResult, ModuleCall
from coin_scale.models.unit_maps import UnitMapsRequest


def _counted(result: Any) -> Any:
    """A replica's batch result, its forward passes counted in this process's ledger."""
    if isinstance(result, VisualizeResult | CallResult):
        FORWARDS.count("replicas", result.images, result.passes)
    else:
        FORWARDS.count("replicas", len(result.indices))
    return result


class ReplicaPool(DispatchedPool):
    """N replicas; `run` yields every batch's result exactly once, resubmitting after a crash."""

    def __init__(
        self,
        work: ReplicaWork,
        *,
        replicas: int,
        cpus_each: float,
        gpus_each: float,
        in_flight_each: int = 3,
        max_attempts: int = 8,
        actor_options: dict[str, Any] | None = None,
    ) -> None:
        """`work`: what every replica computes (model, layers, reductions, SAE transforms);
        `actor_options`: more Ray options of every replica (a scheduling strategy)."""
        self._created = time.perf_counter()
        self.startup_seconds = 0.0
        """Seconds from creating the pool until `wait_ready` saw every replica's model built."""
        # Shipped once; every call carries this reference (not the constructor: see ModelReplica),
        # and the pool holds it while it lives, so a replica that Ray restarts can rebuild.
        self.work = WorkRef(ray.put(work))
        options = {"num_cpus": cpus_each, "num_gpus": gpus_each, **(actor_options or {})}
        actors = [
            ModelReplica.options(**options).remote()  # type: ignore[attr-defined]
            for _ in range(replicas)
        ]
        self.dispatch = Dispatcher(
            actors, kind="replica", max_attempts=max_attempts, in_flight_each=in_flight_each
        )
        self.in_flight_each = in_flight_each
        self.max_attempts = max_attempts

    def run(
        self, batches: Sequence[Batch], on_resubmit: Callable[[int, str], None] | None = None
    ) -> Iterator[BatchResult]:
        """Yield results in completion order; a batch whose replica died goes to the next one."""
        return self._run("run", batches, (), on_resubmit)

    def run_pixels(
        self, batches: Sequence[np.ndarray], on_resubmit: Callable[[int, str], None] | None = None
    ) -> Iterator[BatchResult]:
        """Like `run`, on uint8 (batch, channel, crop, crop) images decoded by the caller."""
        return self._run("run_pixels", batches, (), on_resubmit)

    def visualize(
        self, requests: Sequence[tuple[Any, int, int]]
    ) -> Iterator[VisualizeResult]:
        """Feature visualizations, one (spec, n, seed) request each (`ModelReplica.visualize`)."""
        return self._run("visualize", requests, (), None)

    def call(self, calls: Sequence[ModuleCall]) -> Iterator[CallResult]:
        """Model calls (`ModuleCall`), one a replica at a time, results in completion order (each
        with its `batch_id`, the call's index); a call whose replica died runs on another."""
        return self._run("call", calls, (), None)

    def run_maps(
        self,
        batches: Sequence[Batch],
        layer: str,
        on_resubmit: Callable[[int, str], None] | None = None,
    ) -> Iterator[MapsResult]:
        """Like `run`, with every batch's whole float16 conv maps of `layer` (`MapsResult`)."""
        return self._run("run_maps", batches, (layer,), on_resubmit)

    def run_unit_maps(
        self,
        batches: Sequence[Batch],
        requests: Sequence[UnitMapsRequest],
        on_resubmit: Callable[[int, str], None] | None = None,
    ) -> Iterator[UnitMapsResult]:
        """Like `run`, with every batch's spatial maps of the requested units (`UnitMapsResult`)."""
        return self._run("run_unit_maps", batches, (tuple(requests),), on_resubmit)

    def _run(
        self,
        method: str,
        batches: Sequence[Any],
        extra: tuple[Any, ...],
        on_resubmit: Callable[[int, str], None] | None,
    ) -> Iterator[Any]:
        """`actor.<method>(work, batch_id, batch, *extra)` for every batch."""

        def submit(actor: Any, batch_id: int) -> ray.ObjectRef:
            return getattr(actor, method).remote(self.work, batch_id, batches[batch_id], *extra)

        def lost(batch_id: int, err: BaseException) -> None:
            if on_resubmit:
                on_resubmit(batch_id, type(err).__name__)

        stream = self.dispatch.stream(len(batches), submit, what="batch {}".format, on_lost=lost)
        return (_counted(done.value) for done in stream)

    def wait_ready(self) -> None:
        """Block until every replica has loaded its model (start-up is timed apart from throughput)."""
        ray.get([actor.load.remote(self.work) for actor in self.actors])
        self.startup_seconds = time.perf_counter() - self._created
