"""Procedural drawing: determinism, anti-aliasing, every vocabulary value, lighting, masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from unity_pool import vocab
from unity_pool.procedural import object_mask, render, render_array
from unity_pool.procedural.backend import ProceduralBackend
from unity_pool.procedural.draw import color_temperature_rgb
from unity_pool.scene import Camera, Lighting, Scene, SceneObject

NEUTRAL = Lighting(intensity=1.0, directional=0.0, temperature=6500.0)
"""Lighting that leaves colours exactly as painted."""


def _one(shape: str = "circle", color: str = "red", texture: str = "solid", **kw) -> Scene:
    obj = SceneObject(shape=shape, color=color, texture=texture, size=kw.pop("size", 0.5))
    return Scene(objects=(obj,), lighting=kw.pop("lighting", NEUTRAL), width=64, height=64, **kw)


def _busy(seed: int = 7) -> Scene:
    return Scene(
        objects=(
            SceneObject(shape="star", color="yellow", texture="fur", size=0.45, x=0.4, y=0.55),
            SceneObject(shape="heart", color="blue", texture="dots", size=0.2, x=0.8, y=0.2),
            SceneObject(shape="cross", color="green", texture="checker", size=0.2, x=0.15, y=0.15),
        ),
        background="noise",
        lighting=Lighting(intensity=1.2, direction=30.0, directional=0.5, temperature=5000.0),
        width=80,
        height=72,
        seed=seed,
    )


def test_render_returns_rgb_image_and_attributes() -> None:
    image, attributes = render(_busy())
    assert image.mode == "RGB" and image.size == (80, 72)
    assert attributes["shape"] == "star" and attributes["n_objects"] == 3
    assert attributes["texture"] == "fur" and attributes["background"] == "noise"


def test_deterministic_for_a_spec_and_seed() -> None:
    scene = _busy()
    first = render_array(scene)
    assert np.array_equal(first, render_array(scene))
    assert np.array_equal(first, render_array(Scene.from_json(scene.to_json())))
    assert not np.array_equal(first, render_array(_busy(seed=8)))


def test_no_global_random_state_is_used() -> None:
    scene = _busy()
    np.random.seed(1)
    a = render_array(scene)
    np.random.seed(2)
    state = np.random.get_state()[1].copy()
    b = render_array(scene)
    assert np.array_equal(a, b)
    assert np.array_equal(state, np.random.get_state()[1])


@pytest.mark.parametrize("shape", ["circle", "square", "star"])
def test_edges_are_anti_aliased(shape: str) -> None:
    scene = Scene(
        objects=(SceneObject(shape=shape, color="red", size=0.6, rotation=17.0),),
        lighting=NEUTRAL,
        width=96,
        height=96,
    )
    pixels = render_array(scene).astype(int)
    # background is 128 grey, red is (220, 38, 38): green strictly between means partial coverage
    green = pixels[..., 1]
    assert set(np.unique(green[[0, -1], :])) == {128}
    partial = (green > 38 + 2) & (green < 128 - 2)
    perimeter = 0.6 * 96 * np.pi / 2  # a rough lower bound, in pixels, for these shapes
    assert partial.sum() > 0.5 * perimeter
    assert len(np.unique(green[partial])) >= 8  # many coverage levels, not a 1-level blur


@pytest.mark.parametrize("shape", vocab.SHAPES)
def test_every_shape_renders_inside_its_bounding_circle(shape: str) -> None:
    scene = _one(shape=shape, size=0.8)
    mask = object_mask(scene)
    area = mask.sum()
    circle = np.pi * (0.4 * 64) ** 2
    assert 0.15 * circle < area < 1.02 * circle
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    outside = np.hypot(xx - 32, yy - 32) > 0.4 * 64 + 1.5
    assert mask[outside].max() == 0
    pixels = render_array(scene)
    assert (pixels != 128).any(axis=-1).sum() >= 0.9 * area


def test_shapes_differ_from_each_other() -> None:
    masks = {s: object_mask(_one(shape=s, size=0.8)) for s in vocab.SHAPES}
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(masks[a] - masks[b]).sum() > 20, (a, b)


@pytest.mark.parametrize("color", vocab.COLORS)
def test_every_color_paints_its_rgb(color: str) -> None:
    pixels = render_array(_one(color=color))
    assert tuple(int(v) for v in pixels[32, 32]) == vocab.COLOR_RGB[color]


@pytest.mark.parametrize("texture", vocab.TEXTURES)
def test_every_texture_renders_inside_the_mask_only(texture: str) -> None:
    scene = _one(shape="square", texture=texture, size=0.9)
    pixels = render_array(scene).astype(int)
    mask = object_mask(scene)
    inside = pixels[mask == 1.0]
    spread = inside.std(axis=0).max()
    assert spread == 0 if texture == "solid" else spread > 10
    plain = render_array(_one(shape="square", texture="solid", size=0.9))
    assert np.array_equal(pixels[mask == 0], plain[mask == 0])


def test_textures_differ_from_each_other() -> None:
    images = {t: render_array(_one(shape="square", texture=t, size=0.9)) for t in vocab.TEXTURES}
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(images[a], images[b]), (a, b)


@pytest.mark.parametrize("background", vocab.BACKGROUNDS)
def test_every_background_renders_behind_the_object(background: str) -> None:
    scene = _one(background=background, seed=3)
    pixels = render_array(scene)
    assert tuple(int(v) for v in pixels[32, 32]) == vocab.COLOR_RGB["red"]
    corner = pixels[:8, :8].reshape(-1, 3)
    assert corner.min() > 20 and corner.max() < 255


def test_backgrounds_differ_from_each_other() -> None:
    images = [render_array(_one(background=b, seed=3)) for b in vocab.BACKGROUNDS]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i].astype(int) - images[j]).mean() > 5


def test_lighting_intensity_temperature_and_direction() -> None:
    base = _one(color="white")
    mean = {
        name: render_array(dataclasses.replace(base, lighting=light)).reshape(-1, 3).mean(axis=0)
        for name, light in {
            "dim": Lighting(intensity=0.5, directional=0.0),
            "normal": NEUTRAL,
            "warm": Lighting(temperature=3000.0, directional=0.0),
            "cool": Lighting(temperature=10000.0, directional=0.0),
        }.items()
    }
    assert (mean["dim"] < 0.6 * mean["normal"]).all()
    assert mean["warm"][0] > mean["warm"][2] and mean["cool"][2] > mean["cool"][0]
    assert color_temperature_rgb(6500.0) == (1.0, 1.0, 1.0)
    from_left = render_array(
        dataclasses.replace(base, lighting=Lighting(direction=180.0, directional=1.0))
    ).astype(int)
    assert from_left[:, :8].mean() > from_left[:, -8:].mean() + 20


def test_main_object_is_drawn_on_top() -> None:
    main = SceneObject(shape="circle", color="red", size=0.5)
    under = SceneObject(shape="square", color="blue", size=0.9)
    pixels = render_array(Scene(objects=(main, under), lighting=NEUTRAL, width=64, height=64))
    assert tuple(int(v) for v in pixels[32, 32]) == vocab.COLOR_RGB["red"]
    assert tuple(int(v) for v in pixels[32, 14]) == vocab.COLOR_RGB["blue"]


def test_objects_out_of_frame_are_skipped() -> None:
    scene = Scene(
        objects=(
            SceneObject(shape="circle", color="red", size=0.1, x=0.5, y=0.5),
            SceneObject(shape="circle", color="blue", size=0.1, x=0.9, y=0.9),
        ),
        camera=Camera(zoom=4.0, offset_x=0.5, offset_y=0.5),
        lighting=NEUTRAL,
        width=32,
        height=32,
    )
    assert object_mask(scene, 0).sum() == 0  # pushed out of frame by the camera
    assert object_mask(scene, 1).sum() > 0
    assert (render_array(scene) == render_array(scene)).all()


def test_backend_encodes_png_with_attributes() -> None:
    out = ProceduralBackend().render(_busy().to_dict())
    assert out.image.startswith(b"\x89PNG\r\n\x1a\n")
    assert (out.width, out.height, out.format) == (80, 72, "png")
    assert out.attributes["n_objects"] == 3
