"""Spatial activation maps of chosen units: a layer's output cut down to the (height, width) map
of each requested unit, for the few images whose evidence is shown (exemplars, the target).

`capture_unit_maps` runs a model once over a batch and returns every request's maps; a replica
(`ReplicaCore.run_unit_maps`) and the sweep's driver-side module call the same function, so the
maps of exemplars and of the target are cut the same way. Conv maps (`nchw`) and channels-last
maps (`nhwc`) keep their grid; a ViT's tokens (`ntc`) become the patch grid (the class and any
register tokens dropped); a vector layer (`nc`) has no map.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from coin_scale.models.activations import UnitTransform
from coin_scale.models.layers import Layout
from coin_scale.models.sae import SparseAutoencoder

SPATIAL_LAYOUTS: tuple[Layout, ...] = ("nchw", "nhwc", "ntc")
"""Layouts whose units have a spatial map; `nc` (one vector per image) has none."""


@dataclass(frozen=True, slots=True)
class UnitMapsRequest:
    """Which units of which layer to return maps of: small and picklable, sent with every batch."""

    layer: str
    """Dotted module path of the layer (`model.named_modules()`)."""
    layout: Layout
    """The layer's output layout; `nc` is refused (no spatial extent)."""
    units: tuple[int, ...]
    """Unit indices (channels, token features or, with a transform, SAE latents), in the order
    the maps come back."""

    def __post_init__(self) -> None:
        if self.layout not in SPATIAL_LAYOUTS:
            raise ValueError(
                f"layer {self.layer!r} outputs {self.layout} activations, one vector per image: "
                f"its units have no spatial map (layouts with maps: {', '.join(SPATIAL_LAYOUTS)})"
            )
        if not self.units:
            raise ValueError(f"a maps request for layer {self.layer!r} names no units")


def token_grid(n_tokens: int) -> tuple[int, int]:
    """(prefix, side) of a ViT's token sequence: the last side x side tokens are the patch grid,
    row by row, and the `prefix` before them (class token, registers) are not positions."""
    side = math.isqrt(n_tokens)
    if side == 0:
        raise ValueError("a layer with no tokens has no patch grid")
    return n_tokens - side * side, side


def select_unit_maps(output: torch.Tensor, layout: Layout, units: Sequence[int]) -> torch.Tensor:
    """A layer's batched output -> float32 (batch, unit, height, width) maps of `units`."""
    index = torch.as_tensor(list(units), dtype=torch.long, device=output.device)
    if layout == "nchw":
        maps = output.index_select(1, index)
    elif layout == "nhwc":
        maps = output.index_select(3, index).permute(0, 3, 1, 2)
    elif layout == "ntc":
        prefix, side = token_grid(output.shape[1])
        patches = output[:, prefix:].index_select(2, index)  # (batch, side * side, unit)
        maps = patches.permute(0, 2, 1).reshape(output.shape[0], len(units), side, side)
    else:
        raise ValueError(f"{layout} activations have no spatial map")
    return maps.float()


class _StopForward(Exception):
    """Raised by the last needed hook: the layers after it are not computed."""


def capture_unit_maps(
    module: nn.Module,
    inputs: torch.Tensor,
    requests: Sequence[UnitMapsRequest],
    transforms: Mapping[str, UnitTransform] | None = None,
) -> dict[str, torch.Tensor]:
    """One forward pass of `inputs` (batch, channel, height, width), normalised -> {layer: float32
    (batch, unit, height, width) on the CPU} for every request, in its units' order. A layer in
    `transforms` (an SAE's codes) is transformed before its units are cut out. The caller picks
    the grad mode (inference_mode in replicas)."""
    named = dict(module.named_modules())
    wanted = {r.layer: r for r in requests}
    missing = [layer for layer in wanted if layer not in named]
    if missing:
        raise ValueError(f"model has no module(s) {missing}")
    captured: dict[str, torch.Tensor] = {}
    with _hooks(named, wanted, transforms or {}, captured), contextlib.suppress(_StopForward):
        module(inputs)
    if len(captured) != len(wanted):
        raise RuntimeError(f"layers {sorted(set(wanted) - set(captured))} never ran")
    return {layer: maps.to("cpu", torch.float32) for layer, maps in captured.items()}


@contextlib.contextmanager
def _hooks(
    named: dict[str, nn.Module],
    wanted: dict[str, UnitMapsRequest],
    transforms: Mapping[str, UnitTransform],
    into: dict[str, torch.Tensor],
) -> Iterator[None]:
    handles = []
    owner = threading.get_ident()  # forwards of other threads may run meanwhile: not ours
    for name, request in wanted.items():

        def hook(
            _m: nn.Module, _i: object, out: torch.Tensor, r: UnitMapsRequest = request
        ) -> None:
            if threading.get_ident() != owner:
                return
            if r.layer in transforms:
                out = transforms[r.layer](out)
            into[r.layer] = select_unit_maps(out.detach(), r.layout, r.units)
            if len(into) == len(wanted):
                raise _StopForward

        handles.append(named[name].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def target_unit_maps(
    module: nn.Module,
    inputs: torch.Tensor,
    requests: Sequence[UnitMapsRequest],
    sae: SparseAutoencoder | None = None,
    sae_layer: str | None = None,
) -> dict[str, torch.Tensor]:
    """`capture_unit_maps` under inference mode, `sae_layer`'s units the codes of `sae`; every
    argument plain data, so it can run on a model replica (`ModuleCall`)."""
    from coin_scale.models.activations import sae_code_maps

    transforms = {sae_layer: sae_code_maps(sae)} if sae is not None and sae_layer else {}
    with torch.inference_mode():
        return capture_unit_maps(module, inputs, requests, transforms)
