"""The model replicas LLM agents experiment on (a sweep's, `eval synthetic`'s, `bench llm`'s):
every agent's `measure` goes through one `MeasureBatcher`, so agents running at once share forward
passes, and `visualize(n)` optimises its images on a replica; the driver holds no copy of the
model for them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from coin_scale.agent.batched_meter import BatchedUnitMeter, MeasureBatcher
from coin_scale.agent.visualizer import VisualizationSpec
from coin_scale.models import ModelPayload
from coin_scale.models.activations import Reduction, SAEUnits
from coin_scale.models.batches import ReplicaWork
from coin_scale.models.layers import LayerInfo
from coin_scale.runtime.pools import replica_pool

log = logging.getLogger(__name__)

MEASURE_BATCH = 64
"""Most images in one shared measuring pass on a replica (the agents' requests gathered)."""
MEASURE_WINDOW_S = 0.02
"""How long a shared measuring pass waits for more agents' images once the first arrives. Measured
with `bench llm` (32 agents at once, instant server, 2 cores): 5 ms gave 41-49 passes and 2.9-3.1 s,
20 ms 21-29 passes and 2.6-2.8 s, 50 ms 15-18 passes and 2.4-2.6 s; a lone agent waits the window
at most once per measurement, small beside an LLM call."""


@dataclass(frozen=True)
class AgentReplicas:
    """The model replicas the agents of one layer experiment on: a `MeasureBatcher` for their
    measurements, the pool itself for their feature visualizations."""

    batcher: MeasureBatcher
    pool: Any
    """The `ReplicaPool`."""
    payload: ModelPayload
    layer: LayerInfo

    def meter(self, unit: int) -> BatchedUnitMeter:
        """The unit's `UnitMeter`, its measurements in the shared passes."""
        return BatchedUnitMeter(self.batcher, self.payload.preprocess, unit)

    def visualizer(self, unit: int, direction: torch.Tensor | None = None) -> ReplicaVisualizer:
        """The unit's `Visualizer` (an SAE feature's with its decoder `direction`), on a replica."""
        spec = VisualizationSpec(
            layer=self.layer.name, layout=self.layer.layout, unit=unit, direction=direction
        )
        return ReplicaVisualizer(self.pool, spec)


class ReplicaVisualizer:
    """A `Visualizer` whose images are optimised on a model replica (`ModelReplica.visualize`)."""

    def __init__(self, pool: Any, spec: VisualizationSpec) -> None:
        self.pool, self.spec = pool, spec

    def visualize(self, n: int, seed: int) -> list[Image.Image]:
        from coin_scale.agent.visualizer import MAX_VISUALIZATIONS

        if not 1 <= n <= MAX_VISUALIZATIONS:
            raise ValueError(f"n: expected 1 to {MAX_VISUALIZATIONS}; got {n}")
        (result,) = self.pool.visualize([(self.spec, n, seed)])
        return [Image.open(io.BytesIO(png)).convert("RGB") for png in result.pngs]


@contextmanager
def agent_replicas(
    payload: ModelPayload,
    layer: LayerInfo,
    sae: SAEUnits | None = None,
    *,
    reduction: Reduction = "max",
    address: str | None = None,
    replicas: int | None = None,
) -> Iterator[AgentReplicas]:
    """Model replicas of `layer` (its SAE's features with `sae`) for the agents' experiments:
    their measurements gathered into shared forward passes, their visualizations."""
    work = ReplicaWork(payload, {layer.name: layer.layout}, (reduction,), {layer.name: sae} if sae else None)
    with replica_pool(work, address=address, replicas=replicas) as pool:

        def forward(pixels: Any) -> Any:
            (result,) = pool.run_pixels([pixels])
            return result.activations[layer.name][reduction]

        in_flight = pool.in_flight_each * len(pool.actors)
        with MeasureBatcher(
            forward, max_images=MEASURE_BATCH, window_s=MEASURE_WINDOW_S, in_flight=in_flight
        ) as batcher:
            yield AgentReplicas(batcher, pool, payload, layer)
        log.info(
            "agents' measurements: %d images in %d forward passes on the replicas",
            batcher.images, batcher.batches,
        )  # fmt: skip


