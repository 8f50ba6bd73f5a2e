"""Counterfactual edits: one attribute changes, and the image changes only where it should."""

from __future__ import annotations

import numpy as np
import pytest

from unity_pool import vocab
from unity_pool.attributes import scene_attributes
from unity_pool.edit import edit, editable_attributes
from unity_pool.procedural import object_mask, render_array
from unity_pool.scene import Lighting, Scene, SceneObject


def _scene() -> Scene:
    return Scene(
        objects=(
            SceneObject(shape="hexagon", color="red", texture="fur", size=0.4, x=0.45, y=0.5),
            SceneObject(shape="star", color="green", texture="stripes", size=0.2, x=0.8, y=0.2),
            SceneObject(shape="ring", color="black", texture="fur", size=0.2, x=0.15, y=0.8),
        ),
        background="noise",
        lighting=Lighting(intensity=1.1, direction=200.0, directional=0.6, temperature=4800.0),
        width=96,
        height=96,
        seed=99,
    )


@pytest.mark.parametrize(("name", "value"), [("color", "blue"), ("texture", "checker")])
def test_object_edit_changes_pixels_only_inside_the_object(name: str, value: str) -> None:
    scene = _scene()
    edited = edit(scene, {name: value})
    assert scene_attributes(edited)[name] == value
    before, after = render_array(scene), render_array(edited)
    changed = (before != after).any(axis=-1)
    inside = object_mask(scene) > 0
    assert changed.sum() > 0.5 * inside.sum()
    assert not changed[~inside].any()


def test_edit_changes_nothing_else_in_the_spec() -> None:
    scene = _scene()
    edited = edit(scene, {"color": "blue"})
    assert edited.objects[1:] == scene.objects[1:]
    assert (edited.lighting, edited.camera, edited.seed, edited.background) == (
        scene.lighting,
        scene.camera,
        scene.seed,
        scene.background,
    )
    assert edited.main.shape == scene.main.shape and edited.main.x == scene.main.x
    assert scene.main.color == "red"  # the original is untouched


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("shape", "heart"),
        ("size", "small"),
        ("size", "large"),
        ("position", "top-right"),
        ("position", "bottom"),
        ("background", "grid"),
        ("light", "dim"),
        ("light", "bright"),
    ],
)
def test_edits_set_the_resolved_attribute(name: str, value: str) -> None:
    scene = _scene()
    before = scene_attributes(scene)
    after = scene_attributes(edit(scene, {name: value}))
    assert after[name] == value
    assert {k: v for k, v in after.items() if k != name} == {
        k: v for k, v in before.items() if k != name
    }


def test_several_edits_and_rotation() -> None:
    edited = edit(_scene(), {"shape": "star", "color": "white", "rotation": 30})
    assert (edited.main.shape, edited.main.color, edited.main.rotation) == ("star", "white", 30.0)


def test_unknown_attribute_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        edit(_scene(), {"colour": "blue"})
    message = str(info.value)
    assert "'colour'" in message
    for name in ("shape", "color", "texture", "background", "size", "position", "light"):
        assert name in message


def test_unknown_value_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        edit(_scene(), {"color": "teal"})
    assert "'teal'" in str(info.value)
    assert all(c in str(info.value) for c in vocab.COLORS)
    with pytest.raises(ValueError, match="finite number"):
        edit(_scene(), {"rotation": "a lot"})


def test_editable_attributes_cover_the_categorical_attributes() -> None:
    editable = editable_attributes()
    for name, values in vocab.ATTRIBUTES.items():
        if name != "n_objects":
            assert editable[name] == values
    assert np.array_equal(render_array(edit(_scene(), {})), render_array(_scene()))
