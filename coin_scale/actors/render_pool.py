"""A pool of RenderWorker actors: scenes in, every image exactly once and in request order out.

Scenes are cut into batches of `batch_size` and fed through the pools' one dispatch loop
(`coin_scale.actors.dispatch`): at most `in_flight_each` batches per worker in flight, each to
the least loaded worker that is not resting after a loss. A worker whose backend dies re-issues
the batch itself; when the whole actor dies the batch goes to another worker, so no image is
lost and none is returned twice (`render_batches.InRequestOrder` puts them back in order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayTaskError

from coin_scale.accounting import RENDERS
from coin_scale.actors.dispatch import DispatchedPool, Dispatcher, task_cause
from coin_scale.actors.render_batches import (
    UNITY_SLOT,
    InRequestOrder,
    Outcome,
    RenderPoolConfig,
    cut,
    images,
)
from coin_scale.actors.render_worker import RenderWorker, WorkerStatus
from unity_pool.client import RendererUnavailable, RenderResult
from unity_pool.scene import Scene

log = logging.getLogger(__name__)


def _give_up(what: str, attempts: int, err: BaseException) -> BaseException:
    return RendererUnavailable(
        f"{what} was lost with {attempts} render workers (last: {err}). "
        "Fix: check the workers' logs."
    )


class RenderPool(DispatchedPool):
    """N render workers. Implements `render_many`, so it can back `unity_pool.tools`."""

    def __init__(self, config: RenderPoolConfig | None = None) -> None:
        self.config = config = config or RenderPoolConfig()
        if config.unity_slot and ray.cluster_resources().get(UNITY_SLOT, 0) < config.workers:
            log.warning(
                "%d workers ask for the %r resource but the cluster has %s; they will wait for "
                "nodes that offer it", config.workers, UNITY_SLOT,
                ray.cluster_resources().get(UNITY_SLOT, 0),
            )  # fmt: skip
        workers = [
            RenderWorker.options(**config.actor_options()).remote(  # type: ignore[attr-defined]
                config.launch_spec(), config.request_timeout, config.backend_restarts
            )
            for _ in range(config.workers)
        ]
        self.dispatch = Dispatcher(
            workers, kind="render worker", max_attempts=config.max_attempts,
            in_flight_each=config.in_flight_each, give_up=_give_up,
        )  # fmt: skip
        self._answered: set[int] = set()  # workers that have answered a call (may own a backend)

    @property
    def workers(self) -> list[Any]:
        return self.dispatch.actors

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
            raise task_cause(err) from None

    def status(self) -> list[WorkerStatus]:
        """Every worker's pid and its backend's pid, port and restart counts."""
        return list(ray.get([worker.status.remote() for worker in self.workers]))

    def ping(self) -> list[dict[str, Any]]:
        """Health check of every worker's backend (restarting dead ones)."""
        return list(ray.get([worker.ping.remote() for worker in self.workers]))

    def iter_outcomes(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> Iterator[Outcome]:
        """One outcome per scene, in request order, streamed as batches complete."""
        batches = cut(scenes, self.config.batch_size)
        order = InRequestOrder(batches)
        stream = self.dispatch.stream(
            len(batches), lambda worker, i: worker.render.remote(batches[i]),
            what="batch {}".format,
        )  # fmt: skip
        try:
            for batch_id, slot, outcomes in stream:
                self._answered.add(slot)
                RENDERS.count("render_pool", len(outcomes))
                yield from order.add(batch_id, outcomes, worker=slot)
        except RayTaskError as err:
            raise task_cause(err) from None

    def render_outcomes(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[Outcome]:
        """One outcome per scene, in request order: a `RenderResult` or a `RenderFailure`."""
        return list(self.iter_outcomes(scenes))

    def render_many(self, scenes: Sequence[Scene | Mapping[str, Any]]) -> list[RenderResult]:
        """Images for all scenes, in order; raises `SceneError` naming each invalid spec's index
        and field, `RenderFailed` for any other failed scene."""
        return images(self.render_outcomes(scenes))

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[bytes]:
        """PNG bytes of one generated image per prompt, prompt `i` sampled with `seeds[i]`, on
        one worker (a diffusion backend); a worker lost mid-request is replaced by another, the
        request sent again (the same seeds give the same images)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        images = self._one(
            lambda worker: worker.generate.remote(prompts, seeds), f"generation of {len(prompts)}"
        )
        RENDERS.count("render_pool", len(images))
        return list(images)

    def edit(self, image: bytes, instruction: str, seed: int) -> bytes:
        """PNG bytes of the encoded `image` edited as `instruction` says, on one worker (a
        diffusion backend); failover as for `generate`."""
        edited = self._one(lambda worker: worker.edit.remote(image, instruction, seed), "edit")
        RENDERS.count("render_pool", 1)
        return bytes(edited)

    def _one(self, submit: Any, what: str) -> Any:
        """One call on the least loaded live worker, resubmitted while workers are lost; the
        task's own error (a bad request, a failed pipeline) raised as itself."""
        try:
            for done in self.dispatch.stream(1, lambda worker, _: submit(worker), what=lambda _: what):
                self._answered.add(done.slot)
                return done.value
        except RayTaskError as err:
            raise task_cause(err) from None
        raise AssertionError("unreachable: the stream yields its one item or raises")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the backend processes (waiting up to `timeout` seconds), then kill the actors.

        Actors that never answered are killed at once; a backend they may have started dies with
        them (`LaunchSpec.die_with_parent`). Safe to call twice.
        """
        workers, self.dispatch.actors = self.dispatch.actors, []
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
