"""The scene spec: what a renderer is asked to draw, as frozen dataclasses that round-trip JSON.

A scene is a list of objects (the first is the *main* object, whose attributes an image is
labelled with, and is drawn on top of the others), a background, lighting, a camera, an image
size and a seed. Coordinates: x to the right, y downwards, both in [0, 1] of the image; sizes are
diameters as a fraction of the image's shorter side; angles in degrees, counter-clockwise as seen
on screen. `Scene.from_dict` validates user-supplied specs against the JSON Schema
(`scene.schema.json`) and says which field is wrong and what it allows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from unity_pool import vocab


class SceneError(ValueError):
    """A scene spec that breaks the schema: names the field, what it allows and what it got."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path
        """Where in the spec the problem is, e.g. `objects[0].color`; empty for the whole spec."""


def _check_choice(where: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SceneError(
            f"{where}: expected one of {', '.join(choices)}; got {value!r}. "
            f"Fix: use one of the listed names.",
            path=where,
        )


def _check_range(where: str, key: str, value: object) -> None:
    low, high = vocab.RANGES[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if not ok or not (low <= value <= high):  # type: ignore[operator]
        raise SceneError(
            f"{where}: expected a number in [{low}, {high}]; got {value!r}. "
            f"Fix: bring it into range.",
            path=where,
        )


@dataclass(frozen=True, kw_only=True)
class SceneObject:
    """One object of a scene."""

    shape: str
    """One of `vocab.SHAPES`."""
    color: str
    """One of `vocab.COLORS` (named sRGB colour, before lighting)."""
    texture: str = "solid"
    """One of `vocab.TEXTURES`; painted in the object's own frame."""
    size: float = 0.3
    """Diameter of the object's bounding circle, as a fraction of the image's shorter side."""
    x: float = 0.5
    """Horizontal centre in [0, 1], 0 = left edge (before the camera)."""
    y: float = 0.5
    """Vertical centre in [0, 1], 0 = top edge (before the camera)."""
    rotation: float = 0.0
    """Degrees, counter-clockwise as seen on screen."""

    def __post_init__(self) -> None:
        _check_choice("object.shape", self.shape, vocab.SHAPES)
        _check_choice("object.color", self.color, vocab.COLORS)
        _check_choice("object.texture", self.texture, vocab.TEXTURES)
        for name in ("size", "x", "y", "rotation"):
            _check_range(f"object.{name}", f"object.{name}", getattr(self, name))


@dataclass(frozen=True, kw_only=True)
class Lighting:
    """Light applied to the whole image as a multiply: brightness x colour x directional shading."""

    intensity: float = 1.0
    """Overall brightness multiplier; 1 is neutral (binned into dim/normal/bright)."""
    direction: float = 90.0
    """Degrees the light comes from, counter-clockwise from the right (90 = from the top)."""
    directional: float = 0.3
    """Strength of the shading gradient toward `direction`, 0 (flat) to 1 (strong)."""
    temperature: float = 6500.0
    """Colour temperature in kelvin; 6500 is neutral white, lower is warmer, higher is bluer."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_range(f"lighting.{f.name}", f"lighting.{f.name}", getattr(self, f.name))


@dataclass(frozen=True, kw_only=True)
class Camera:
    """A 2-D camera over the objects (the background is a backdrop at infinity and stays put)."""

    zoom: float = 1.0
    """Magnification about the image centre; 2 doubles apparent sizes and distances."""
    offset_x: float = 0.0
    """Where the camera looks, in scene units from the centre; +0.1 moves objects left by 0.1."""
    offset_y: float = 0.0
    """Like `offset_x`, vertically; +0.1 moves objects up by 0.1 (y grows downwards)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_range(f"camera.{f.name}", f"camera.{f.name}", getattr(self, f.name))

    def apply(self, x: float, y: float) -> tuple[float, float]:
        """The apparent image position [0, 1] of scene position (x, y)."""
        return (
            (x - 0.5 - self.offset_x) * self.zoom + 0.5,
            (y - 0.5 - self.offset_y) * self.zoom + 0.5,
        )


@dataclass(frozen=True, kw_only=True)
class Scene:
    """A complete render request. Equal scenes render to identical pixels."""

    objects: tuple[SceneObject, ...]
    """At least one object; `objects[0]` is the main object (labelled, drawn on top)."""
    background: str = "plain"
    """One of `vocab.BACKGROUNDS`."""
    lighting: Lighting = field(default_factory=Lighting)
    """Light over the whole image."""
    camera: Camera = field(default_factory=Camera)
    """Camera over the objects."""
    width: int = 224
    """Image width in pixels."""
    height: int = 224
    """Image height in pixels."""
    seed: int = 0
    """Seeds every random element (noise backgrounds, fur); the same spec and seed give the same
    pixels."""
    version: int = vocab.SPEC_VERSION
    """Spec version; only `vocab.SPEC_VERSION` is accepted."""

    def __post_init__(self) -> None:
        if self.version != vocab.SPEC_VERSION:
            raise SceneError(
                f"scene.version: expected {vocab.SPEC_VERSION}; got {self.version!r}. "
                "Fix: write specs for this version of unity_pool.",
                path="version",
            )
        if not isinstance(self.objects, tuple):
            object.__setattr__(self, "objects", tuple(self.objects))
        _check_range("scene.objects (count)", "scene.objects", len(self.objects))
        for i, obj in enumerate(self.objects):
            if not isinstance(obj, SceneObject):
                raise SceneError(
                    f"scene.objects[{i}]: expected a SceneObject; got {type(obj).__name__}. "
                    "Fix: build scenes from JSON data with Scene.from_dict.",
                    path=f"objects[{i}]",
                )
        _check_choice("scene.background", self.background, vocab.BACKGROUNDS)
        for name in ("width", "height", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SceneError(f"scene.{name}: expected an integer; got {value!r}.", path=name)
            _check_range(f"scene.{name}", f"scene.{name}", value)

    @property
    def main(self) -> SceneObject:
        """The main object, whose attributes label the image."""
        return self.objects[0]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-ready data (objects as a list), keys in field order: what
        `dataclasses.asdict` gives, built directly (every image stored keeps its scene, and
        `asdict`'s deep copies were a tenth of an agent's tool time)."""
        data = _fields(self)
        data["objects"] = [_fields(o) for o in self.objects]
        data["lighting"] = _fields(self.lighting)
        data["camera"] = _fields(self.camera)
        return data

    def to_json(self) -> str:
        """The spec as compact JSON with sorted keys (stable, hashable text)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, validate: bool = True) -> Scene:
        """Validate a user-supplied spec against the JSON Schema and build the scene.

        Raises `SceneError` naming the offending field and the allowed values. Missing optional
        fields take the dataclass defaults. `validate=False` skips the schema (not the range
        checks) for a spec already checked against it, e.g. within a tool call's arguments.
        """
        from unity_pool.schema import validate_spec

        if validate:
            validate_spec(data)
        return cls(
            version=data["version"],
            objects=tuple(SceneObject(**o) for o in data["objects"]),
            background=data.get("background", "plain"),
            lighting=Lighting(**data.get("lighting", {})),
            camera=Camera(**data.get("camera", {})),
            width=data.get("width", 224),
            height=data.get("height", 224),
            seed=data.get("seed", 0),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Scene:
        """Parse and validate a JSON spec; malformed JSON is a `SceneError` too."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SceneError(f"scene spec is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise SceneError(f"scene spec: expected a JSON object; got {type(data).__name__}.")
        return cls.from_dict(data)


def _fields(obj: Any) -> dict[str, Any]:
    """A flat dataclass's fields (all plain values) as a dict, in field order."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
