"""The vocabularies of the scene spec and of its ground-truth attributes, as data.

Everything a renderer, the JSON Schema, the probe-set sampler and the counterfactual editor need
to agree on lives here: the names of shapes, colours, textures and backgrounds, the RGB of each
colour, the numeric ranges of every spec field and the bins that turn continuous values (object
size, position, light intensity) into the categorical attributes that explanations are made of.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

SPEC_VERSION = 1
"""The `version` every scene spec carries; bumped when the spec changes incompatibly."""

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "cross",
    "heart",
    "ring",
    "crescent",
    "arrow",
)
"""Object shapes; every renderer backend must draw all of them."""

COLOR_RGB: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (220, 38, 38),
        "orange": (245, 135, 20),
        "yellow": (245, 215, 40),
        "green": (40, 165, 60),
        "cyan": (30, 200, 210),
        "blue": (35, 80, 220),
        "purple": (130, 50, 190),
        "pink": (245, 120, 190),
        "brown": (125, 80, 40),
        "white": (245, 245, 245),
        "black": (20, 20, 20),
    }
)
"""Object colours by name, as sRGB 0-255 before lighting. Grey is left out on purpose: it is the
colour of the `plain` background."""

COLORS: tuple[str, ...] = tuple(COLOR_RGB)
"""Object colour names, in a fixed order."""

TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "fur")
"""Surface textures painted inside an object's outline, in the object's own frame (they rotate
and scale with it); `fur` is oriented noise."""

BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise", "grid", "sky")
"""Backdrops behind the objects; not moved by the camera."""

# Numeric ranges of spec fields, inclusive: (minimum, maximum). The JSON Schema is built from these.
RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "object.size": (0.02, 1.5),
        "object.x": (0.0, 1.0),
        "object.y": (0.0, 1.0),
        "object.rotation": (-360.0, 360.0),
        "lighting.intensity": (0.1, 2.0),
        "lighting.direction": (-360.0, 360.0),
        "lighting.directional": (0.0, 1.0),
        "lighting.temperature": (2000.0, 12000.0),
        "camera.zoom": (0.25, 4.0),
        "camera.offset_x": (-1.0, 1.0),
        "camera.offset_y": (-1.0, 1.0),
        "scene.width": (8, 2048),
        "scene.height": (8, 2048),
        "scene.seed": (0, 2**63 - 1),
        "scene.objects": (1, 16),
    }
)
"""Allowed (minimum, maximum) of every numeric spec field, keyed `<part>.<field>`;
`scene.objects` bounds the number of objects."""

# --- Binned attributes ----------------------------------------------------------------------

SIZE_BINS: tuple[tuple[str, float], ...] = (
    ("small", 0.22),
    ("medium", 0.38),
    ("large", float("inf")),
)
"""(label, upper bound, exclusive) of an object's apparent diameter as a fraction of the image's
shorter side (spec size times camera zoom)."""

SIZE_SAMPLE: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"small": (0.12, 0.19), "medium": (0.25, 0.34), "large": (0.42, 0.55)}
)
"""Apparent diameters the probe-set sampler draws from, per size bin (kept inside the bin)."""

LIGHT_BINS: tuple[tuple[str, float], ...] = (
    ("dim", 0.7),
    ("normal", 1.15),
    ("bright", float("inf")),
)
"""(label, upper bound, exclusive) of lighting intensity."""

LIGHT_SAMPLE: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"dim": (0.45, 0.62), "normal": (0.85, 1.05), "bright": (1.22, 1.4)}
)
"""Intensities the probe-set sampler draws from, per light bin (kept inside the bin)."""

AXIS_BINS: tuple[tuple[str, str], ...] = (("left", "top"), ("", ""), ("right", "bottom"))
"""Names of the thirds of the image along x and y (the middle third has no name)."""

POSITIONS: tuple[str, ...] = (
    "top-left",
    "top",
    "top-right",
    "left",
    "center",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
)
"""Cells of the 3x3 grid an object's apparent centre falls into (row-major, y grows downwards)."""

POSITION_CENTERS: tuple[float, float, float] = (0.22, 0.5, 0.78)
"""Coordinates the sampler and the editor put an object at along x or y, per third; inside the
third, with room for a medium object to stay in frame."""

POSITION_JITTER = 0.07
"""Half-width of the uniform jitter around a position centre used by the sampler."""

N_OBJECTS: tuple[int, ...] = (1, 2, 3)
"""Object counts the probe-set sampler draws from."""

ATTRIBUTES: Mapping[str, tuple[str, ...] | tuple[int, ...]] = MappingProxyType(
    {
        "shape": SHAPES,
        "color": COLORS,
        "texture": TEXTURES,
        "background": BACKGROUNDS,
        "size": tuple(label for label, _ in SIZE_BINS),
        "position": POSITIONS,
        "n_objects": N_OBJECTS,
        "light": tuple(label for label, _ in LIGHT_BINS),
    }
)
"""Ground-truth attributes of a rendered image and their values, in column order: those of the
main (first) object, then scene-level ones. The concept vocabulary of explanations."""


def bin_label(value: float, bins: tuple[tuple[str, float], ...]) -> str:
    """The label of the first bin whose exclusive upper bound exceeds `value`."""
    for label, upper in bins:
        if value < upper:
            return label
    return bins[-1][0]


def position_label(x: float, y: float) -> str:
    """The 3x3 grid cell of an apparent centre (x, y) in [0, 1] image coordinates, y downwards."""
    col = min(2, max(0, int(x * 3)))
    row = min(2, max(0, int(y * 3)))
    horizontal, vertical = AXIS_BINS[col][0], AXIS_BINS[row][1]
    if not horizontal and not vertical:
        return "center"
    return "-".join(part for part in (vertical, horizontal) if part)
