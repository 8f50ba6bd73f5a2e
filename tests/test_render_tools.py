"""The explainer's image tools (render, edit, text2image), their store and argument checks, and
the contact sheet. No Ray: the renderer is in process, or one real server subprocess."""

from __future__ import annotations

import json
from collections.abc import Sequence

import jsonschema
import numpy as np
import pytest
from PIL import Image

from unity_pool.attributes import scene_attributes
from unity_pool.client import RenderFailed
from unity_pool.contact_sheet import CAPTION_HEIGHT, caption, contact_sheet
from unity_pool.edit import edit as edit_scene
from unity_pool.launcher import SupervisedRenderer
from unity_pool.procedural import render_array
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Scene, SceneObject
from unity_pool.tools import (
    ImageStore,
    LocalRenderer,
    RenderTools,
    ToolError,
    ToolUnavailable,
)


def _spec(color: str = "red", seed: int = 3) -> dict:
    return {
        "version": 1,
        "objects": [{"shape": "star", "color": color, "texture": "dots", "size": 0.5}],
        "background": "grid",
        "width": 48,
        "height": 40,
        "seed": seed,
    }


class FakeDiffusion:
    """A TextToImage backend: a flat image whose colour depends on the prompt and seed."""

    def __init__(self, *, drop_one: bool = False) -> None:
        self.calls: list[tuple[list[str], int]] = []
        self.drop_one = drop_one

    def generate(self, prompts: Sequence[str], seed: int) -> list[Image.Image]:
        self.calls.append((list(prompts), seed))
        images = [Image.new("RGB", (32, 24), (len(p) % 256, seed % 256, 7)) for p in prompts]
        return images[:-1] if self.drop_one else images


def _pixels(tools: RenderTools, image_id: str) -> np.ndarray:
    return np.asarray(tools.store.image(image_id))


def test_render_stores_images_with_ids_scenes_and_attributes() -> None:
    tools = RenderTools()
    refs = tools.render([_spec("red"), _spec("blue", seed=4)])
    assert [r.id for r in refs] == ["img-000000", "img-000001"]
    for ref, spec in zip(refs, [_spec("red"), _spec("blue", seed=4)], strict=True):
        scene = Scene.from_dict(spec)
        assert ref.source == "render" and (ref.width, ref.height) == (48, 40)
        assert ref.attributes == scene_attributes(scene)
        assert ref.scene == scene.to_dict()
        np.testing.assert_array_equal(_pixels(tools, ref.id), render_array(scene))
    assert len(tools.store) == 2 and "img-000001" in tools.store
    json.dumps(refs[0].to_dict())  # JSON-ready


def test_edit_by_id_re_renders_the_stored_scene_with_the_changes() -> None:
    tools = RenderTools()
    (original,) = tools.render([_spec("red")])
    edited = tools.edit(original.id, {"color": "green", "background": "sky"})
    expected = edit_scene(Scene.from_dict(_spec("red")), {"color": "green", "background": "sky"})
    assert edited.id == "img-000001" and edited.source == "edit" and edited.parent == original.id
    assert edited.attributes is not None and original.attributes is not None
    assert edited.attributes["color"] == "green" and edited.attributes["background"] == "sky"
    assert edited.attributes["shape"] == original.attributes["shape"]
    np.testing.assert_array_equal(_pixels(tools, edited.id), render_array(expected))
    # an edit of an edit chains; a spec works as the target too
    again = tools.edit(edited.id, {"texture": "solid"})
    assert again.parent == edited.id and again.attributes["texture"] == "solid"  # type: ignore[index]
    from_spec = tools.edit(_spec("red"), {"color": "green", "background": "sky"})
    assert from_spec.parent is None
    assert tools.store.get(from_spec.id).data == tools.store.get(edited.id).data


def test_bad_arguments_raise_errors_a_model_can_act_on() -> None:
    tools = RenderTools(max_images=4)
    with pytest.raises(ToolError, match=r"specs\[1\].*objects\[0\]\.color.*expected one of"):
        tools.render([_spec(), _spec("mauve")])
    with pytest.raises(ToolError, match="expected a list of 1 to 4 items; got 5 items"):
        tools.render([_spec()] * 5)
    with pytest.raises(ToolError, match="expected a list of 1 to 4 items; got dict"):
        tools.render(_spec())  # type: ignore[arg-type]
    with pytest.raises(ToolError, match=r"specs\[0\]: expected a scene spec.*got str"):
        tools.render(["a red star"])  # type: ignore[list-item]
    assert len(tools.store) == 0  # nothing half-done was stored
    (ref,) = tools.render([_spec()])
    with pytest.raises(ToolError, match="cannot edit 'hue': expected one of shape, color"):
        tools.edit(ref.id, {"hue": "blue"})
    with pytest.raises(ToolError, match="cannot set 'size' to 'huge': expected one of small"):
        tools.edit(ref.id, {"size": "huge"})
    with pytest.raises(ToolError, match="changes: expected an object"):
        tools.edit(ref.id, {})
    with pytest.raises(
        ToolError, match=r"unknown image id 'img-000099'.*img-000000 \.\. img-000000"
    ):
        tools.edit("img-000099", {"color": "blue"})
    with pytest.raises(ToolError, match="known: none yet"):
        ImageStore().get("img-000000")


