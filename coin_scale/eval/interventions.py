"""What per-unit scores measure on a model: units' activations on a batch, the logits with one
unit scaled (ablated x0, amplified x2), and the images perturbed by noise and blur. Pure torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.functional as TF
from torch import nn

from coin_scale.chain.units import UnitView, as_view
from coin_scale.models.activations import Reduction
from coin_scale.models.layers import Layout

NOISE_STDS = (0.05, 0.1, 0.2)
"""Gaussian pixel noise (images in [0, 1]) of the robustness test, weakest to strongest."""

BLUR_SIGMAS = (0.005, 0.01, 0.02)
"""Gaussian blur of the robustness test, sigma as a fraction of the image side."""


def unit_activations(
    module: nn.Module,
    layer: str,
    units_of: Layout | UnitView,
    inputs: torch.Tensor,
    units: Sequence[int],
    reduction: Reduction = "max",
) -> torch.Tensor:
    """float32 (batch, len(units)): the units' activations, reduced over space as the dissection
    reduces them; one forward pass (stopped at nothing: the model is small next to the batch)."""
    view = as_view(units_of)
    captured: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: captured.append(view.reduced(out, reduction)[:, list(units)].float())
    )
    try:
        with torch.inference_mode():
            module.eval()(inputs)
    finally:
        handle.remove()
    return captured[0]


def scaled_logits(
    module: nn.Module,
    layer: str,
    units_of: Layout | UnitView,
    inputs: torch.Tensor,
    unit: int,
    factor: float,
) -> torch.Tensor:
    """Logits (batch, classes) with `unit` of `layer` multiplied by `factor` at every position."""
    view = as_view(units_of)
    handle = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: view.scale(out, unit, factor)
    )
    try:
        with torch.inference_mode():
            return module.eval()(inputs).float()
    finally:
        handle.remove()


def perturbed(images: torch.Tensor, *, seed: int) -> dict[str, torch.Tensor]:
    """float [0, 1] (batch, 3, H, W) -> {'noise 0.05': ..., 'blur 0.01': ...}: every strength of
    Gaussian noise and Gaussian blur, clipped to [0, 1]; deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for std in NOISE_STDS:
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype) * std
        out[f"noise {std:g}"] = (images + noise).clamp(0.0, 1.0)
    side = min(images.shape[-2:])
    for fraction in BLUR_SIGMAS:
        sigma = max(fraction * side, 0.3)
        kernel = 2 * math.ceil(3 * sigma) + 1
        blurred = TF.gaussian_blur(images, [kernel, kernel], [sigma, sigma])
        out[f"blur {fraction:g}"] = blurred.clamp(0.0, 1.0)
    return out
