"""A pool of RenderWorker actors: scenes in, every image exactly once and in request order out.

Scenes are cut into batches of `batch_size`; at most `in_flight_each` batches per worker are
submitted at a time (backpressure with `ray.wait`), each to the least loaded worker that has not
just failed. A worker whose backend dies re-issues the batch itself; when the whole actor dies
the pool resubmits the batch to another worker, so no image is lost and none is returned twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from coin_scale.actors.render_worker import Outcome, RenderWorker, WorkerStatus
from unity_pool import protocol
from unity_pool.client import RendererUnavailable, RenderFailed, RenderFailure, RenderResult
from unity_pool.launcher import PROCEDURAL_COMMAND, LaunchSpec
from unity_pool.scene import Scene, SceneError

log = logging.getLogger(__name__)

UNITY_SLOT = "unity_slot"
"""The custom Ray resource a node offers per renderer it can host (see cluster.yaml)."""


@dataclass(frozen=True, kw_only=True)
class RenderPoolConfig:
    """How many render workers, what they run and how they are fed."""

    workers: int = 2
    """Render worker actors, each owning one backend process."""
    command: tuple[str, ...] = PROCEDURAL_COMMAND
    """The backend's argv (`python` = the worker's interpreter); it must print `READY <port>`."""
    start_timeout: float = 30.0
    """Seconds a backend may take to print READY and answer a ping."""
    request_timeout: float = 60.0
    """Seconds one batch may take before the backend counts as hung and is restarted."""
    batch_size: int = 16
    """Scenes per request to a worker."""
    in_flight_each: int = 2
    """Batches queued per worker, so a worker never waits for the driver."""
    cpus_each: float = 1.0
    """Ray CPUs reserved per worker (its backend process does the drawing)."""
    unity_slot: bool = False
    """Also require one `unity_slot` custom resource per worker; local clusters have none."""
    backend_restarts: int = 3
    """Backend restarts a worker tries for one batch before giving up on it."""
    max_attempts: int = 4
    """Workers a batch is tried on (after actor deaths) before the pool gives up."""

    def __post_init__(self) -> None:
        for name in ("workers", "batch_size", "in_flight_each", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1; got {value!r}.")
        if self.cpus_each < 0 or self.backend_restarts < 0:
            raise ValueError(
                f"cpus_each and backend_restarts: expected >= 0; got {self.cpus_each!r} and "
                f"{self.backend_restarts!r}."
            )
        spec = LaunchSpec(command=self.command, start_timeout=self.start_timeout)  # validates
        object.__setattr__(self, "command", spec.command)  # a list from YAML becomes a tuple

    def actor_options(self) -> dict[str, Any]:
        """The Ray options of each worker actor."""
        options: dict[str, Any] = {"num_cpus": self.cpus_each}
        if self.unity_slot:
            options["resources"] = {UNITY_SLOT: 1}
        return options


def _cause(err: BaseException) -> BaseException:
    """The exception a remote task raised, without Ray's wrapper."""
    cause = getattr(err, "cause", None) if isinstance(err, RayTaskError) else None
    return cause if isinstance(cause, BaseException) else err