def test_text2image_needs_a_configured_backend() -> None:
    tools = RenderTools()
    with pytest.raises(ToolUnavailable, match=r"text_to_image=.*unity_pool\.diffusion"):
        tools.text2image(["a tabby cat"])
    assert all(d["name"] != "text2image" for d in tools.definitions())


def test_text2image_stores_generated_images_without_attributes() -> None:
    backend = FakeDiffusion()
    tools = RenderTools(text_to_image=backend)
    refs = tools.text2image(["a tabby cat", "a zebra"], seed=5)
    assert backend.calls == [(["a tabby cat", "a zebra"], 5)]
    assert [(r.id, r.source, r.prompt, r.attributes, r.scene) for r in refs] == [
        ("img-000000", "text2image", "a tabby cat", None, None),
        ("img-000001", "text2image", "a zebra", None, None),
    ]
    assert tools.store.image("img-000001").getpixel((0, 0)) == (7, 5, 7)
    with pytest.raises(ToolError, match="made by text2image from a prompt and has no scene"):
        tools.edit("img-000000", {"color": "blue"})
    with pytest.raises(ToolError, match=r"prompts\[1\]: expected a non-empty string"):
        tools.text2image(["ok", "  "])
    with pytest.raises(ToolError, match="seed: expected an integer >= 0"):
        tools.text2image(["ok"], seed=-1)
    with pytest.raises(RenderFailed, match="returned 1 images for 2 prompts"):
        RenderTools(text_to_image=FakeDiffusion(drop_one=True)).text2image(["a", "b"])


def test_call_dispatches_structured_tool_calls_and_checks_their_shape() -> None:
    tools = RenderTools(text_to_image=FakeDiffusion())
    definitions = {d["name"]: d for d in tools.definitions()}
    assert set(definitions) == {"render", "edit", "text2image"}
    json.dumps(definitions)
    arguments = {"specs": [_spec()]}
    jsonschema.validate(arguments, definitions["render"]["parameters"])
    out = tools.call("render", arguments)
    assert [i["id"] for i in out["images"]] == ["img-000000"]
    edit_args = {"image": "img-000000", "changes": {"color": "blue", "rotation": 30}}
    jsonschema.validate(edit_args, definitions["edit"]["parameters"])
    out = tools.call("edit", edit_args)
    assert out["images"][0]["parent"] == "img-000000"
    assert out["images"][0]["attributes"]["color"] == "blue"
    assert tools.call("text2image", {"prompts": ["a cat"]})["images"][0]["prompt"] == "a cat"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"image": "img-0", "changes": {"hue": 1}}, definitions["edit"]["parameters"]
        )
    with pytest.raises(ToolError, match="unknown tool 'exec'; expected one of render, edit"):
        tools.call("exec", {"code": "import os"})
    with pytest.raises(
        ToolError, match=r"render: unknown \['spec'\] argument\(s\); allowed: specs"
    ):
        tools.call("render", {"spec": _spec()})
    with pytest.raises(ToolError, match=r"edit: missing \['changes'\]"):
        tools.call("edit", {"image": "img-000000"})
    with pytest.raises(ToolError, match="exactly one of `image`"):
        tools.call("edit", {"image": "img-000000", "scene": _spec(), "changes": {"color": "red"}})
    with pytest.raises(ToolError, match="image: expected an id string"):
        tools.call("edit", {"image": 3, "changes": {"color": "red"}})


def test_a_render_server_and_the_local_renderer_give_the_same_bytes() -> None:
    scenes = sample_scenes(6, 1, width=40, height=40)
    local = LocalRenderer().render_many(scenes)
    with SupervisedRenderer() as server:
        tools = RenderTools(renderer=server)
        refs = tools.render(scenes)
    assert [tools.store.get(r.id).data for r in refs] == [r.data for r in local]
    assert [r.attributes for r in refs] == [r.attributes for r in local]


def test_contact_sheet_is_a_captioned_grid() -> None:
    scenes = [
        Scene(objects=(SceneObject(shape=s, color="red"),), width=32, height=32, seed=i)
        for i, s in enumerate(["circle", "ring", "heart"])
    ]
    sheet = contact_sheet(scenes, columns=2, tile=40, gap=2)
    assert sheet.size == (2 * 42 + 2, 2 * (42 + CAPTION_HEIGHT) + 2)
    assert caption(scene_attributes(scenes[1])) == "ring red solid"
    strip = np.asarray(sheet)[2 + 40 : 2 + 40 + CAPTION_HEIGHT, 2:42]
    assert (strip < 128).any()  # the caption was drawn
    with pytest.raises(ValueError, match="at least one scene"):
        contact_sheet([])
