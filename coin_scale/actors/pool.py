"""A pool of ModelReplica actors fed batches, with a bounded number in flight and failover."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from coin_scale.actors.replica import BatchResult, MapsResult, ModelReplica
from coin_scale.dissect.activations import SAEUnits
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload

log = logging.getLogger(__name__)

Batch = list[tuple[int, str]]


class ReplicaPool:
    """N replicas; `run` yields every batch's result exactly once, resubmitting after a crash."""

    def __init__(
        self,
        payload: ModelPayload,
        layers: dict[str, Layout],
        reductions: Sequence[str],
        *,
        replicas: int,
        cpus_each: float,
        gpus_each: float,
        in_flight_each: int = 3,
        max_attempts: int = 4,
        unit_transforms: dict[str, SAEUnits] | None = None,
    ) -> None:
        """`unit_transforms` {layer: SAEUnits}: those layers' units are the SAE's latents."""
        self.payload_ref = payload_ref = ray.put(payload)  # kept alive for actor restarts
        self.transforms_ref = transforms_ref = ray.put(unit_transforms) if unit_transforms else None
        options = {"num_cpus": cpus_each, "num_gpus": gpus_each}
        self.actors = [
            ModelReplica.options(**options).remote(  # type: ignore[attr-defined]
                payload_ref, layers, list(reductions), transforms_ref
            )
            for _ in range(replicas)
        ]
        self.in_flight_each = in_flight_each
        self.max_attempts = max_attempts
        self.resubmitted = 0

    def run(
        self, batches: Sequence[Batch], on_resubmit: Callable[[int, str], None] | None = None
    ) -> Iterator[BatchResult]:
        """Yield results in completion order; a batch whose replica died goes to the next one."""
        return self._dispatch("run", batches, (), on_resubmit)

    def run_maps(
        self,
        batches: Sequence[Batch],
        layer: str,
        on_resubmit: Callable[[int, str], None] | None = None,
    ) -> Iterator[MapsResult]:
        """Like `run`, with every batch's whole float16 conv maps of `layer` (`MapsResult`)."""
        return self._dispatch("run_maps", batches, (layer,), on_resubmit)

    def _dispatch(
        self,
        method: str,
        batches: Sequence[Batch],
        extra: tuple[Any, ...],
        on_resubmit: Callable[[int, str], None] | None,
    ) -> Iterator[Any]:
        """`actor.<method>(batch_id, batch, *extra)` for every batch, bounded, failing over."""
        queue = list(range(len(batches)))[::-1]
        attempts = [0] * len(batches)
        pending: dict[ray.ObjectRef, tuple[int, int]] = {}
        load = [0] * len(self.actors)

        def submit(batch_id: int) -> None:
            slot = min(range(len(self.actors)), key=lambda i: (load[i], (batch_id + i) % len(load)))
            attempts[batch_id] += 1
            ref = getattr(self.actors[slot], method).remote(batch_id, batches[batch_id], *extra)
            pending[ref] = (batch_id, slot)
            load[slot] += 1

        capacity = self.in_flight_each * len(self.actors)
        while queue or pending:
            while queue and len(pending) < capacity:
                submit(queue.pop())
            done, _ = ray.wait(list(pending), num_returns=1)
            batch_id, slot = pending.pop(done[0])
            load[slot] -= 1
            try:
                result = ray.get(done[0])
            except (RayActorError, ActorUnavailableError) as err:
                if attempts[batch_id] >= self.max_attempts:
                    raise RuntimeError(
                        f"batch {batch_id} failed on {attempts[batch_id]} replicas: {err}"
                    ) from err
                self.resubmitted += 1
                log.warning("replica %d died on batch %d; resubmitting", slot, batch_id)
                if on_resubmit:
                    on_resubmit(batch_id, type(err).__name__)
                queue.append(batch_id)
                continue
            yield result

    def wait_ready(self) -> None:
        """Block until every replica has loaded its model (start-up is timed apart from throughput)."""
        ray.get([actor.pid.remote() for actor in self.actors])

    def pids(self) -> list[int]:
        return ray.get([actor.pid.remote() for actor in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
