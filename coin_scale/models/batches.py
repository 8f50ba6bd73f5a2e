"""Batches of probe images run through a model's replicas: what goes in, what comes back, and the
protocol of whatever runs them, so the stages (`dissect`, `sae`) can drive replicas without
knowing where they live.

The replicas themselves (Ray actors, a pool with failover) are in the actors package; the driver
layer (`coin_scale.runtime.pools`) starts them and hands a `BatchRunner` to the stage through
an `OpenReplicas` callable, which the stage calls only when it has work (a cached result
starts nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload
from coin_scale.models.unit_maps import UnitMapsRequest

Batch = list[tuple[int, str]]
"""(image index, image path) pairs: replicas read the files themselves."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a replica returns for one batch: small pooled matrices, never feature maps."""

    batch_id: int
    indices: np.ndarray
    """int64 (batch,) image indices that decoded and ran."""
    activations: dict[str, dict[str, np.ndarray]]
    """{layer: {reduction: float32 (batch, unit)}}."""
    failures: list[tuple[int, str]]
    seconds: float


@dataclass(frozen=True, slots=True)
class MapsResult:
    """What a replica returns for one batch of `run_maps`: a layer's whole conv maps (for SAEs)."""

    batch_id: int
    indices: np.ndarray
    """int64 (batch,) image indices that decoded and ran."""
    maps: np.ndarray
    """float16 (batch, channel, height, width), contiguous; (0, 0, 0, 0) when nothing decoded."""
    failures: list[tuple[int, str]]
    seconds: float


@dataclass(frozen=True, slots=True)
class UnitMapsResult:
    """What a replica returns for one batch of `run_unit_maps`: the spatial maps of the requested
    units only (a few units of a few images, so float32)."""

    batch_id: int
    indices: np.ndarray
    """int64 (batch,) image indices that decoded and ran."""
    maps: dict[str, np.ndarray]
    """{layer: float32 (batch, unit, height, width)}, units in the request's order; empty when
    nothing decoded."""
    failures: list[tuple[int, str]]
    seconds: float


@dataclass(frozen=True, slots=True)
class VisualizeResult:
    """What a replica returns for one feature-visualization request: the images as PNG bytes and
    the forward (and backward) passes the optimisation ran."""

    batch_id: int
    pngs: list[bytes]
    values: list[float]
    """The objective's value on each image (the unit's, for one image)."""
    passes: int
    images: int
    """Images through the model over all passes (passes x batch)."""
    seconds: float


@dataclass(frozen=True)
class ReplicaWork:
    """What every replica computes: the model, the layers it hooks (with their layouts), the
    spatial reductions, and optionally SAEs whose latents replace a layer's units."""

    payload: ModelPayload
    layers: Mapping[str, Layout]
    reductions: Sequence[str]
    unit_transforms: Mapping[str, SAEUnits] | None = None


class BatchRunner(Protocol):
    """Started, ready replicas. Each method yields every batch's result exactly once, in
    completion order (not submission order)."""

    @property
    def startup_seconds(self) -> float:
        """Time the replicas took to start (process start, model build)."""
        ...

    def run(self, batches: Sequence[Batch]) -> Iterator[BatchResult]:
        """The reduced (batch, unit) matrices of every hooked layer."""
        ...

    def run_maps(self, batches: Sequence[Batch], layer: str) -> Iterator[MapsResult]:
        """`layer`'s whole float16 conv maps."""
        ...

    def run_unit_maps(
        self, batches: Sequence[Batch], requests: Sequence[UnitMapsRequest]
    ) -> Iterator[UnitMapsResult]:
        """The spatial maps of the requested units of each layer (one forward pass a batch)."""
        ...


OpenReplicas = Callable[[ReplicaWork], AbstractContextManager[BatchRunner]]
"""Starts replicas doing `ReplicaWork`, yields them ready, and stops them on exit."""


def dense_activations(
    runner: BatchRunner, paths: Sequence[str], layer: str, reduction: str, batch_size: int
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Every image of `paths` through `runner`: ((image read, unit) float32 activations of
    `layer`, in path order; the indices of the images read; (index, reason) of those that could
    not be). Batches come back in any order; the rows do not."""
    batches = [
        [(i, paths[i]) for i in range(start, min(start + batch_size, len(paths)))]
        for start in range(0, len(paths), batch_size)
    ]
    by_index: dict[int, np.ndarray] = {}
    failures: list[tuple[int, str]] = []
    for result in runner.run(batches):
        matrix = result.activations.get(layer, {}).get(reduction)
        for row, index in enumerate(result.indices.tolist()):
            assert matrix is not None
            by_index[index] = matrix[row]
        failures += result.failures
    read = sorted(by_index)
    width = next(iter(by_index.values())).shape[0] if by_index else 0
    acts = np.stack([by_index[i] for i in read]) if read else np.zeros((0, width), np.float32)
    return acts.astype(np.float32, copy=False), read, sorted(failures)
