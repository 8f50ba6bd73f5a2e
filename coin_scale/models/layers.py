"""Which layers of a model can be dissected, their unit counts and activation layouts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from coin_scale.errors import UserError, close_matches

Layout = Literal["nchw", "nhwc", "ntc", "nc"]
SPATIAL_DIMS: dict[Layout, tuple[int, ...]] = {"nchw": (2, 3), "nhwc": (1, 2), "ntc": (1,), "nc": ()}
"""The dimensions of a batched output of each layout that index positions or tokens."""
"""How a layer's output is laid out: conv maps, channels-last maps (Swin), tokens (ViT), vectors."""

_CHANNELS_LAST_ARCHS = ("swin_",)


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """A module whose output can be reduced to one value per unit and image."""

    name: str
    """Dotted module path, as in `model.named_modules()` (e.g. `layer4`, `features.28`)."""
    type: str
    """The module's class name."""
    layout: Layout
    units: int
    """Number of units: channels of a conv map, width of a token or vector."""
    shape: tuple[int, ...]
    """Output shape for one image, without the batch dimension."""


def layout_of(arch: str, shape: tuple[int, ...], *, channels_last: bool = False) -> Layout | None:
    """Layout of an output of shape (batch, ...), or None when it cannot be read per unit.

    A 4-d output is channels-last for torchvision's Swin (`arch` swin_*) and when the model says
    so (`channels_last`: timm's `output_fmt` NHWC, e.g. its Swin and MambaOut); else (B, C, H, W).
    """
    if len(shape) == 4:
        return "nhwc" if channels_last or arch.startswith(_CHANNELS_LAST_ARCHS) else "nchw"
    if len(shape) == 3:
        return "ntc"
    if len(shape) == 2:
        return "nc"
    return None


def describe_layers(module: nn.Module, arch: str, image_size: int) -> list[LayerInfo]:
    """Every module whose output is one tensor per call and that runs once per forward pass."""
    outputs: dict[str, tuple[int, ...]] = {}
    calls: Counter[str] = Counter()
    kinds: dict[str, str] = {}
    handles = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            calls[name] += 1
            if isinstance(out, torch.Tensor):
                outputs[name] = tuple(out.shape)

        kinds[name] = type(sub).__name__
        handles.append(sub.register_forward_hook(hook))
    device = next(module.parameters(), torch.zeros(0)).device  # meta: shapes without arithmetic
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    channels_last = str(getattr(module, "output_fmt", "")).upper() == "NHWC"  # timm's flag
    layers = []
    for name, _ in module.named_modules():
        shape = outputs.get(name)
        if shape is None:
            continue
        layout = layout_of(arch, shape, channels_last=channels_last)
        if layout is None or calls[name] != 1 or shape[0] != 1:
            continue
        units = shape[1] if layout == "nchw" or layout == "nc" else shape[-1]
        layers.append(LayerInfo(name, kinds[name], layout, units, shape[1:]))
    return layers


def find_layer(layers: list[LayerInfo], name: str, model_id: str) -> LayerInfo:
    """The layer called `name`, or a UserError listing close matches."""
    for layer in layers:
        if layer.name == name:
            return layer
    from coin_scale.models.families import model_flag

    hint = close_matches(name, [layer.name for layer in layers])
    raise UserError(
        f"model {model_id} has no dissectable layer {name!r}"
        + (f"; close matches: {hint}" if hint else "")
        + f"; `coin-scale layers --model {model_flag(model_id)} --weights none` lists them"
    )


def last_block(module: nn.Module, layers: list[LayerInfo]) -> LayerInfo:
    """The last top-level block with spatial or token units (resnet: layer4, vgg: features)."""
    by_name = {layer.name: layer for layer in layers}
    candidates = [
        by_name[name]
        for name, child in module.named_children()
        if name in by_name
        and by_name[name].layout != "nc"
        and not isinstance(child, nn.AdaptiveAvgPool2d | nn.AvgPool2d | nn.MaxPool2d)
    ]
    if not candidates:
        raise UserError("cannot tell this model's last block; pass --layer")
    return candidates[-1]
