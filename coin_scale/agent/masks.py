"""MAIA's masked exemplars for the agent: where the unit fires, kept, the rest dimmed.

Pure functions of an exemplar, the unit's spatial activation map on it (at the layer's
resolution, covering the centred square the model saw) and the unit's firing threshold (the top
quantile of its activations over the positions of probe images, as the report cuts them):
`masked_view` draws the masked image, `firing_box` finds the box in the original image's pixels
around the region above the threshold (for the agent's full-resolution crop), and
`with_masks` attaches both to a subject's exemplars.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image

from coin_scale.agent.subject import ExemplarImage, UnitSubject
from coin_scale.models.map_images import masked_exemplar, model_view, upsample_map

MASKED_SIZE = 224
"""Side of a masked exemplar (the model's usual input; the attached copy is fitted to the
agent's image size like every image)."""

CROP_SIDE = 512
"""Longest side of the agent's full-resolution crop (the box is taken from the original file)."""

CROP_MARGIN = 0.15
"""The crop box grows by this share of its side on each side, for context."""


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def masked_view(
    image: Image.Image, activation_map: np.ndarray, threshold: float, crop_fraction: float
) -> Image.Image:
    """The model's view of `image` with the region above `threshold` kept and outlined."""
    view = model_view(image, crop_fraction, MASKED_SIZE)
    return masked_exemplar(view, activation_map, threshold)


def firing_box(
    size: tuple[int, int], activation_map: np.ndarray, threshold: float, crop_fraction: float
) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) in an image of `size` around the map's region above
    `threshold`, with a margin, inside the square the model saw; None when nothing is above."""
    width, height = size
    side = min(width, height) * crop_fraction
    left0, top0 = (width - side) / 2, (height - side) / 2
    grid = 64
    mask = upsample_map(activation_map, grid) > threshold
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    x0, x1 = cols.min() / grid, (cols.max() + 1) / grid
    y0, y1 = rows.min() / grid, (rows.max() + 1) / grid
    mx, my = (x1 - x0) * CROP_MARGIN, (y1 - y0) * CROP_MARGIN
    x0, x1, y0, y1 = max(0.0, x0 - mx), min(1.0, x1 + mx), max(0.0, y0 - my), min(1.0, y1 + my)
    return (
        round(left0 + x0 * side), round(top0 + y0 * side),
        round(left0 + x1 * side), round(top0 + y1 * side),
    )  # fmt: skip


def full_resolution_crop(path: str, box: tuple[int, int, int, int]) -> Image.Image:
    """The `box` of the original image at `path`, at most `CROP_SIDE` on its longest side."""
    with Image.open(path) as im:
        crop = im.convert("RGB").crop(box)
    if max(crop.size) > CROP_SIDE:
        crop.thumbnail((CROP_SIDE, CROP_SIDE), Image.Resampling.LANCZOS)
    return crop


def with_masks(
    subject: UnitSubject,
    maps: Sequence[np.ndarray | None],
    threshold: float | None,
    crop_fraction: float,
) -> UnitSubject:
    """`subject` with each exemplar's masked view and firing box (`maps[i]` is the unit's map on
    exemplar i, None where it could not be computed); unchanged without a threshold."""
    if threshold is None:
        return subject
    out: list[ExemplarImage] = []
    for exemplar, m in zip(subject.exemplars, maps, strict=True):
        if m is None or not exemplar.source:
            out.append(exemplar)
            continue
        with Image.open(exemplar.source) as original:
            image = original.convert("RGB")
        out.append(replace(
            exemplar, masked_png=_png(masked_view(image, m, threshold, crop_fraction)),
            firing_box=firing_box(image.size, m, threshold, crop_fraction),
        ))  # fmt: skip
    return replace(subject, exemplars=tuple(out))
