"""Similarity replicas: Ray actors that each hold one perceptual similarity model (DreamSim or
LPIPS, MIS's judge) over a probe set's images, and their pool, fed through the pools' one
dispatch loop (a lost replica's call goes to another). Issue 19, item 7: the similarity runs
where the model replicas run, GPUs included, not in the driver."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayTaskError

from coin_scale.actors.dispatch import DispatchedPool, Dispatcher, task_cause
from coin_scale.eval.similarity import IndexedSimilarity, SimilarityWork, indexed_similarity


@dataclass(frozen=True, slots=True)
class SimilarityRef:
    """The pool's `SimilarityWork` in the object store, carried by every call (a restarted
    replica rebuilds from it; see `ModelReplica` for why it is not a constructor argument)."""

    ref: ray.ObjectRef


@ray.remote(max_restarts=4, max_task_retries=0)  # type: ignore[call-overload]
class SimilarityReplica:
    """Thin actor around `IndexedSimilarity`, built on its first call."""

    def __init__(self) -> None:
        self.similarity: IndexedSimilarity | None = None
        self._building = threading.Lock()

    def _get(self, work: SimilarityRef) -> IndexedSimilarity:
        with self._building:
            if self.similarity is None:
                import torch

                assigned = ray.get_runtime_context().get_assigned_resources()
                torch.set_num_threads(int(assigned.get("CPU", 0)) or (os.cpu_count() or 1))
                self.similarity = indexed_similarity(ray.get(work.ref))
            return self.similarity

    def load(self, work: SimilarityRef) -> int:
        """Load the similarity's weights now (a missing file fails here, before any task)."""
        self._get(work)
        return os.getpid()

    def compare(self, work: SimilarityRef, _batch_id: int, pair: tuple[list[int], list[int]]) -> np.ndarray:
        a, b = pair
        return np.asarray(self._get(work)(a, b), dtype=np.float64)


class SimilarityPool(DispatchedPool):
    """N similarity replicas; calling the pool is a `Similarity` over the probe's image indices."""

    def __init__(self, work: SimilarityWork, *, replicas: int, cpus_each: float, gpus_each: float) -> None:
        self.work = SimilarityRef(ray.put(work))
        options = {"num_cpus": cpus_each, "num_gpus": gpus_each}
        actors = [SimilarityReplica.options(**options).remote() for _ in range(replicas)]  # type: ignore[attr-defined]
        self.dispatch = Dispatcher(actors, kind="similarity replica", max_attempts=8)

    def wait_ready(self) -> None:
        """Load the similarity on every replica; its own error (missing weights) as itself."""
        try:
            ray.get([actor.load.remote(self.work) for actor in self.actors])
        except RayTaskError as err:
            raise task_cause(err) from None

    def __call__(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        pair = ([int(i) for i in a], [int(i) for i in b])
        stream = self.dispatch.stream(
            1, lambda actor, i: actor.compare.remote(self.work, i, pair), what="comparison {}".format
        )
        try:
            (done,) = list(stream)
        except RayTaskError as err:
            raise task_cause(err) from None
        return done.value
