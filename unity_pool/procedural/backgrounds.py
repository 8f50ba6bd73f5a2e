"""Backdrops: a registry of functions painting the whole image before the objects.

A background is `paint(rng, height, width) -> (3, height, width)` float32 RGB in [0, 1], channels
first (numpy broadcasts over a leading channel axis much faster than over a trailing one of 3); it
may use the scene's background generator, and nothing else, for randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image

F32 = npt.NDArray[np.float32]

Background = Callable[[np.random.Generator, int, int], F32]
"""paint(rng, height, width) -> (channel=3, height, width) float32 RGB in [0, 1]."""

BACKGROUNDS: dict[str, Background] = {}
"""Registered backgrounds by name; must cover `vocab.BACKGROUNDS`."""


def register_background(name: str) -> Callable[[Background], Background]:
    """Register a background under `name`."""

    def deco(fn: Background) -> Background:
        if name in BACKGROUNDS:
            raise ValueError(f"background {name!r} is already registered")
        BACKGROUNDS[name] = fn
        return fn

    return deco


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> F32:
    """Value noise in [0, 1]: a random (cells x cells) lattice upsampled bicubically."""
    lattice = rng.random((cells, cells), dtype=np.float32)
    up = Image.fromarray(lattice, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def _blend(low: tuple[float, float, float], high: tuple[float, float, float], t: F32) -> F32:
    """(3, h, w): `low` where t = 0, `high` where t = 1."""
    lo = np.asarray(low, dtype=np.float32)[:, None, None]
    hi = np.asarray(high, dtype=np.float32)[:, None, None]
    return (lo + (hi - lo) * t[None]).astype(np.float32, copy=False)


def _ramp(height: int, width: int, angle: float) -> F32:
    """0 -> 1 across the image along direction `angle` (radians, y down)."""
    y = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    x = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    t = x[None, :] * math.cos(angle) + y[:, None] * math.sin(angle)
    span = (abs(math.cos(angle)) + abs(math.sin(angle))) / 2
    return ((t / span + 1) / 2).astype(np.float32, copy=False)


@register_background("plain")
def _plain(rng: np.random.Generator, height: int, width: int) -> F32:
    return np.full((3, height, width), 0.5, dtype=np.float32)


@register_background("gradient")
def _gradient(rng: np.random.Generator, height: int, width: int) -> F32:
    angle = rng.uniform(0.0, 2 * math.pi)
    return _blend((0.86, 0.84, 0.80), (0.30, 0.31, 0.36), _ramp(height, width, angle))


@register_background("noise")
def _noise(rng: np.random.Generator, height: int, width: int) -> F32:
    coarse = smooth_noise(rng, height, width, 8)
    grain = rng.random((height, width), dtype=np.float32)
    t = 0.75 * coarse + 0.25 * grain
    return _blend((0.22, 0.22, 0.22), (0.78, 0.76, 0.74), t)


@register_background("grid")
def _grid(rng: np.random.Generator, height: int, width: int) -> F32:
    cells = 8
    period = min(height, width) / cells
    phase_x, phase_y = rng.uniform(0.0, period, size=2)
    x = np.arange(width, dtype=np.float32) + 0.5 + phase_x
    y = np.arange(height, dtype=np.float32) + 0.5 + phase_y
    dx = np.abs(x - period * np.round(x / period))  # pixels to the nearest line
    dy = np.abs(y - period * np.round(y / period))
    half = max(0.6, period / 32)
    line_x = np.clip(half + 0.5 - dx, 0.0, 1.0)
    line_y = np.clip(half + 0.5 - dy, 0.0, 1.0)
    line = np.maximum(line_x[None, :], line_y[:, None]).astype(np.float32)
    return _blend((0.92, 0.92, 0.9), (0.45, 0.47, 0.5), line)


@register_background("sky")
def _sky(rng: np.random.Generator, height: int, width: int) -> F32:
    sky = _blend((0.35, 0.55, 0.9), (0.75, 0.86, 0.97), _ramp(height, width, math.pi / 2))
    clouds = smooth_noise(rng, height, width, 6)
    cover = np.clip((clouds - 0.55) * 4.0, 0.0, 1.0)[None]
    return (sky + (np.float32(0.97) - sky) * cover).astype(np.float32, copy=False)