class RenderPool:
    """N render workers. Implements `render_many`, so it can back `unity_pool.tools`."""

    def __init__(self, config: RenderPoolConfig | None = None) -> None:
        self.config = config = config or RenderPoolConfig()
        spec = LaunchSpec(command=config.command, start_timeout=config.start_timeout)
        if config.unity_slot and ray.cluster_resources().get(UNITY_SLOT, 0) < config.workers:
            log.warning(
                "%d workers ask for the %r resource but the cluster has %s; they will wait for "
                "nodes that offer it", config.workers, UNITY_SLOT,
                ray.cluster_resources().get(UNITY_SLOT, 0),
            )  # fmt: skip
        self.workers = [
            RenderWorker.options(**config.actor_options()).remote(  # type: ignore[attr-defined]
                spec, config.request_timeout, config.backend_restarts
            )
            for _ in range(config.workers)
        ]
        self.resubmitted = 0
        """Batches sent to another worker because their actor died."""
        self._answered: set[int] = set()  # workers that have answered a call (may own a backend)

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def wait_ready(self, timeout: float | None = None) -> list[WorkerStatus]:
        """Start every backend and wait for it; raises `BackendStartError` if one cannot start,
        `RendererUnavailable` if the workers are not even scheduled within `timeout` seconds."""
        refs = [worker.start.remote() for worker in self.workers]
        try:
            statuses = list(ray.get(refs, timeout=timeout))
            self._answered.update(range(len(self.workers)))
            return statuses
        except GetTimeoutError as err:
            have = ray.cluster_resources().get(UNITY_SLOT, 0)
            hint = (
                f" They need one {UNITY_SLOT!r} resource each and the cluster has {have:g}. Fix: "
                "start nodes with --resources '{\"unity_slot\": N}', or drop the unity_slot option."
                if self.config.unity_slot
                else " Fix: free CPUs (each worker reserves cpus_each) or raise the timeout."
            )
            raise RendererUnavailable(
                f"{len(self.workers)} render workers were not ready within {timeout}s.{hint}"
            ) from err
        except RayTaskError as err:
            raise _cause(err) from None

    def status(self) -> list[WorkerStatus]:
        """Every worker's pid and its backend's pid, port and restart counts."""
        return list(ray.get([worker.status.remote() for worker in self.workers]))

    def ping(self) -> list[dict[str, Any]]:
        """Health check of every worker's backend (restarting dead ones)."""
        return list(ray.get([worker.ping.remote() for worker in self.workers]))

    def iter_outcomes(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> Iterator[Outcome]:
        """One outcome per scene, in request order, streamed as batches complete."""
        size = self.config.batch_size
        specs = [s.to_dict() if isinstance(s, Scene) else dict(s) for s in scenes]
        batches = [specs[i : i + size] for i in range(0, len(specs), size)]
        done: dict[int, list[Outcome]] = {}
        next_out = 0
        for batch_id, outcomes in self._run(batches):
            if batch_id in done or batch_id < next_out:
                raise AssertionError(f"batch {batch_id} came back twice")
            start = batch_id * size
            done[batch_id] = [
                dataclasses.replace(o, index=start + o.index) if isinstance(o, RenderFailure) else o
                for o in outcomes
            ]
            while next_out in done:
                yield from done.pop(next_out)
                next_out += 1

    def render_outcomes(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[Outcome]:
        """One outcome per scene, in request order: a `RenderResult` or a `RenderFailure`."""
        return list(self.iter_outcomes(scenes))

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        """Images for all scenes, in order; raises `SceneError` naming each invalid spec's index
        and field, `RenderFailed` for any other failed scene."""
        outcomes = self.render_outcomes(scenes)
        failures = [o for o in outcomes if isinstance(o, RenderFailure)]
        if failures:
            detail = "; ".join(f"scene {f.index}: {f.message}" for f in failures[:3])
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            message = f"{len(failures)} of {len(scenes)} scenes failed: {detail}{more}"
            if all(f.type == protocol.INVALID_SCENE for f in failures):
                raise SceneError(message, path=failures[0].path)
            raise RenderFailed(message)
        return [o for o in outcomes if isinstance(o, RenderResult)]

    def _run(self, batches: list[list[dict[str, Any]]]) -> Iterator[tuple[int, list[Outcome]]]:
        """(batch id, outcomes) in completion order; a batch whose actor died goes elsewhere."""
        queue = list(range(len(batches)))[::-1]
        attempts = [0] * len(batches)
        load = [0] * len(self.workers)
        failed = [0] * len(self.workers)  # consecutive actor deaths: avoid those workers
        pending: dict[ray.ObjectRef, tuple[int, int]] = {}

        def submit(batch_id: int) -> None:
            n = len(self.workers)
            slot = min(range(n), key=lambda i: (failed[i], load[i], (batch_id + i) % n))
            attempts[batch_id] += 1
            pending[self.workers[slot].render.remote(batches[batch_id])] = (batch_id, slot)
            load[slot] += 1

        capacity = self.config.in_flight_each * len(self.workers)
        while queue or pending:
            while queue and len(pending) < capacity:
                submit(queue.pop())
            ready, _ = ray.wait(list(pending), num_returns=1)
            batch_id, slot = pending.pop(ready[0])
            load[slot] -= 1
            try:
                outcomes: list[Outcome] = ray.get(ready[0])
            except (RayActorError, ActorUnavailableError) as err:
                failed[slot] += 1
                if attempts[batch_id] >= self.config.max_attempts:
                    raise RendererUnavailable(
                        f"batch {batch_id} was lost with {attempts[batch_id]} render workers "
                        f"(last: {err}). Fix: check the workers' logs."
                    ) from err
                self.resubmitted += 1
                log.warning("render worker %d died on batch %d; resubmitting", slot, batch_id)
                queue.append(batch_id)
                continue
            except RayTaskError as err:
                raise _cause(err) from None
            failed[slot] = 0
            self._answered.add(slot)
            if len(outcomes) != len(batches[batch_id]):
                raise RenderFailed(
                    f"worker {slot} answered {len(outcomes)} outcomes for batch {batch_id} of "
                    f"{len(batches[batch_id])} scenes"
                )
            yield batch_id, outcomes

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the backend processes (waiting up to `timeout` seconds), then kill the actors.

        Actors that never answered are killed at once; a backend they may have started dies with
        them (`LaunchSpec.die_with_parent`). Safe to call twice.
        """
        workers, self.workers = self.workers, []
        refs = [w.shutdown.remote() for i, w in enumerate(workers) if i in self._answered]
        self._answered.clear()
        start = time.monotonic()
        for ref in refs:
            try:
                ray.get(ref, timeout=max(0.1, timeout - (time.monotonic() - start)))
            except Exception as err:  # a dead actor has no backend left (die_with_parent)
                log.debug("render worker shutdown: %s", err)
        for worker in workers:
            ray.kill(worker)


__all__ = ["UNITY_SLOT", "RenderPool", "RenderPoolConfig"]
