"""Image parameterisations: a tensor that Adam moves, and how it becomes an image in [0, 1].

Both parameterisations decorrelate colour: the optimised channels are mapped to RGB through the
square root of ImageNet's colour covariance, so a step of the same size changes luminance and
the two opponent colour axes equally (Olah et al., "Feature Visualization", Distill 2017). The
Fourier one also scales each frequency by 1 / frequency, so gradient steps favour smooth images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

Param = Literal["fft", "pixel"]
PARAMS: tuple[Param, ...] = ("fft", "pixel")

# The square root of the 3 x 3 covariance of RGB values over ImageNet, from its eigenvectors
# (luminance first, then two opponent axes) scaled by the square roots of its eigenvalues.
_COLOUR_SQRT_COV = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]]
)  # fmt: skip


def colour_matrix() -> torch.Tensor:
    """(3, 3): decorrelated channels -> RGB, scaled so its largest column has unit norm."""
    return _COLOUR_SQRT_COV / _COLOUR_SQRT_COV.norm(dim=0).max()


def decorrelated_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(batch, 3, height, width) in decorrelated colour -> the same in RGB logits."""
    matrix = colour_matrix().to(device=x.device, dtype=x.dtype)
    return torch.einsum("rc,bchw->brhw", matrix, x)


@dataclass(eq=False)
class ImageParam:
    """Learnable tensors and the function that turns them into images (batch, 3, size, size)."""

    kind: Param
    """'fft' or 'pixel'."""
    size: int
    """Side of the square images, in pixels."""
    batch: int
    """Images optimised together."""
    params: list[torch.Tensor]
    """The tensors the optimiser moves (requires_grad)."""
    to_image: Callable[[list[torch.Tensor]], torch.Tensor]
    """params -> images in [0, 1], differentiable."""

    def __call__(self) -> torch.Tensor:
        return self.to_image(self.params)


def _check(size: int, batch: int) -> None:
    if size < 2 or batch < 1:
        raise ValueError(f"an image parameterisation needs size >= 2 and batch >= 1; got "
                         f"size={size}, batch={batch}")  # fmt: skip


def pixel_image(
    size: int, *, batch: int = 1, generator: torch.Generator, sd: float = 0.01
) -> ImageParam:
    """One free logit per pixel and decorrelated channel: image = sigmoid(colour(logits))."""
    _check(size, batch)
    logits = (torch.randn(batch, 3, size, size, generator=generator) * sd).requires_grad_(True)

    def to_image(params: list[torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(decorrelated_to_rgb(params[0]))

    return ImageParam(kind="pixel", size=size, batch=batch, params=[logits], to_image=to_image)


def frequency_scale(size: int, decay_power: float = 1.0) -> torch.Tensor:
    """(size, size // 2 + 1): 1 / frequency^decay_power, frequency in cycles per pixel (the
    constant term counted as the lowest frequency, 1 / size)."""
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    freq = torch.sqrt(fx * fx + fy * fy).clamp_min(1.0 / size)
    return 1.0 / freq.pow(decay_power)


def fft_image(
    size: int,
    *,
    batch: int = 1,
    generator: torch.Generator,
    sd: float = 0.01,
    decay_power: float = 1.0,
) -> ImageParam:
    """Fourier coefficients (batch, 3, size, size // 2 + 1, real/imag) of decorrelated channels:
    image = sigmoid(colour(irfft2(coefficients * 1 / frequency)))."""
    _check(size, batch)
    spectrum = torch.randn(batch, 3, size, size // 2 + 1, 2, generator=generator) * sd
    spectrum.requires_grad_(True)
    scale = frequency_scale(size, decay_power).view(1, 1, size, size // 2 + 1)

    def to_image(params: list[torch.Tensor]) -> torch.Tensor:
        coefficients = torch.view_as_complex(params[0]) * scale.to(params[0].device)
        spatial = torch.fft.irfft2(coefficients, s=(size, size), norm="ortho")
        return torch.sigmoid(decorrelated_to_rgb(spatial))

    return ImageParam(kind="fft", size=size, batch=batch, params=[spectrum], to_image=to_image)


def make_param(kind: str, size: int, *, batch: int, generator: torch.Generator) -> ImageParam:
    """The parameterisation named `kind` ('fft' or 'pixel')."""
    builders = {"fft": fft_image, "pixel": pixel_image}
    if kind not in builders:
        raise ValueError(f"unknown parameterisation {kind!r}; choose one of {', '.join(PARAMS)}")
    return builders[kind](size, batch=batch, generator=generator)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, h, w) float in [0, 1] -> uint8, rounded as a saved 8-bit PNG is."""
    return (image.detach().clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, h, w) float in [0, 1] -> an 8-bit RGB PIL image."""
    return Image.fromarray(to_uint8(image).permute(1, 2, 0).contiguous().cpu().numpy(), mode="RGB")
