"""ModelReplica: a Ray actor that holds one copy of the model (a `ReplicaCore`, in
`coin_scale.models.replica_core`) and returns reduced activations (dissection), a layer's whole
conv maps (SAE training), a few units' spatial maps (the sweep's exemplar maps) or the reduced
activations of images sent already decoded (the agents' measurements), or runs a `ModuleCall`
(the sweep's attribution, chain edges, ablations and scoring)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import ray

from coin_scale.agent.visualizer import VisualizationSpec, render_pngs
from coin_scale.models.batches import (
    BatchResult,
    MapsResult,
    ReplicaWork,
    UnitMapsResult,
    VisualizeResult,
)
from coin_scale.models.module_call import CallResult, ModuleCall
from coin_scale.models.replica_core import CALLS_AT_ONCE, ReplicaCore
from coin_scale.models.unit_maps import UnitMapsRequest


@dataclass(frozen=True, slots=True)
class WorkRef:
    """The pool's `ReplicaWork` in the object store, passed with every replica call. Ray resolves only the
    top-level `ObjectRef` arguments of a call, so nested here the reference travels as is (a few
    bytes, kept alive for the call by Ray's reference counting) and is fetched only by a replica
    that has no core yet."""

    ref: ray.ObjectRef


@ray.remote(max_restarts=4, max_task_retries=0, max_concurrency=CALLS_AT_ONCE)  # type: ignore[call-overload]
class ModelReplica:
    """Thin actor around ReplicaCore. Two calls run at once; on a CPU each forward pass has half
    the cores and they run side by side (`replica_core.call_threads`), on a GPU one decodes while
    the other computes.

    The model is not a constructor argument. Ray re-runs `__init__` with the same arguments when
    it restarts a dead actor but does not pin the ones held in the object store for that (a
    model's weights always are: Ray puts any large argument there), so it logs an error for every
    such actor with max_restarts > 0 (ray-project/ray#53727). Instead every call carries the
    pool's `WorkRef`, and the first call after a start or a restart (`load`, or the first batch)
    fetches the work and builds the core; the pool holds the reference while it lives, so a
    restarted replica can always rebuild."""

    def __init__(self) -> None:
        self.core: ReplicaCore | None = None
        self._building = threading.Lock()

    def _core(self, work: WorkRef) -> ReplicaCore:
        with self._building:  # two calls may arrive at once: build one core
            if self.core is None:
                # A replica that reserves no CPU (the sweep's `ReplicaModel`, which works in
                # bursts between the other pools' stages) uses the node's cores when it works.
                assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
                cpus = int(assigned) or (os.cpu_count() or 1)
                w: ReplicaWork = ray.get(work.ref)
                self.core = ReplicaCore(
                    w.payload, dict(w.layers), w.reductions, threads=cpus,  # type: ignore[arg-type]
                    unit_transforms=w.unit_transforms,
                )  # fmt: skip
            return self.core

    def load(self, work: WorkRef) -> int:
        """Build the core now (so start-up is timed apart from the work); the process id."""
        self._core(work)
        return os.getpid()

    def run(self, work: WorkRef, batch_id: int, items: list[tuple[int, str]]) -> BatchResult:
        return self._core(work).run(batch_id, items)

    def run_pixels(self, work: WorkRef, batch_id: int, pixels: np.ndarray) -> BatchResult:
        return self._core(work).run_pixels(batch_id, pixels)

    def run_maps(
        self, work: WorkRef, batch_id: int, items: list[tuple[int, str]], layer: str
    ) -> MapsResult:
        return self._core(work).run_maps(batch_id, items, layer)

    def run_unit_maps(
        self,
        work: WorkRef,
        batch_id: int,
        items: list[tuple[int, str]],
        requests: tuple[UnitMapsRequest, ...],
    ) -> UnitMapsResult:
        return self._core(work).run_unit_maps(batch_id, items, requests)

    def visualize(
        self, work: WorkRef, batch_id: int, request: tuple[VisualizationSpec, int, int]
    ) -> VisualizeResult:
        """`n` feature visualizations of `spec` (request: spec, n, seed) on this replica's model."""
        spec, n, seed = request
        start = time.perf_counter()
        core = self._core(work)
        with core.exclusive() as module:
            pngs, values = render_pngs(module, core.preprocess, spec, n, seed)
        passes = spec.steps + 1  # the optimisation's steps, then the final images measured
        return VisualizeResult(
            batch_id=batch_id, pngs=pngs, values=values, passes=passes, images=passes * n,
            seconds=time.perf_counter() - start,
        )  # fmt: skip

    def call(self, work: WorkRef, batch_id: int, call: ModuleCall) -> CallResult:
        """A `ModuleCall` (attribution, chain edges, ablations, scoring) on this replica's model."""
        return self._core(work).call(batch_id, call)

    def pid(self) -> int:
        return os.getpid()
