"""Scene spec: vocabularies, JSON round trip, the JSON Schema and validation errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest

from unity_pool import vocab
from unity_pool.attributes import scene_attributes
from unity_pool.procedural.backgrounds import BACKGROUNDS
from unity_pool.procedural.shapes import SHAPE_DRAWERS
from unity_pool.procedural.textures import TEXTURES
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Camera, Lighting, Scene, SceneError, SceneObject
from unity_pool.schema import build_schema, load_schema, validate_spec

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "unity_pool" / "scene.schema.json"


def _scene() -> Scene:
    return Scene(
        objects=(
            SceneObject(shape="star", color="red", texture="fur", size=0.4, x=0.2, y=0.8),
            SceneObject(shape="ring", color="blue", size=0.15, x=0.7, y=0.3, rotation=-45.0),
        ),
        background="sky",
        lighting=Lighting(intensity=0.5, direction=10.0, directional=0.7, temperature=3000.0),
        camera=Camera(zoom=1.0, offset_x=0.0, offset_y=0.0),
        width=96,
        height=64,
        seed=12345,
    )


def test_vocabularies_are_large_enough_and_registries_cover_them() -> None:
    assert len(vocab.SHAPES) >= 8 and len(vocab.COLORS) >= 10
    assert len(vocab.TEXTURES) >= 5 and len(vocab.BACKGROUNDS) >= 5
    assert {"circle", "square", "triangle", "star", "hexagon", "cross", "heart", "ring"} <= set(
        vocab.SHAPES
    )
    assert {"solid", "stripes", "dots", "checker", "fur"} == set(vocab.TEXTURES)
    assert set(SHAPE_DRAWERS) == set(vocab.SHAPES)
    assert set(TEXTURES) == set(vocab.TEXTURES)
    assert set(BACKGROUNDS) == set(vocab.BACKGROUNDS)
    assert all(
        len(rgb) == 3 and all(0 <= c <= 255 for c in rgb) for rgb in vocab.COLOR_RGB.values()
    )


def test_json_round_trip() -> None:
    scene = _scene()
    again = Scene.from_json(scene.to_json())
    assert again == scene
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
    assert scene.to_dict()["version"] == vocab.SPEC_VERSION


def test_to_dict_is_the_dataclass_as_plain_data() -> None:
    for scene in sample_scenes(50, seed=2):
        expected = dataclasses.asdict(scene)
        expected["objects"] = [dataclasses.asdict(o) for o in scene.objects]
        data = scene.to_dict()
        assert data == expected and list(data) == list(expected)
        assert isinstance(data["objects"], list) and data["objects"][0] is not scene.objects[0]


def test_minimal_spec_takes_defaults() -> None:
    scene = Scene.from_dict({"version": 1, "objects": [{"shape": "heart", "color": "pink"}]})
    assert scene.main.texture == "solid" and scene.background == "plain"
    assert (scene.width, scene.height, scene.seed) == (224, 224, 0)


def test_published_schema_is_current_and_valid() -> None:
    on_disk = json.loads(SCHEMA_FILE.read_text("utf-8"))
    assert on_disk == build_schema(), (
        "regenerate: python -m unity_pool.schema > unity_pool/scene.schema.json"
    )
    assert load_schema() == on_disk
    jsonschema.Draft202012Validator.check_schema(on_disk)
    jsonschema.validate(_scene().to_dict(), on_disk)


@pytest.mark.parametrize(
    ("patch", "path", "needles"),
    [
        (
            lambda d: d["objects"][0].update(color="blu"),
            "objects[0].color",
            ["'blu'", "blue", "red"],
        ),
        (lambda d: d["objects"][0].update(shape="blob"), "objects[0].shape", ["heart", "'blob'"]),
        (lambda d: d.update(background="space"), "background", ["sky", "grid", "'space'"]),
        (lambda d: d["objects"][1].update(size=9), "objects[1].size", ["[0.02, 1.5]", "9"]),
        (lambda d: d["lighting"].update(temperature=100), "lighting.temperature", ["2000"]),
        (lambda d: d["objects"][0].update(colour="red"), "objects[0]", ["'colour'", "color"]),
        (lambda d: d.update(version=2), "version", ["expected 1", "got 2"]),
        (lambda d: d.update(objects=[]), "objects", ["objects"]),
        (lambda d: d.update(width=1.5), "width", ["integer"]),
    ],
)
def test_invalid_specs_name_the_field_and_the_allowed_values(patch, path, needles) -> None:
    data = _scene().to_dict()
    patch(data)
    with pytest.raises(SceneError) as info:
        Scene.from_dict(data)
    assert info.value.path == path
    message = str(info.value)
    assert path in message
    for needle in needles:
        assert needle in message
    assert "\n" not in message


def test_malformed_json_is_a_scene_error() -> None:
    with pytest.raises(SceneError, match="not valid JSON"):
        Scene.from_json("{nope")
    with pytest.raises(SceneError, match="JSON object"):
        Scene.from_json("[1, 2]")


def test_dataclasses_validate_too() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        SceneObject(shape="circle", color="grey")
    with pytest.raises(ValueError, match=r"object\.x"):
        SceneObject(shape="circle", color="red", x=1.5)
    with pytest.raises(ValueError, match=r"lighting\.intensity"):
        Lighting(intensity=float("nan"))
    with pytest.raises(ValueError, match="count"):
        Scene(objects=())
    with pytest.raises(SceneError, match="from_dict"):
        Scene(objects=({"shape": "circle", "color": "red"},))  # type: ignore[arg-type]
    validate_spec(_scene().to_dict())  # does not raise


def test_attributes_are_binned_after_the_camera() -> None:
    scene = Scene(objects=(SceneObject(shape="circle", color="red", size=0.3, x=0.5, y=0.5),))
    assert scene_attributes(scene) == {
        "shape": "circle",
        "color": "red",
        "texture": "solid",
        "background": "plain",
        "size": "medium",
        "position": "center",
        "n_objects": 1,
        "light": "normal",
    }
    zoomed = Scene(objects=scene.objects, camera=Camera(zoom=2.0, offset_x=0.1, offset_y=-0.1))
    attributes = scene_attributes(zoomed)
    assert attributes["size"] == "large"
    assert attributes["position"] == "bottom-left"
    assert list(attributes) == list(vocab.ATTRIBUTES)
    assert scene_attributes(_scene())["light"] == "dim"
