"""A pool of ModelReplica actors fed batches, with a bounded number in flight and failover."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from coin_scale.actors.replica import ModelReplica, WorkRef
from coin_scale.models.batches import Batch, BatchResult, MapsResult, ReplicaWork

log = logging.getLogger(__name__)


class SlotHealth:
    """Which replicas may take work now. A replica that lost a batch (its process or its node
    died; Ray is restarting it) rests for a backoff that doubles with each consecutive loss, so a
    batch is not thrown back at it while it restarts and every attempt is not spent in a second."""

    def __init__(self, slots: int, *, first_s: float = 0.5, max_s: float = 8.0) -> None:
        self.failures = [0] * slots
        self.resting_until = [0.0] * slots
        self.first_s, self.max_s = first_s, max_s

    def ready_slots(self) -> list[int]:
        now = time.monotonic()
        return [i for i, until in enumerate(self.resting_until) if until <= now]

    def wait_s(self) -> float:
        """Seconds until the next resting replica is due (at least a short poll)."""
        return max(0.05, min(self.resting_until) - time.monotonic())

    def failed(self, slot: int) -> float:
        delay = min(self.max_s, self.first_s * 2 ** self.failures[slot])
        self.failures[slot] += 1
        self.resting_until[slot] = time.monotonic() + delay
        return delay

    def succeeded(self, slot: int) -> None:
        self.failures[slot] = 0


class ReplicaPool:
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
    ) -> None:
        """`work`: what every replica computes (model, layers, reductions, SAE transforms)."""
        self._created = time.perf_counter()
        self.startup_seconds = 0.0
        """Seconds from creating the pool until `wait_ready` saw every replica's model built."""
        # Shipped once; every call carries this reference (not the constructor: see ModelReplica),
        # and the pool holds it while it lives, so a replica that Ray restarts can rebuild.
        self.work = WorkRef(ray.put(work))
        options = {"num_cpus": cpus_each, "num_gpus": gpus_each}
        self.actors = [
            ModelReplica.options(**options).remote()  # type: ignore[attr-defined]
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
        health = SlotHealth(len(self.actors))

        def submit(batch_id: int) -> None:
            ready = health.ready_slots()
            slot = min(ready, key=lambda i: (load[i], (batch_id + i) % len(load)))
            attempts[batch_id] += 1
            ref = getattr(self.actors[slot], method).remote(
                self.work, batch_id, batches[batch_id], *extra
            )
            pending[ref] = (batch_id, slot)
            load[slot] += 1

        capacity = self.in_flight_each * len(self.actors)
        while queue or pending:
            while queue and len(pending) < capacity and health.ready_slots():
                submit(queue.pop())
            if not pending:  # every replica is restarting: wait for the first to be due again
                time.sleep(health.wait_s())
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=health.wait_s() if queue else None)
            if not done:
                continue
            batch_id, slot = pending.pop(done[0])
            load[slot] -= 1
            try:
                result = ray.get(done[0])
            except (RayActorError, ActorUnavailableError) as err:
                if attempts[batch_id] >= self.max_attempts:
                    raise RuntimeError(
                        f"batch {batch_id} failed on {attempts[batch_id]} attempts: {err}"
                    ) from err
                self.resubmitted += 1
                delay = health.failed(slot)
                log.warning(
                    "replica %d lost batch %d (%s); resubmitting, that replica rested %.1f s",
                    slot, batch_id, type(err).__name__, delay,
                )  # fmt: skip
                if on_resubmit:
                    on_resubmit(batch_id, type(err).__name__)
                queue.append(batch_id)
                continue
            health.succeeded(slot)
            yield result

    def wait_ready(self) -> None:
        """Block until every replica has loaded its model (start-up is timed apart from throughput)."""
        ray.get([actor.load.remote(self.work) for actor in self.actors])
        self.startup_seconds = time.perf_counter() - self._created

    def pids(self) -> list[int]:
        return ray.get([actor.pid.remote() for actor in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
