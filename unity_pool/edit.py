"""Counterfactual edits: the same scene with one named attribute changed and everything else equal.

`edit(scene, {"color": "blue"})` changes the main object's colour; the seed, the other objects,
the lighting and the camera stay as they were, so a re-render differs only where the main object
is. Binned attributes (`size`, `position`, `light`) are set to a representative value of the
requested bin. Editors live in a registry, one per attribute name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from unity_pool import vocab
from unity_pool.scene import Scene

Editor = Callable[[Scene, Any], Scene]
"""Returns a copy of the scene with one attribute set to the (already checked) value."""

_EDITORS: dict[str, tuple[Editor, tuple[Any, ...] | None]] = {}


def register_edit(name: str, values: tuple[Any, ...] | None) -> Callable[[Editor], Editor]:
    """Register an editor for attribute `name`; `values` are the allowed values, or None for a
    number."""

    def deco(fn: Editor) -> Editor:
        if name in _EDITORS:
            raise ValueError(f"an editor for {name!r} is already registered")
        _EDITORS[name] = (fn, values)
        return fn

    return deco


def editable_attributes() -> dict[str, tuple[Any, ...] | None]:
    """Attribute name -> allowed values (None: any number in the spec's range)."""
    return {name: values for name, (_, values) in _EDITORS.items()}


def _with_main(scene: Scene, **changes: Any) -> Scene:
    main = dataclasses.replace(scene.main, **changes)
    return dataclasses.replace(scene, objects=(main, *scene.objects[1:]))


def _midpoint(bounds: tuple[float, float]) -> float:
    return round((bounds[0] + bounds[1]) / 2, 6)


@register_edit("shape", vocab.SHAPES)
def _shape(scene: Scene, value: str) -> Scene:
    return _with_main(scene, shape=value)


@register_edit("color", vocab.COLORS)
def _color(scene: Scene, value: str) -> Scene:
    return _with_main(scene, color=value)


@register_edit("texture", vocab.TEXTURES)
def _texture(scene: Scene, value: str) -> Scene:
    return _with_main(scene, texture=value)


@register_edit("size", vocab.ATTRIBUTES["size"])
def _size(scene: Scene, value: str) -> Scene:
    return _with_main(scene, size=round(_midpoint(vocab.SIZE_SAMPLE[value]) / scene.camera.zoom, 6))


@register_edit("position", vocab.POSITIONS)
def _position(scene: Scene, value: str) -> Scene:
    index = vocab.POSITIONS.index(value)
    row, col = divmod(index, 3)
    cam = scene.camera
    x = (vocab.POSITION_CENTERS[col] - 0.5) / cam.zoom + 0.5 + cam.offset_x
    y = (vocab.POSITION_CENTERS[row] - 0.5) / cam.zoom + 0.5 + cam.offset_y
    return _with_main(scene, x=round(x, 6), y=round(y, 6))


@register_edit("rotation", None)
def _rotation(scene: Scene, value: float) -> Scene:
    return _with_main(scene, rotation=float(value))


@register_edit("background", vocab.BACKGROUNDS)
def _background(scene: Scene, value: str) -> Scene:
    return dataclasses.replace(scene, background=value)


@register_edit("light", vocab.ATTRIBUTES["light"])
def _light(scene: Scene, value: str) -> Scene:
    lighting = dataclasses.replace(scene.lighting, intensity=_midpoint(vocab.LIGHT_SAMPLE[value]))
    return dataclasses.replace(scene, lighting=lighting)


def _check(name: str, value: Any) -> None:
    if name not in _EDITORS:
        raise ValueError(
            f"cannot edit {name!r}: expected one of {', '.join(_EDITORS)}. "
            "Fix: use one of the editable attribute names."
        )
    allowed = _EDITORS[name][1]
    if allowed is None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"cannot set {name!r} to {value!r}: expected a finite number.")
    elif value not in allowed:
        raise ValueError(
            f"cannot set {name!r} to {value!r}: expected one of {', '.join(map(str, allowed))}."
        )


def edit(scene: Scene, changes: Mapping[str, Any]) -> Scene:
    """A copy of `scene` with the named attributes changed, applied in order; everything else
    (seed, other objects, lighting, camera) identical.

    Raises `ValueError` listing the valid names or values for an unknown attribute or value.
    """
    for name, value in changes.items():
        _check(name, value)
    for name, value in changes.items():
        scene = _EDITORS[name][0](scene, value)
    return scene


__all__ = ["Editor", "edit", "editable_attributes", "register_edit"]
