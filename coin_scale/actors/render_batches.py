"""The render pool's work without Ray: its configuration, scenes cut into batches, and the
batches' outcomes put back in request order (each scene exactly once), then checked."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unity_pool import protocol
from unity_pool.client import RenderFailed, RenderFailure, RenderResult
from unity_pool.launcher import PROCEDURAL_COMMAND, LaunchSpec
from unity_pool.scene import Scene, SceneError

UNITY_SLOT = "unity_slot"
"""The custom Ray resource a node offers per renderer it can host (see cluster.yaml)."""

Outcome = RenderResult | RenderFailure
"""One scene's result: the image, or why that scene failed (an invalid spec, a backend error)."""


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
    gpus_each: float = 0.0
    """Ray GPUs reserved per worker (a diffusion backend runs on the GPU its worker is given)."""
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
        if self.cpus_each < 0 or self.gpus_each < 0 or self.backend_restarts < 0:
            raise ValueError(
                f"cpus_each, gpus_each and backend_restarts: expected >= 0; got "
                f"{self.cpus_each!r}, {self.gpus_each!r} and {self.backend_restarts!r}."
            )
        spec = LaunchSpec(command=self.command, start_timeout=self.start_timeout)  # validates
        object.__setattr__(self, "command", spec.command)  # a list from YAML becomes a tuple

    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec(command=self.command, start_timeout=self.start_timeout)

    def actor_options(self) -> dict[str, Any]:
        """The Ray options of each worker actor."""
        options: dict[str, Any] = {"num_cpus": self.cpus_each}
        if self.gpus_each:
            options["num_gpus"] = self.gpus_each
        if self.unity_slot:
            options["resources"] = {UNITY_SLOT: 1}
        return options


def cut(scenes: Sequence[Scene | Mapping[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """The scenes as plain specs, in batches of `size` (the last may be shorter)."""
    specs = [s.to_dict() if isinstance(s, Scene) else dict(s) for s in scenes]
    return [specs[i : i + size] for i in range(0, len(specs), size)]


class InRequestOrder:
    """Batch outcomes arriving in any order, given back scene by scene in request order; a
    failure's index becomes its scene's index in the request."""

    def __init__(self, batches: Sequence[Sequence[Any]]) -> None:
        self.sizes = [len(b) for b in batches]
        self.starts = [0, *itertools.accumulate(self.sizes)][:-1]
        self.done: dict[int, list[Outcome]] = {}
        self.next = 0

    def add(self, batch_id: int, outcomes: list[Outcome], *, worker: int) -> Iterator[Outcome]:
        """Take one batch's outcomes (from `worker`); yield every scene now due, in order."""
        if batch_id in self.done or batch_id < self.next:
            raise AssertionError(f"batch {batch_id} came back twice")
        if len(outcomes) != self.sizes[batch_id]:
            raise RenderFailed(
                f"worker {worker} answered {len(outcomes)} outcomes for batch {batch_id} of "
                f"{self.sizes[batch_id]} scenes"
            )
        start = self.starts[batch_id]
        self.done[batch_id] = [
            dataclasses.replace(o, index=start + o.index) if isinstance(o, RenderFailure) else o
            for o in outcomes
        ]
        while self.next in self.done:
            yield from self.done.pop(self.next)
            self.next += 1


def images(outcomes: Sequence[Outcome]) -> list[RenderResult]:
    """The images of `outcomes`, all of which must have rendered: raises `SceneError` naming
    each invalid spec's index and field, `RenderFailed` for any other failed scene."""
    failures = [o for o in outcomes if isinstance(o, RenderFailure)]
    if failures:
        detail = "; ".join(f"scene {f.index}: {f.message}" for f in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        message = f"{len(failures)} of {len(outcomes)} scenes failed: {detail}{more}"
        if all(f.type == protocol.INVALID_SCENE for f in failures):
            raise SceneError(message, path=failures[0].path)
        raise RenderFailed(message)
    return [o for o in outcomes if isinstance(o, RenderResult)]
