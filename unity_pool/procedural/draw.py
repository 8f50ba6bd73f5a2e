"""The procedural renderer: a scene spec in, an anti-aliased RGB image and its attributes out.

Pure functions of the spec. Randomness comes from generators seeded by `(scene.seed, stream)`,
stream 0 for the background and 1 + i for object i, so changing one object never changes the
random draws of another. Order of painting: background, objects[1:] in order, the main object
(objects[0]) last, on top; then lighting multiplies the whole image. Outlines are rasterised at
`SUPERSAMPLE` x resolution inside each object's bounding box and box-filtered down, which gives
each edge pixel its covered fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from unity_pool import vocab
from unity_pool.attributes import scene_attributes
from unity_pool.procedural.backgrounds import BACKGROUNDS
from unity_pool.procedural.shapes import SHAPE_DRAWERS
from unity_pool.procedural.textures import TEXTURES
from unity_pool.scene import Scene, SceneObject

F32 = npt.NDArray[np.float32]

SUPERSAMPLE = 4
"""Rasterisation factor per axis for outlines: 4 gives 17 coverage levels per pixel."""


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where an object lands in the image, in pixels (x right, y down)."""

    cx: float
    """Centre, x."""
    cy: float
    """Centre, y."""
    radius: float
    """Bounding radius."""
    theta: float
    """Rotation, radians counter-clockwise."""
    x0: int
    """Bounding box, first column (inclusive, clipped to the image)."""
    y0: int
    """Bounding box, first row (inclusive, clipped to the image)."""
    x1: int
    """Bounding box, last column (exclusive, clipped to the image)."""
    y1: int
    """Bounding box, last row (exclusive, clipped to the image)."""


def object_rng(scene: Scene, index: int) -> np.random.Generator:
    """The generator of object `index` (stream 1 + index of the scene's seed)."""
    return np.random.default_rng([scene.seed, 1 + index])


def place(scene: Scene, obj: SceneObject) -> Placement | None:
    """The object's pixel placement after the camera, or None if it is entirely out of frame."""
    ax, ay = scene.camera.apply(obj.x, obj.y)
    cx, cy = ax * scene.width, ay * scene.height
    r = obj.size * scene.camera.zoom * min(scene.width, scene.height) / 2
    x0, x1 = max(0, math.floor(cx - r) - 1), min(scene.width, math.ceil(cx + r) + 1)
    y0, y1 = max(0, math.floor(cy - r) - 1), min(scene.height, math.ceil(cy + r) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    theta = math.radians(obj.rotation)
    return Placement(cx=cx, cy=cy, radius=r, theta=theta, x0=x0, y0=y0, x1=x1, y1=y1)


def coverage(p: Placement, shape: str) -> F32:
    """Fraction of each pixel of the bounding box covered by the outline, (h, w) in [0, 1]."""
    s = SUPERSAMPLE
    w, h = p.x1 - p.x0, p.y1 - p.y0
    canvas = Image.new("L", (w * s, h * s), 0)
    # PIL puts pixel k's sample at coordinate k; the sub-pixel's centre is k + 0.5 -> shift by 0.5
    cx, cy = (p.cx - p.x0) * s - 0.5, (p.cy - p.y0) * s - 0.5
    SHAPE_DRAWERS[shape](ImageDraw.Draw(canvas), cx, cy, p.radius * s, p.theta)
    return np.asarray(canvas.reduce(s), dtype=np.float32) * np.float32(1 / 255)


def object_mask(scene: Scene, index: int = 0) -> F32:
    """Coverage of object `index` over the whole image, (height, width) in [0, 1], ignoring
    occlusion (the main object, drawn last, is never occluded)."""
    mask = np.zeros((scene.height, scene.width), dtype=np.float32)
    obj = scene.objects[index]
    p = place(scene, obj)
    if p is not None:
        mask[p.y0 : p.y1, p.x0 : p.x1] = coverage(p, obj.shape)
    return mask


def _contrast(base: F32) -> F32:
    """The shade a texture mixes toward: darker for light colours, lighter for dark ones."""
    luminance = float(base @ np.asarray([0.2126, 0.7152, 0.0722], dtype=np.float32))
    if luminance > 0.35:
        return (base * 0.35).astype(np.float32)
    return (base + (1 - base) * 0.55).astype(np.float32)


def _object_frame(p: Placement) -> tuple[F32, F32]:
    """Object-frame coordinates (a, b), y up, in bounding radii, of the box's pixel centres."""
    xs = (np.arange(p.x0, p.x1, dtype=np.float32) + 0.5 - p.cx) / p.radius
    ys = (p.cy - np.arange(p.y0, p.y1, dtype=np.float32) - 0.5) / p.radius
    c, s = np.float32(math.cos(p.theta)), np.float32(math.sin(p.theta))
    a = xs[None, :] * c + ys[:, None] * s
    b = ys[:, None] * c - xs[None, :] * s
    return a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)


