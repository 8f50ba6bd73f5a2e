"""The JSON Schema of the scene spec, built from `vocab`, and validation with readable errors.

`scene.schema.json` next to this module is the published copy for backends in other languages
(Unity's C#, a diffusion server); a test checks it equals `build_schema()`. Regenerate it with
`python -m unity_pool.schema > unity_pool/scene.schema.json`.
"""

from __future__ import annotations

import difflib
import functools
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from unity_pool import vocab
from unity_pool.scene import SceneError

SCHEMA_PATH = Path(__file__).with_name("scene.schema.json")
"""The published schema file, shipped as package data."""

SCHEMA_ID = "https://coin-scale.invalid/unity_pool/scene.schema.json"
"""The `$id` of the schema (a name, not a reachable address)."""


def _number(key: str, description: str, default: float) -> dict[str, Any]:
    low, high = vocab.RANGES[key]
    return {
        "type": "number",
        "minimum": low,
        "maximum": high,
        "default": default,
        "description": description,
    }


def _integer(key: str, description: str, default: int) -> dict[str, Any]:
    low, high = vocab.RANGES[key]
    return {
        "type": "integer",
        "minimum": int(low),
        "maximum": int(high),
        "default": default,
        "description": description,
    }


def _object(properties: dict[str, Any], required: list[str], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def build_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-1 scene spec."""
    scene_object = _object(
        {
            "shape": {"enum": list(vocab.SHAPES), "description": "Outline of the object."},
            "color": {"enum": list(vocab.COLORS), "description": "Named colour, before lighting."},
            "texture": {
                "enum": list(vocab.TEXTURES),
                "default": "solid",
                "description": "Pattern inside the outline, in the object's own frame.",
            },
            "size": _number("object.size", "Diameter of the bounding circle / shorter side.", 0.3),
            "x": _number("object.x", "Horizontal centre, 0 = left edge.", 0.5),
            "y": _number("object.y", "Vertical centre, 0 = top edge.", 0.5),
            "rotation": _number("object.rotation", "Degrees, counter-clockwise.", 0.0),
        },
        ["shape", "color"],
        "One object; the first of `objects` is the main one.",
    )
    lighting = _object(
        {
            "intensity": _number("lighting.intensity", "Brightness multiplier.", 1.0),
            "direction": _number("lighting.direction", "Degrees the light comes from.", 90.0),
            "directional": _number("lighting.directional", "Shading gradient strength.", 0.3),
            "temperature": _number("lighting.temperature", "Colour temperature, K.", 6500.0),
        },
        [],
        "Light over the whole image.",
    )
    camera = _object(
        {
            "zoom": _number("camera.zoom", "Magnification about the centre.", 1.0),
            "offset_x": _number("camera.offset_x", "Look-at offset, scene units.", 0.0),
            "offset_y": _number("camera.offset_y", "Look-at offset, scene units.", 0.0),
        },
        [],
        "2-D camera over the objects.",
    )
    low, high = vocab.RANGES["scene.objects"]
    schema = _object(
        {
            "version": {"const": vocab.SPEC_VERSION, "description": "Spec version."},
            "objects": {
                "type": "array",
                "items": scene_object,
                "minItems": int(low),
                "maxItems": int(high),
                "description": "Objects; the first is the main object, drawn on top.",
            },
            "background": {
                "enum": list(vocab.BACKGROUNDS),
                "default": "plain",
                "description": "Backdrop.",
            },
            "lighting": lighting,
            "camera": camera,
            "width": _integer("scene.width", "Image width, pixels.", 224),
            "height": _integer("scene.height", "Image height, pixels.", 224),
            "seed": _integer("scene.seed", "Seed of every random element.", 0),
        },
        ["version", "objects"],
        "A scene for a unity_pool renderer.",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "unity_pool scene spec",
        **schema,
    }


@functools.cache
def load_schema() -> dict[str, Any]:
    """The published schema file, `unity_pool/scene.schema.json` (read once)."""
    text = SCHEMA_PATH.read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


class SchemaChecker:
    """A JSON Schema (draft 2020-12) checked fast, with readable errors when it fails.

    `is_valid` asks jsonschema-rs (compiled: 45 times faster than the python `jsonschema` on an
    agent's render call of ten scenes); the python validator, which the error messages are
    written against, runs only for instances that fail, or that jsonschema-rs cannot take."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        import jsonschema
        import jsonschema_rs

        self.schema = schema
        self.errors = jsonschema.Draft202012Validator(schema)
        """The python validator: `iter_errors` of an invalid instance."""
        self._fast = jsonschema_rs.Draft202012Validator(dict(schema))

    def is_valid(self, instance: object) -> bool:
        try:
            return bool(self._fast.is_valid(instance))
        except (ValueError, TypeError, OverflowError):  # a value jsonschema-rs cannot convert
            return bool(self.errors.is_valid(instance))

    def iter_errors(self, instance: object) -> Iterator[Any]:
        """The python validator's errors ([] when `is_valid`, without running it)."""
        if self.is_valid(instance):
            return iter(())
        return iter(self.errors.iter_errors(instance))


@functools.cache
def _validator() -> SchemaChecker:
    return SchemaChecker(load_schema())


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: Any) -> str:
    where = _path(error.absolute_path) or "(top level)"
    if error.validator == "enum":
        allowed = [str(v) for v in error.validator_value]
        hint = difflib.get_close_matches(str(error.instance), allowed, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else "use one of the listed values."
        return f"{where}: expected one of {', '.join(allowed)}; got {error.instance!r}. Fix: {fix}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (
            f"{where}: unknown field(s) {', '.join(map(repr, extra))}; "
            f"allowed fields: {', '.join(allowed)}. Fix: remove or rename them."
        )
    if error.validator == "const":
        return f"{where}: expected {error.validator_value!r}; got {error.instance!r}."
    if error.validator == "required":
        return f"{where}: {error.message}; required fields: {', '.join(error.validator_value)}."
    if error.validator in ("minimum", "maximum"):
        low, high = error.schema.get("minimum"), error.schema.get("maximum")
        return f"{where}: expected a number in [{low}, {high}]; got {error.instance!r}."
    return f"{where}: {error.message}."


def validate_spec(data: Mapping[str, Any]) -> None:
    """Check a spec (parsed JSON) against the schema; raise `SceneError` for the most relevant
    problem, naming the field, the allowed values and what was given."""
    import jsonschema

    relevance = jsonschema.exceptions.by_relevance(strong=frozenset({"additionalProperties"}))
    error = jsonschema.exceptions.best_match(_validator().iter_errors(data), key=relevance)
    if error is not None:
        raise SceneError(
            f"invalid scene spec at {_message(error)}", path=_path(error.absolute_path)
        )


def main() -> int:
    """Print the schema as formatted JSON (to regenerate `scene.schema.json`)."""
    json.dump(build_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
