"""ModelReplica: a Ray actor that holds one copy of the model and returns reduced activations."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import ray
import torch

from coin_scale.dissect.activations import ActivationCapture, Reduction, decode_batch
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload, build_module


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


class ReplicaCore:
    """The replica's work without Ray: decode, forward under inference_mode, reduce on the device."""

    def __init__(
        self,
        payload: ModelPayload,
        layers: dict[str, Layout],
        reductions: Sequence[Reduction],
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.preprocess = payload.preprocess
        module = build_module(payload).to(self.device).to(memory_format=torch.channels_last)
        self.capture = ActivationCapture(module, layers, reductions)
        self._forward_lock = threading.Lock()

    def run(self, batch_id: int, items: Sequence[tuple[int, str]]) -> BatchResult:
        """Decode outside the lock (so one batch decodes while another runs), forward inside it."""
        import time

        start = time.perf_counter()
        decoded = decode_batch(items, self.preprocess)
        activations: dict[str, dict[str, np.ndarray]] = {}
        if decoded.indices:
            with self._forward_lock, torch.inference_mode(), self._autocast():
                pixels = decoded.pixels.to(self.device, non_blocking=True)
                # uint8 -> channels_last first (cheap), so normalising keeps that memory format.
                pixels = pixels.contiguous(memory_format=torch.channels_last)
                captured = self.capture(self.preprocess.normalize(pixels))
            activations = {
                layer: {r: t.numpy() for r, t in values.items()} for layer, values in captured.items()
            }
        return BatchResult(
            batch_id=batch_id,
            indices=np.asarray(decoded.indices, dtype=np.int64),
            activations=activations,
            failures=decoded.failures,
            seconds=time.perf_counter() - start,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


@ray.remote(max_restarts=4, max_task_retries=0, max_concurrency=2)  # type: ignore[call-overload]
class ModelReplica:
    """Thin actor around ReplicaCore. Two calls run at once: one decodes while the other computes
    (measured: +4% on synthetic JPEGs, +8% on ImageNet photos with 2 CPU cores)."""

    def __init__(self, payload: ModelPayload, layers: dict[str, Layout], reductions: list[str]):
        cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)) or 1
        self.core = ReplicaCore(payload, layers, reductions, threads=cpus)  # type: ignore[arg-type]

    def run(self, batch_id: int, items: list[tuple[int, str]]) -> BatchResult:
        return self.core.run(batch_id, items)

    def pid(self) -> int:
        return os.getpid()
