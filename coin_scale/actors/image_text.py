"""Image-text replicas: Ray actors that each hold one open_clip model (`ImageTextModel`) and
encode batches of probe images, and their pool, fed through the pools' one dispatch loop
(`coin_scale.actors.dispatch`: a bounded number of batches in flight, failover after a lost
replica). The image side of the photo explainers' concept scores (issue 18)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ray

from coin_scale.actors.dispatch import DispatchedPool, Dispatcher
from coin_scale.models.image_text import EmbeddingResult, ImageTextModel, ImageTextSource
from coin_scale.models.replica_core import CALLS_AT_ONCE, call_threads


@ray.remote(max_restarts=4, max_task_retries=0, max_concurrency=CALLS_AT_ONCE)  # type: ignore[call-overload]
class ImageTextReplica:
    """Thin actor around `ImageTextModel`, built on the first call from the source (a few
    strings, so a restarted replica rebuilds it from its constructor arguments). Two calls run at
    once, on a CPU each with half the cores (`models.replica_core.call_threads`, as model replicas
    do; ViT-B-32, 320 photos on Ray, 2 cores: 26.4 and 27.0 img/s with one thread each against
    24.7 and 21.5 with both): neither call's decoding stalls the other's threads."""

    def __init__(self, source: ImageTextSource) -> None:
        self.source = source
        self.model: ImageTextModel | None = None
        self._building = threading.Lock()

    def _model(self) -> ImageTextModel:
        with self._building:
            if self.model is None:
                import torch

                assigned = ray.get_runtime_context().get_assigned_resources()
                device = "cuda" if assigned.get("GPU", 0) and torch.cuda.is_available() else "cpu"
                threads = call_threads(torch.device(device), int(assigned.get("CPU", 1)))
                torch.set_num_threads(threads or 1)
                self.model = ImageTextModel(self.source, device=device)
            return self.model

    def load(self) -> str:
        """Build the model now (start-up timed apart from the work); its weights' fingerprint."""
        return self._model().fingerprint()

    def embed(self, batch_id: int, items: list[tuple[int, str]]) -> EmbeddingResult:
        return self._model().embed_batch(batch_id, items)

    def pid(self) -> int:
        return os.getpid()


class ImageTextPool(DispatchedPool):
    """N image-text replicas; `embed` yields every batch's result once, resubmitting after a crash."""

    def __init__(
        self,
        source: ImageTextSource,
        *,
        replicas: int,
        cpus_each: float,
        gpus_each: float,
        in_flight_each: int = 3,
        max_attempts: int = 8,
    ) -> None:
        self._created = time.perf_counter()
        self.startup_seconds = 0.0
        options = {"num_cpus": cpus_each, "num_gpus": gpus_each}
        actors = [
            ImageTextReplica.options(**options).remote(source)  # type: ignore[attr-defined]
            for _ in range(replicas)
        ]
        self.dispatch = Dispatcher(
            actors, kind="image-text replica", max_attempts=max_attempts,
            in_flight_each=in_flight_each,
        )  # fmt: skip

    def embed(self, batches: Sequence[Sequence[tuple[int, str]]]) -> Iterator[EmbeddingResult]:
        """Every batch's `EmbeddingResult`, in completion order."""

        def submit(actor: Any, batch_id: int) -> ray.ObjectRef:
            return actor.embed.remote(batch_id, list(batches[batch_id]))

        stream = self.dispatch.stream(len(batches), submit, what="image batch {}".format)
        return (done.value for done in stream)

    def wait_ready(self) -> None:
        """Block until every replica has built its model."""
        ray.get([actor.load.remote() for actor in self.actors])
        self.startup_seconds = time.perf_counter() - self._created
