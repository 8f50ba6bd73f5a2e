"""Images of where a unit fires, for the report's unit cards and the agents' masked exemplars:
pure functions of an image and the unit's spatial activation map (at its layer's resolution,
e.g. 7 x 7).

- `masked_exemplar`: MAIA-style: the map upsampled bilinearly to the image, the region above the
  unit's threshold kept and outlined, the rest dimmed (to 25% brightness).
- `heat_overlay`: the map as a heat map over the image (blue 0 -> red at the scale's top).

Both draw on `model_view`, the centred square of the image the model saw, which the map covers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DIM = 0.25
"""Brightness kept outside the region where the unit fires."""
OUTLINE = (255, 214, 0)
"""Colour of the region's outline (yellow)."""
OUTLINE_WIDTH = 2
"""Outline width, in pixels, inside the region's edge."""
HEAT_ALPHA = 0.55
"""Opacity of the heat map over the image."""
HEAT_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (0, 0, 143)),
    (0.125, (0, 0, 255)),
    (0.375, (0, 255, 255)),
    (0.625, (255, 255, 0)),
    (0.875, (255, 0, 0)),
    (1.0, (128, 0, 0)),
)
"""The heat colour scale (jet): position in [0, 1] -> RGB, linear in between."""


def model_view(image: Image.Image, crop_fraction: float, size: int) -> Image.Image:
    """The centred square of `image` the model saw (side: crop_fraction x the short side, as
    resize-then-centre-crop preprocessing keeps), RGB, resized to size x size."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    width, height = image.size
    side = min(width, height) * crop_fraction
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    return image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)


def upsample_map(activation_map: np.ndarray, size: int) -> np.ndarray:
    """A (height, width) map -> float32 (size, size), bilinear (pixel centres aligned)."""
    values = np.ascontiguousarray(activation_map, dtype=np.float32)
    if values.ndim != 2 or not values.size:
        raise ValueError(f"an activation map is (height, width), got shape {values.shape}")
    up = Image.fromarray(values).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(up, dtype=np.float32)


def masked_exemplar(
    view: Image.Image, activation_map: np.ndarray, threshold: float, *, dim: float = DIM
) -> Image.Image:
    """`view` (square, from `model_view`) with the region where the upsampled map exceeds
    `threshold` kept and outlined, and the rest dimmed to `dim` of its brightness."""
    rgb = np.asarray(view.convert("RGB"), dtype=np.float32)
    mask = upsample_map(activation_map, rgb.shape[0]) > threshold
    out = np.where(mask[..., None], rgb, rgb * dim)
    edge = mask & ~_erode(mask, OUTLINE_WIDTH)
    out[edge] = OUTLINE
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def heat_overlay(
    view: Image.Image, activation_map: np.ndarray, top: float, *, alpha: float = HEAT_ALPHA
) -> Image.Image:
    """`view` under the upsampled map as heat colours: 0 (and below) blue, `top` (and above) dark
    red, blended at `alpha`."""
    rgb = np.asarray(view.convert("RGB"), dtype=np.float32)
    up = upsample_map(activation_map, rgb.shape[0])
    level = np.clip(up / top, 0.0, 1.0) if top > 0 else np.zeros_like(up)
    out = (1 - alpha) * rgb + alpha * heat_colours(level)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def heat_colours(level: np.ndarray) -> np.ndarray:
    """Levels in [0, 1] -> float32 RGB (..., 3) along `HEAT_STOPS`."""
    xs = [x for x, _ in HEAT_STOPS]
    channels = [np.interp(level, xs, [c[k] for _, c in HEAT_STOPS]) for k in range(3)]
    return np.stack(channels, axis=-1).astype(np.float32)


def heat_scale_css() -> str:
    """The colour scale as a CSS gradient, for the report's legend."""
    stops = ", ".join(f"rgb{c} {x * 100:g}%" for x, c in HEAT_STOPS)
    return f"linear-gradient(to right, {stops})"


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` shrunk by `steps` pixels (4-neighbourhood; the image's border does not erode)."""
    out = mask
    for _ in range(steps):
        p = np.pad(out, 1, mode="edge")
        out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out
