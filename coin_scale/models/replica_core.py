"""The work of a model replica without Ray: decode a batch of images, run the model under
inference_mode, and reduce the hooked layers on the device (`run`), return one layer's whole
conv maps (`run_maps`), the spatial maps of a few chosen units (`run_unit_maps`), or run a
`ModuleCall` on the model (`call`: attribution, chain edges, ablations, scoring). The actor
`coin_scale.actors.replica.ModelReplica` holds one `ReplicaCore`; tests and dry runs use it in
process."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from coin_scale.models.activations import (
    ActivationCapture,
    DecodedBatch,
    Reduction,
    SAEUnits,
    decode_batch,
    sae_code_maps,
)
from coin_scale.models.batches import BatchResult, MapsResult, UnitMapsResult
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload, build_module
from coin_scale.models.module_call import CallResult, ModuleCall, run_counted
from coin_scale.models.unit_maps import UnitMapsRequest, capture_unit_maps

CALLS_AT_ONCE = 2
"""Calls a model replica runs at once (`ModelReplica`'s max_concurrency)."""


class SharedExclusiveLock:
    """Forward passes share it (on a CPU, two run at once, each with its share of the cores);
    work that owns the module (a `ModuleCall`, which may hook it and take gradients) holds it
    alone. A waiting exclusive holder keeps new shared holders out, so it is not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


def call_threads(device: torch.device, threads: int | None) -> int | None:
    """Torch threads of each forward pass: on a CPU each of the `CALLS_AT_ONCE` calls gets its
    share of the cores, so they compute side by side and one's decoding never stalls the
    other's threads (resnet18 to layer4 on 320 ImageNet photos, 2 cores, one script: 0.96 and
    1.03 of the bare forward pass with one thread each, against 0.88 and 0.90 with both threads
    and one forward at a time); on a GPU all of them (the forward passes take turns)."""
    if not threads or device.type != "cpu":
        return threads
    return max(1, threads // CALLS_AT_ONCE)


def decode_threads(device: torch.device, threads: int | None) -> int:
    """Threads that decode a batch's images: on a GPU, all but one of the replica's cores (the GPU
    computes, the cores decode); on the CPU one, since the forward pass uses every core (and a
    second batch decodes while one computes: `ModelReplica` takes two calls at once)."""
    if device.type == "cuda":
        return max(1, (threads or 1) - 1)
    return 1


class _StopAfterLayer(Exception):
    """Raised by the `run_maps` hook: the layers after the requested one are not computed."""


class ReplicaCore:
    """The replica's work without Ray: decode, forward under inference_mode, reduce on the device.

    `unit_transforms` {layer: SAEUnits} make those layers' units the SAE's latents (codes)."""

    def __init__(
        self,
        payload: ModelPayload,
        layers: dict[str, Layout],
        reductions: Sequence[Reduction],
        device: str | None = None,
        threads: int | None = None,
        unit_transforms: Mapping[str, SAEUnits] | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threads = threads
        """The replica's cores (an exclusive call uses them all)."""
        self.forward_threads = call_threads(self.device, threads)
        if self.forward_threads:
            torch.set_num_threads(self.forward_threads)
        self.preprocess = payload.preprocess
        module = build_module(payload).to(self.device).to(memory_format=torch.channels_last)
        transforms = {
            name: sae_code_maps(units.build(self.device))
            for name, units in (unit_transforms or {}).items()
        }
        self.capture = ActivationCapture(module, layers, reductions, transforms)
        self._lock = SharedExclusiveLock()
        self._cpu_module: torch.nn.Module | None = None
        self.decode_threads = decode_threads(self.device, threads)
        self._decoder = (
            ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode")
            if self.decode_threads > 1
            else None
        )

    def run(self, batch_id: int, items: Sequence[tuple[int, str]]) -> BatchResult:
        """Decode outside the lock (so one batch decodes while another runs), forward inside it."""
        start = time.perf_counter()
        return self._reduced(batch_id, decode_batch(items, self.preprocess, self._decoder), start)

    def run_pixels(self, batch_id: int, pixels: np.ndarray) -> BatchResult:
        """Like `run`, on images the caller already decoded and preprocessed: uint8 (batch,
        channel, crop, crop), as `Preprocess.load` makes them (the agents' renders and edits).
        The result's indices are the batch's rows, 0 to batch - 1."""
        start = time.perf_counter()
        expected = (3, self.preprocess.crop, self.preprocess.crop)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"run_pixels: expected uint8 (batch, {', '.join(map(str, expected))}); got "
                f"{pixels.dtype} {tuple(pixels.shape)}"
            )
        # Arrays from the object store are read-only: np.require copies only those.
        writable = np.require(pixels, requirements=["C_CONTIGUOUS", "WRITEABLE"])
        decoded = DecodedBatch(torch.from_numpy(writable), list(range(len(pixels))), [])
        return self._reduced(batch_id, decoded, start)

    def _reduced(self, batch_id: int, decoded: DecodedBatch, start: float) -> BatchResult:
        """The forward pass of a decoded batch, its hooked layers reduced."""
        activations: dict[str, dict[str, np.ndarray]] = {}
        if decoded.indices:
            with self._forwarding(decoded) as pixels:
                captured = self.capture(pixels)
            activations = {
                layer: {r: t.numpy() for r, t in values.items()}
                for layer, values in captured.items()
            }
        return BatchResult(
            batch_id=batch_id,
            indices=np.asarray(decoded.indices, dtype=np.int64),
            activations=activations,
            failures=decoded.failures,
            seconds=time.perf_counter() - start,
        )

    def run_maps(self, batch_id: int, items: Sequence[tuple[int, str]], layer: str) -> MapsResult:
        """Like `run`, but return `layer`'s whole output as float16 (batch, C, H, W) maps; the
        forward pass stops after that layer."""
        start = time.perf_counter()
        module = self.capture.module
        target = dict(module.named_modules()).get(layer)
        if target is None:
            raise ValueError(f"model has no module {layer!r}")
        decoded = decode_batch(items, self.preprocess, self._decoder)
        maps = np.zeros((0, 0, 0, 0), dtype=np.float16)
        if decoded.indices:
            captured: list[torch.Tensor] = []

            owner = threading.get_ident()  # another thread's forward may pass meanwhile

            def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
                if threading.get_ident() != owner:
                    return
                captured.append(out.detach())
                raise _StopAfterLayer

            with self._forwarding(decoded) as pixels:
                handle = target.register_forward_hook(hook)
                try:
                    with contextlib.suppress(_StopAfterLayer):
                        module(pixels)
                finally:
                    handle.remove()
            if not captured or captured[0].dim() != 4:
                shape = tuple(captured[0].shape) if captured else None
                raise ValueError(f"layer {layer!r} gave no conv map (batch, C, H, W), got {shape}")
            out = captured[0].to("cpu", torch.float16).contiguous()
            maps = out.numpy()
        return MapsResult(
            batch_id=batch_id,
            indices=np.asarray(decoded.indices, dtype=np.int64),
            maps=maps,
            failures=decoded.failures,
            seconds=time.perf_counter() - start,
        )

    def run_unit_maps(
        self, batch_id: int, items: Sequence[tuple[int, str]], requests: Sequence[UnitMapsRequest]
    ) -> UnitMapsResult:
        """Like `run`, but return the float32 (batch, unit, height, width) maps of each request's
        units (through the layer's SAE when the replica has one, as its dissection did)."""
        start = time.perf_counter()
        decoded = decode_batch(items, self.preprocess, self._decoder)
        maps: dict[str, np.ndarray] = {}
        if decoded.indices:
            with self._forwarding(decoded) as pixels:
                captured = capture_unit_maps(
                    self.capture.module, pixels, requests, self.capture.transforms
                )
            maps = {layer: t.contiguous().numpy() for layer, t in captured.items()}
        return UnitMapsResult(
            batch_id=batch_id,
            indices=np.asarray(decoded.indices, dtype=np.int64),
            maps=maps,
            failures=decoded.failures,
            seconds=time.perf_counter() - start,
        )

    def call(self, batch_id: int, call: ModuleCall) -> CallResult:
        """`call` on this replica's model (`exclusive`: on the CPU, gradients allowed), its
        passes counted; the value comes back as the function returned it."""
        with self.exclusive() as module:
            result = run_counted(call, module)
        return dataclasses.replace(result, batch_id=batch_id)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[torch.nn.Module]:
        """The module on the CPU, with no other call's hooks on it meanwhile (the forward lock),
        outside inference mode: for work that needs gradients (feature visualization, whose
        image parameterisation lives on the CPU). On a GPU replica that is a CPU copy, made once."""
        with self._lock.exclusive(), self._all_threads():
            if self.device.type == "cpu":
                yield self.capture.module
                return
            if self._cpu_module is None:
                self._cpu_module = copy.deepcopy(self.capture.module).to("cpu").eval()
            yield self._cpu_module

    @contextlib.contextmanager
    def _forwarding(self, decoded: DecodedBatch) -> Iterator[torch.Tensor]:
        """The decoded batch as the model's input (on the device, channels-last, normalised),
        inside the forward lock, inference mode and the device's autocast."""
        # On a CPU forward passes run side by side (their hooks ignore each other's threads); on
        # a GPU they take turns.
        lock = self._lock.shared() if self.device.type == "cpu" else self._lock.exclusive()
        with lock, torch.inference_mode(), self._autocast():
            pixels = decoded.pixels.to(self.device, non_blocking=True)
            # uint8 -> channels_last first (cheap), so normalising keeps that memory format.
            pixels = pixels.contiguous(memory_format=torch.channels_last)
            yield self.preprocess.normalize(pixels)

    @contextlib.contextmanager
    def _all_threads(self) -> Iterator[None]:
        """Every core for an exclusive call (no forward pass runs meanwhile), then back."""
        if not self.threads or self.threads == self.forward_threads:
            yield
            return
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(self.forward_threads or self.threads)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()
