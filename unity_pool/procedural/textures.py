"""Surface textures: a registry of functions giving a pattern weight inside an object.

A texture maps the object's own frame (a, b), y up, in units of its bounding radius, to a weight
p in [0, 1] per pixel; the painter mixes the object's colour toward a contrasting shade by p. The
patterns are anti-aliased by clamping a signed distance scaled to pixels. `fur` is oriented noise
from the object's own random generator; the others use no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

Texture = Callable[[F32, F32, float, np.random.Generator], F32 | None]
"""texture(a, b, r_px, rng) -> weight (h, w) in [0, 1], or None for a plain colour. a, b: (h, w)
object-frame coordinates; r_px: the bounding radius in pixels (for anti-aliasing)."""

TEXTURES: dict[str, Texture] = {}
"""Registered textures by name; must cover `vocab.TEXTURES`."""

PERIODS_PER_RADIUS = 2.5
"""Stripe, check and dot repeats per bounding radius (so per object, whatever its size)."""


def register_texture(name: str) -> Callable[[Texture], Texture]:
    """Register a texture under `name`."""

    def deco(fn: Texture) -> Texture:
        if name in TEXTURES:
            raise ValueError(f"texture {name!r} is already registered")
        TEXTURES[name] = fn
        return fn

    return deco


def _aa_step(signed: F32, per_pixel: float) -> F32:
    """0..1 with a one-pixel ramp where `signed` (units changing by `per_pixel` per pixel) crosses 0."""
    return np.clip(0.5 + signed / max(per_pixel, 1e-6), 0.0, 1.0).astype(np.float32, copy=False)


@register_texture("solid")
def _solid(a: F32, b: F32, r_px: float, rng: np.random.Generator) -> F32 | None:
    return None


@register_texture("stripes")
def _stripes(a: F32, b: F32, r_px: float, rng: np.random.Generator) -> F32 | None:
    f = 2 * math.pi * PERIODS_PER_RADIUS
    return _aa_step(np.sin(f * a), f / r_px)


@register_texture("checker")
def _checker(a: F32, b: F32, r_px: float, rng: np.random.Generator) -> F32 | None:
    f = 2 * math.pi * PERIODS_PER_RADIUS
    # product of two sines: its zero set is the checker grid; slope near a line ~ f per unit
    return _aa_step(np.sin(f * a) * np.sin(f * b), f / r_px)


@register_texture("dots")
def _dots(a: F32, b: F32, r_px: float, rng: np.random.Generator) -> F32 | None:
    f = PERIODS_PER_RADIUS
    da = a * f - np.round(a * f)
    db = b * f - np.round(b * f)
    dist = np.sqrt(da * da + db * db)  # in periods
    return _aa_step(0.28 - dist, f / r_px)


def _lattice_sample(lattice: F32, u: npt.NDArray[np.floating], v: npt.NDArray[np.floating]) -> F32:
    """Bilinear sample of a periodic lattice (rows, cols) at fractional (row u, col v)."""
    rows, cols = lattice.shape
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0).astype(np.float32)
    fv = (v - v0).astype(np.float32)
    i0 = u0.astype(np.int64) % rows
    j0 = v0.astype(np.int64) % cols
    i1 = (i0 + 1) % rows
    j1 = (j0 + 1) % cols
    top = lattice[i0, j0] * (1 - fv) + lattice[i0, j1] * fv
    bottom = lattice[i1, j0] * (1 - fv) + lattice[i1, j1] * fv
    return (top * (1 - fu) + bottom * fu).astype(np.float32, copy=False)


@register_texture("fur")
def _fur(a: F32, b: F32, r_px: float, rng: np.random.Generator) -> F32 | None:
    # Noise stretched along one direction: few lattice cells along the hairs, many across them.
    angle = rng.uniform(0.0, math.pi)
    coarse = rng.random((6, 64), dtype=np.float32)
    fine = rng.random((12, 128), dtype=np.float32)
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    along = a * c + b * s
    across = b * c - a * s
    n1 = _lattice_sample(coarse, along * 1.5, across * 24.0)
    n2 = _lattice_sample(fine, along * 3.0, across * 48.0)
    p = 0.65 * n1 + 0.35 * n2
    return np.clip((p - 0.3) * 1.25, 0.0, 0.8).astype(np.float32, copy=False)
