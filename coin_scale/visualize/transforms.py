"""Random transformations applied before each forward pass, so the image that wins is one that
drives the unit robustly rather than an adversarial pattern of single pixels.

Every transform keeps the image's size (models like ViT take one size only) and draws its
randomness from the `torch.Generator` passed in, so a render is repeatable for a seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""(images (batch, 3, height, width), generator) -> images of the same shape."""


def _choice(values: Sequence[float], generator: torch.Generator) -> float:
    return float(values[int(torch.randint(len(values), (1,), generator=generator))])


def jitter(pixels: int) -> Transform:
    """Shift the image by up to `pixels` in each direction (reflect-padded, then cropped back)."""
    if pixels < 0:
        raise ValueError(f"jitter needs pixels >= 0; got {pixels}")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if pixels == 0:
            return images
        height, width = images.shape[-2:]
        pad = min(pixels, height - 1, width - 1)
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        dy, dx = (int(v) for v in torch.randint(2 * pad + 1, (2,), generator=generator))
        return padded[..., dy : dy + height, dx : dx + width]

    return apply


def _affine(images: torch.Tensor, scale: float, degrees: float) -> torch.Tensor:
    """Zoom by `scale` and rotate by `degrees` about the centre, same size, reflecting borders."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor(
        [[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype, device=images.device
    )
    grid = F.affine_grid(
        theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False
    )
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom by one of `scales` (1.05 enlarges by 5%), drawn uniformly."""
    if not scales or min(scales) <= 0:
        raise ValueError(f"random_scale needs positive scales; got {list(scales)}")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _affine(images, _choice(scales, generator), 0.0)

    return apply


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate by one of `degrees` (counter-clockwise), drawn uniformly."""
    if not degrees:
        raise ValueError("random_rotate needs at least one angle")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _affine(images, 1.0, _choice(degrees, generator))

    return apply


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply `transforms` in order."""

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for transform in transforms:
            images = transform(images, generator)
        return images

    return apply


def standard_transforms(size: int) -> list[Transform]:
    """Jitter by ~size/16, zoom within +-5%, rotate within +-5 degrees, jitter by ~size/50."""
    return [
        jitter(max(1, size // 16)),
        random_scale([0.95 + 0.01 * i for i in range(11)]),
        random_rotate([float(d) for d in range(-5, 6)]),
        jitter(max(1, size // 50)),
    ]
