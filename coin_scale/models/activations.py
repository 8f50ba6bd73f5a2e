"""Pure activation capture: hooks that reduce layer outputs over space on the device."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from coin_scale.models.layers import SPATIAL_DIMS, Layout
from coin_scale.models.preprocess import Preprocess
from coin_scale.models.sae import SparseAutoencoder, conv_from_tokens, tokens_from_conv
from coin_scale.models.sae_config import SAEConfig

Reduction = Literal["max", "mean"]
REDUCTIONS: tuple[Reduction, ...] = ("max", "mean")

UnitTransform = Callable[[torch.Tensor], torch.Tensor]
"""Maps a layer's output to other units of the same layout before the reduction (e.g. SAE codes:
(batch, channel, H, W) -> (batch, latent, H, W))."""


def reduce_units(output: torch.Tensor, layout: Layout, reduction: Reduction) -> torch.Tensor:
    """A layer output -> (batch, unit) float32, reduced over its spatial positions or tokens."""
    dims = SPATIAL_DIMS[layout]
    if not dims:
        return output.float()
    reduced = output.amax(dim=dims) if reduction == "max" else output.mean(dim=dims)
    return reduced.float()


@dataclass(frozen=True, slots=True)
class SAEUnits:
    """An SAE whose latents replace a conv layer's channels as its units; small enough to travel
    with the work to every replica (weights folded, as in its checkpoint)."""

    config: SAEConfig
    state: dict[str, torch.Tensor]
    """The SAE's state dict (CPU tensors)."""
    sha256: str
    """Content hash of the checkpoint file (part of the dissection key)."""
    path: str = ""
    """Where the checkpoint was read from."""
    fvu: float | None = None
    """Its fraction of variance unexplained, from the checkpoint's final training metrics."""

    def build(self, device: str | torch.device = "cpu") -> SparseAutoencoder:
        """The SAE in eval mode on `device`."""
        c = self.config
        sae = SparseAutoencoder(c.d_in, c.d_sae, c.k, c.kind)
        sae.load_state_dict(self.state)
        return sae.to(device).eval()


def sae_code_maps(sae: SparseAutoencoder) -> UnitTransform:
    """A transform of conv maps (batch, C, H, W) to SAE code maps (batch, d_sae, H, W), encoded in
    float32 even under autocast (codes are compared against thresholds and top-k)."""
    def transform(maps: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = maps.shape
        with torch.autocast(maps.device.type, enabled=False):
            codes = sae.encode(tokens_from_conv(maps).float())[0]
        return conv_from_tokens(codes, batch, height, width)

    return transform


class _StopForward(Exception):
    """Raised by the last needed hook: the layers after it are not computed."""


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Images decoded for one forward pass, and those that could not be read."""

    pixels: torch.Tensor
    """uint8 (batch, channel, height, width) of the images that decoded."""
    indices: list[int]
    failures: list[tuple[int, str]]
    """(image index, reason) of unreadable or corrupt files."""


def _decode_one(path: str, preprocess: Preprocess) -> torch.Tensor | str:
    """One image file as `preprocess.load` makes it, or why it could not be read."""
    try:
        with Image.open(path) as image:
            return preprocess.load(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        return f"{type(err).__name__}: {err}".splitlines()[0][:300]


def decode_batch(
    items: Sequence[tuple[int, str]], preprocess: Preprocess, pool: Executor | None = None
) -> DecodedBatch:
    """Read, convert to RGB, resize and crop each (index, path); failures are kept, not raised.
    With `pool` (threads: PIL releases the GIL while it decodes and resizes) the images are
    decoded in parallel, in the same order."""
    paths = [path for _, path in items]
    decode = functools.partial(_decode_one, preprocess=preprocess)
    loaded = list(pool.map(decode, paths)) if pool is not None and len(items) > 1 else map(decode, paths)
    tensors, indices, failures = [], [], []
    for (index, _), one in zip(items, loaded, strict=True):
        if isinstance(one, str):
            failures.append((index, one))
        else:
            tensors.append(one)
            indices.append(index)
    size = preprocess.crop
    pixels = torch.stack(tensors) if tensors else torch.empty(0, 3, size, size, dtype=torch.uint8)
    return DecodedBatch(pixels, indices, failures)


class ActivationCapture:
    """Runs a model and returns the requested layers' reduced activations; stops after the last.

    `transforms` (optional, per layer) turn a layer's output into other units before reducing."""

    def __init__(
        self,
        module: nn.Module,
        layers: Mapping[str, Layout],
        reductions: Sequence[Reduction] = ("max",),
        transforms: Mapping[str, UnitTransform] | None = None,
    ) -> None:
        named = dict(module.named_modules())
        missing = [name for name in layers if name not in named]
        if missing:
            raise ValueError(f"model has no module(s) {missing}")
        unknown = sorted(set(transforms or {}) - set(layers))
        if unknown:
            raise ValueError(f"transforms for layers {unknown} that are not captured")
        self.transforms = dict(transforms or {})
        self.module = module
        self.layers = dict(layers)
        self.reductions = tuple(reductions)
        self._modules = {name: named[name] for name in layers}

    @contextlib.contextmanager
    def _hooks(self, into: dict[str, dict[str, torch.Tensor]]) -> Iterator[None]:
        handles = []
        owner = threading.get_ident()  # forwards of other threads may run meanwhile: not ours
        for name, sub in self._modules.items():

            def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                if threading.get_ident() != owner:
                    return
                layout = self.layers[name]
                if name in self.transforms:
                    out = self.transforms[name](out)
                into[name] = {r: reduce_units(out, layout, r) for r in self.reductions}
                if len(into) == len(self.layers):
                    raise _StopForward

            handles.append(sub.register_forward_hook(hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, inputs: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """inputs (batch, channel, height, width) -> {layer: {reduction: (batch, unit) on CPU}}."""
        captured: dict[str, dict[str, torch.Tensor]] = {}
        with self._hooks(captured), contextlib.suppress(_StopForward):
            self.module(inputs)
        if len(captured) != len(self.layers):
            raise RuntimeError(f"layers {sorted(set(self.layers) - set(captured))} never ran")
        return {
            name: {r: t.detach().to("cpu", torch.float32) for r, t in values.items()}
            for name, values in captured.items()
        }
