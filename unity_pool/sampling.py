"""Stratified sampling of scenes: every value of every attribute is equally represented.

For each attribute of `vocab.ATTRIBUTES` the sampler cycles through its values, each cycle in a
freshly shuffled order, so after n scenes each value appears floor(n/k) or ceil(n/k) times; the
attributes are shuffled independently, so their combinations are spread evenly too. Continuous
parameters (exact size, position, rotation, light direction and temperature) are then drawn
inside the bins the targets name. All randomness comes from one generator seeded by `seed`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from unity_pool import vocab
from unity_pool.scene import Camera, Lighting, Scene, SceneObject

DISTRACTOR_SIZE = (0.1, 0.2)
"""Diameter range of the objects other than the main one."""

TEMPERATURE = (4500.0, 8500.0)
"""Colour temperatures drawn for probe sets (K): a nuisance, not an attribute."""

DIRECTIONAL = (0.0, 0.6)
"""Strength of directional shading drawn for probe sets."""


def balanced_column(rng: np.random.Generator, values: tuple[Any, ...], n: int) -> list[Any]:
    """n values cycling through `values`, each cycle in a new random order."""
    out: list[Any] = []
    while len(out) < n:
        out.extend(values[i] for i in rng.permutation(len(values)))
    return out[:n]


def _r(value: float) -> float:
    return round(float(value), 4)


def _distractor_position(
    rng: np.random.Generator, placed: list[tuple[float, float, float]], size: float
) -> tuple[float, float]:
    """A centre for a distractor that overlaps the objects already placed as little as possible
    (best of a few random tries)."""
    best, best_gap = (0.5, 0.5), -math.inf
    for _ in range(24):
        x, y = rng.uniform(0.08, 0.92, size=2)
        gap = min(math.hypot(x - px, y - py) - (pr + size) / 2 for px, py, pr in placed)
        if gap > best_gap:
            best, best_gap = (float(x), float(y)), gap
        if gap > 0.02:
            break
    return best


def scene_for(
    rng: np.random.Generator, target: dict[str, Any], *, width: int, height: int
) -> Scene:
    """A scene whose resolved attributes equal `target` (one value per `vocab.ATTRIBUTES` key)."""
    row, col = divmod(vocab.POSITIONS.index(target["position"]), 3)
    jitter = vocab.POSITION_JITTER
    main = SceneObject(
        shape=target["shape"],
        color=target["color"],
        texture=target["texture"],
        size=_r(rng.uniform(*vocab.SIZE_SAMPLE[target["size"]])),
        x=_r(vocab.POSITION_CENTERS[col] + rng.uniform(-jitter, jitter)),
        y=_r(vocab.POSITION_CENTERS[row] + rng.uniform(-jitter, jitter)),
        rotation=_r(rng.uniform(0.0, 360.0)),
    )
    objects = [main]
    placed = [(main.x, main.y, main.size)]
    for _ in range(int(target["n_objects"]) - 1):
        size = _r(rng.uniform(*DISTRACTOR_SIZE))
        x, y = _distractor_position(rng, placed, size)
        objects.append(
            SceneObject(
                shape=vocab.SHAPES[rng.integers(len(vocab.SHAPES))],
                color=vocab.COLORS[rng.integers(len(vocab.COLORS))],
                texture=vocab.TEXTURES[rng.integers(len(vocab.TEXTURES))],
                size=size,
                x=_r(x),
                y=_r(y),
                rotation=_r(rng.uniform(0.0, 360.0)),
            )
        )
        placed.append((x, y, size))
    lighting = Lighting(
        intensity=_r(rng.uniform(*vocab.LIGHT_SAMPLE[target["light"]])),
        direction=_r(rng.uniform(0.0, 360.0)),
        directional=_r(rng.uniform(*DIRECTIONAL)),
        temperature=_r(rng.uniform(*TEMPERATURE)),
    )
    return Scene(
        objects=tuple(objects),
        background=target["background"],
        lighting=lighting,
        camera=Camera(),
        width=width,
        height=height,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_scenes(
    n: int,
    seed: int,
    *,
    width: int = 224,
    height: int = 224,
    fixed: Mapping[str, Any] | None = None,
) -> list[Scene]:
    """n scenes with balanced attributes (see the module docstring); the same arguments always
    give the same scenes. `fixed` pins attributes to one value, e.g. {"n_objects": 1, "size":
    "large"} for scenes like those a model was trained on."""
    if n < 0:
        raise ValueError(f"n: expected a count >= 0; got {n}")
    for name, value in (fixed or {}).items():
        if name not in vocab.ATTRIBUTES or value not in vocab.ATTRIBUTES[name]:
            allowed = vocab.ATTRIBUTES.get(name, tuple(vocab.ATTRIBUTES))
            raise ValueError(f"fixed {name}: expected one of {allowed}; got {value!r}")
    rng = np.random.default_rng(seed)
    columns = {name: balanced_column(rng, values, n) for name, values in vocab.ATTRIBUTES.items()}
    for name, value in (fixed or {}).items():
        columns[name] = [value] * n
    return [
        scene_for(rng, {name: col[i] for name, col in columns.items()}, width=width, height=height)
        for i in range(n)
    ]