def paint_object(image: F32, scene: Scene, index: int) -> None:
    """Composite object `index` over `image` (channel=3, height, width) in place."""
    obj = scene.objects[index]
    p = place(scene, obj)
    if p is None or p.radius <= 0:
        return
    alpha = coverage(p, obj.shape)[None]
    base = np.asarray(vocab.COLOR_RGB[obj.color], dtype=np.float32) * np.float32(1 / 255)
    a, b = _object_frame(p)
    weight = TEXTURES[obj.texture](a, b, p.radius, object_rng(scene, index))
    region = image[:, p.y0 : p.y1, p.x0 : p.x1]
    if weight is None:
        region += (base[:, None, None] - region) * alpha
    else:
        contrast = _contrast(base)[:, None, None]
        color = base[:, None, None] + (contrast - base[:, None, None]) * weight[None]
        region += (color - region) * alpha


def color_temperature_rgb(kelvin: float) -> tuple[float, float, float]:
    """RGB gains of a black-body light at `kelvin`, relative to 6500 K (= 1, 1, 1).

    Tanner Helland's fit of the Planckian locus in sRGB.
    """

    def raw(k: float) -> tuple[float, float, float]:
        t = k / 100
        if t <= 66:
            r = 255.0
            g = 99.4708025861 * math.log(t) - 161.1195681661
        else:
            r = 329.698727446 * (t - 60) ** -0.1332047592
            g = 288.1221695283 * (t - 60) ** -0.0755148492
        if t >= 66:
            bl = 255.0
        elif t <= 19:
            bl = 0.0
        else:
            bl = 138.5177312231 * math.log(t - 10) - 305.0447927307
        return tuple(min(255.0, max(0.0, v)) for v in (r, g, bl))  # type: ignore[return-value]

    ref = raw(6500.0)
    got = raw(kelvin)
    return (got[0] / ref[0], got[1] / ref[1], got[2] / ref[2])


def apply_lighting(image: F32, scene: Scene) -> F32:
    """Multiply `image` (channel=3, height, width) by intensity x colour-temperature gains x a
    linear shading ramp toward the light's direction; returns the image (modified in place)."""
    light = scene.lighting
    h, w = scene.height, scene.width
    d = math.radians(light.direction)
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * 2  # -1 left .. 1 right
    ys = (0.5 - (np.arange(h, dtype=np.float32) + 0.5) / h) * 2  # -1 bottom .. 1 top
    k = np.float32(0.5 * light.directional)
    shading = 1 + k * (
        xs[None, :] * np.float32(math.cos(d)) + ys[:, None] * np.float32(math.sin(d))
    )
    gains = np.asarray(color_temperature_rgb(light.temperature), dtype=np.float32)
    gains *= np.float32(light.intensity)
    for channel, gain in enumerate(gains.tolist()):
        image[channel] *= shading * np.float32(gain)
    return image


def render_array(scene: Scene) -> npt.NDArray[np.uint8]:
    """The image as a (height, width, channel=3) uint8 sRGB array."""
    bg_rng = np.random.default_rng([scene.seed, 0])
    image = BACKGROUNDS[scene.background](bg_rng, scene.height, scene.width)
    image = np.ascontiguousarray(image, dtype=np.float32)
    for index in (*range(1, len(scene.objects)), 0):
        paint_object(image, scene, index)
    apply_lighting(image, scene)
    np.clip(image, 0.0, 1.0, out=image)
    image *= 255
    image += 0.5
    return np.ascontiguousarray(image.astype(np.uint8).transpose(1, 2, 0))


def render(scene: Scene) -> tuple[Image.Image, dict[str, Any]]:
    """Draw `scene`: the RGB image and its resolved ground-truth attributes
    (`attributes.scene_attributes`). Deterministic for a given spec and seed."""
    return Image.fromarray(render_array(scene), mode="RGB"), scene_attributes(scene)
