"""RenderWorker: a Ray actor that owns one renderer backend process and renders batches of specs.

The work is `unity_pool.launcher.SupervisedRenderer` (start the process, wait for READY and a
ping, restart it and re-issue the request when it dies); the actor only holds it. The backend is
started lazily by the first call (`start`, `ping` or `render`), so an actor that Ray restarts
after a crash brings up a fresh backend on its next call. A backend that cannot start raises
`BackendStartError` from that call, naming the command and the timeout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray

from coin_scale.actors.render_batches import Outcome
from unity_pool.launcher import LaunchSpec, RendererStatus, SupervisedRenderer


@dataclass(frozen=True, kw_only=True)
class WorkerStatus:
    """A render worker and the backend it owns."""

    worker_pid: int
    """Process id of the Ray actor."""
    backend: RendererStatus
    """Its backend process: pid, port, restarts, re-issued requests."""


@ray.remote(max_restarts=4, max_task_retries=0)  # type: ignore[call-overload]
class RenderWorker:
    """Thin actor around SupervisedRenderer. Runs tasks one at a time on its main thread, which
    therefore outlives the backend it starts (needed by `LaunchSpec.die_with_parent`)."""

    def __init__(self, spec: LaunchSpec, timeout: float, max_restarts: int) -> None:
        self.renderer = SupervisedRenderer(spec, timeout=timeout, max_restarts=max_restarts)

    def start(self) -> WorkerStatus:
        """Start the backend if needed (raises `BackendStartError`)."""
        self.renderer.start()
        return self.status()

    def ping(self) -> dict[str, Any]:
        """Health check (restarts a dead backend): backend name and pid, port, worker pid and
        restart counts."""
        answer = self.renderer.ping()
        status = self.renderer.status()
        return {
            "backend": answer.get("backend"),
            "backend_pid": answer.get("pid"),
            "port": status.port,
            "worker_pid": os.getpid(),
            "restarts": status.restarts,
            "reissued": status.reissued,
        }

    def render(self, specs: list[Mapping[str, Any]]) -> list[Outcome]:
        """Render one batch of scene specs (plain dicts), one outcome per spec, in order."""
        return self.renderer.render_outcomes(specs)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[bytes]:
        """PNG bytes of one image per prompt (a diffusion backend), prompt `i` seeded `seeds[i]`."""
        return self.renderer.generate(prompts, seeds)

    def edit(self, image: bytes, instruction: str, seed: int) -> bytes:
        """PNG bytes of the encoded `image` edited as `instruction` says (a diffusion backend)."""
        return self.renderer.edit(image, instruction, seed)

    def status(self) -> WorkerStatus:
        return WorkerStatus(worker_pid=os.getpid(), backend=self.renderer.status())

    def pid(self) -> int:
        """This actor's process id (as every pool's actors answer it)."""
        return os.getpid()

    def shutdown(self) -> None:
        """Stop the backend process (the pool then kills the actor)."""
        self.renderer.stop()
