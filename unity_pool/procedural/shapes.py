"""Object outlines: a registry of functions that fill a shape into a supersampled mask.

Every shape is defined in its own unit frame (y up) inside the circle of radius 1 about the
origin, so an object of radius r never leaves the square of half-side r around its centre,
whatever its rotation. Drawers fill 255 inside the outline and may clear (fill 0) holes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from PIL import ImageDraw

ShapeDrawer = Callable[[ImageDraw.ImageDraw, float, float, float, float], None]
"""draw(canvas, cx, cy, r, theta): fill the shape centred at (cx, cy) pixels (y down) with
bounding radius r pixels, rotated counter-clockwise by theta radians."""

SHAPE_DRAWERS: dict[str, ShapeDrawer] = {}
"""Registered shapes by name; must cover `vocab.SHAPES`."""


def register_shape(name: str) -> Callable[[ShapeDrawer], ShapeDrawer]:
    """Register a shape drawer under `name`."""

    def deco(fn: ShapeDrawer) -> ShapeDrawer:
        if name in SHAPE_DRAWERS:
            raise ValueError(f"shape {name!r} is already registered")
        SHAPE_DRAWERS[name] = fn
        return fn

    return deco


def _to_pixels(
    points: np.ndarray, cx: float, cy: float, r: float, theta: float
) -> list[tuple[float, float]]:
    """Unit-frame points (k, 2), y up -> pixel coordinates, y down, rotated and scaled."""
    c, s = math.cos(theta), math.sin(theta)
    a, b = points[:, 0], points[:, 1]
    xs = cx + r * (a * c - b * s)
    ys = cy - r * (a * s + b * c)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _polygon_drawer(points: Callable[[], np.ndarray]) -> ShapeDrawer:
    def draw(canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, theta: float) -> None:
        canvas.polygon(_to_pixels(points(), cx, cy, r, theta), fill=255)

    return draw


def _disc(canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int) -> None:
    canvas.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _regular(n: int, start_deg: float, radii: tuple[float, ...] = (1.0,)) -> np.ndarray:
    angles = np.deg2rad(start_deg + np.arange(n) * 360.0 / n)
    rad = np.resize(np.asarray(radii), n)
    return np.stack([rad * np.cos(angles), rad * np.sin(angles)], axis=1)


@functools.cache
def _square() -> np.ndarray:
    return _regular(4, 45.0)


@functools.cache
def _triangle() -> np.ndarray:
    return _regular(3, 90.0)


@functools.cache
def _star() -> np.ndarray:
    return _regular(10, 90.0, (1.0, 0.42))


@functools.cache
def _hexagon() -> np.ndarray:
    return _regular(6, 0.0)


@functools.cache
def _cross() -> np.ndarray:
    w = 0.3
    length = math.sqrt(1 - w * w)
    quarter = [(w, length), (w, w), (length, w)]
    pts: list[tuple[float, float]] = []
    for k in range(4):  # rotate the quarter by 90 degrees clockwise each time
        for x, y in quarter:
            for _ in range(k):
                x, y = y, -x
            pts.append((x, y))
    return np.asarray(pts)


@functools.cache
def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    y = y - (y.max() + y.min()) / 2
    pts = np.stack([x, y], axis=1)
    return pts / np.linalg.norm(pts, axis=1).max()


@functools.cache
def _arrow() -> np.ndarray:
    return np.asarray(
        [(0.95, 0.0), (0.2, 0.6), (0.2, 0.2), (-0.95, 0.2), (-0.95, -0.2), (0.2, -0.2), (0.2, -0.6)]
    )


register_shape("square")(_polygon_drawer(_square))
register_shape("triangle")(_polygon_drawer(_triangle))
register_shape("star")(_polygon_drawer(_star))
register_shape("hexagon")(_polygon_drawer(_hexagon))
register_shape("cross")(_polygon_drawer(_cross))
register_shape("heart")(_polygon_drawer(_heart))
register_shape("arrow")(_polygon_drawer(_arrow))


@register_shape("circle")
def _circle(canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, theta: float) -> None:
    _disc(canvas, cx, cy, r, 255)


@register_shape("ring")
def _ring(canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, theta: float) -> None:
    _disc(canvas, cx, cy, r, 255)
    _disc(canvas, cx, cy, 0.6 * r, 0)


@register_shape("crescent")
def _crescent(canvas: ImageDraw.ImageDraw, cx: float, cy: float, r: float, theta: float) -> None:
    _disc(canvas, cx, cy, r, 255)
    ((hx, hy),) = _to_pixels(np.asarray([(0.45, 0.0)]), cx, cy, r, theta)
    _disc(canvas, hx, hy, 0.85 * r, 0)
