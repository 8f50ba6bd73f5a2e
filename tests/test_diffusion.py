"""The diffusion backend through the real diffusers code path, with no download.

Tiny Stable Diffusion and InstructPix2Pix pipelines are built from configs with random weights
(`unity_pool.diffusion.tiny`: UNet2DConditionModel, AutoencoderKL, CLIPTextModel, a character
tokenizer), saved with `save_pretrained`, and loaded through the backend's own loader by local
path; `tiny-random` builds the same in memory. The server runs as a real subprocess on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from unity_pool import protocol
from unity_pool.attributes import scene_attributes
from unity_pool.client import RenderClient
from unity_pool.diffusion import (
    DiffusionBackend,
    DiffusionClient,
    DiffusionConfig,
    DiffusionServer,
    EditConfig,
    ModelNotAvailable,
    RequestError,
    Text2ImageConfig,
    config_from_dict,
    generation_size,
    hub_cache_dir,
    load_config,
    parse_edit,
    parse_generate,
    resolve_model,
    resolve_placement,
    scene_prompt,
)
from unity_pool.diffusion.tiny import tiny_components
from unity_pool.procedural import render
from unity_pool.procedural.backend import encode_png
from unity_pool.scene import Scene, SceneError, SceneObject

# diffusers' Euler scheduler calls np.array(tensor, copy=False) on every set_timesteps
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach the hub: offline, and an empty hub cache of its own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def _offline_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_CACHE"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home))
    return env


# --- a tiny pipeline, built from configs with random weights ------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of a tiny text-to-image and a tiny InstructPix2Pix pipeline."""
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    root = tmp_path_factory.mktemp("tiny-diffusion")
    folders = {"text2image": root / "sd", "edit": root / "pix2pix"}
    text2image: Any = StableDiffusionPipeline(**tiny_components(4))
    text2image.save_pretrained(folders["text2image"])
    edit: Any = StableDiffusionInstructPix2PixPipeline(**tiny_components(8))
    edit.save_pretrained(folders["edit"])
    return folders


def _tiny_config(models: dict[str, Path]) -> DiffusionConfig:
    return DiffusionConfig(
        text2image=Text2ImageConfig(
            model=str(models["text2image"]), steps=2, width=SIZE, height=SIZE, batch_size=2
        ),
        edit=EditConfig(model=str(models["edit"]), steps=2),
        device="cpu",
    )


@pytest.fixture(scope="module")
def backend(tiny_models: dict[str, Path]) -> DiffusionBackend:
    backend = DiffusionBackend(_tiny_config(tiny_models), cuda_available=False)
    backend.load()
    return backend


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _scene(width: int = 48, height: int = 40, seed: int = 5) -> Scene:
    obj = SceneObject(shape="star", color="red", texture="fur", size=0.5)
    return Scene(objects=(obj,), background="sky", width=width, height=height, seed=seed)


# --- config, placement, pure helpers ---------------------------------------------------------------


def test_config_file_is_the_defaults() -> None:
    assert load_config(REPO / "configs" / "diffusion.yaml") == DiffusionConfig()
    assert config_from_dict({"edit": {"model": None}}).edit.model is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"text2image": {"stepz": 2}},
            r"text2image: unknown key\(s\) stepz; expected some of model",
        ),
        ({"text2image": {"width": 500}}, r"text2image.width: expected a multiple of 8"),
        ({"edit": {"steps": 0}}, r"edit.steps: expected an integer in 1..1000; got 0"),
        ({"dtype": "float8"}, r"dtype: expected one of auto, float32"),
        ({"device": "tpu"}, r"device: expected one of auto, cpu, cuda, cuda:N; got 'tpu'"),
        ({"scene": {"template": "a {colour} thing"}}, r"unknown placeholder\(s\) colour"),
        ({"text2image": {"model": None}, "edit": {"model": None}}, r"both null"),
        ({"seed": 1}, r"config: unknown key\(s\) seed"),
    ],
)
def test_config_errors_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_from_dict(data)


def test_placement_is_auto_resolved() -> None:
    cpu = resolve_placement("auto", "auto", cuda_available=False)
    assert (cpu.device, cpu.dtype) == ("cpu", "float32")
    gpu = resolve_placement("auto", "auto", cuda_available=True)
    assert (gpu.device, gpu.dtype) == ("cuda", "float16")
    assert resolve_placement("cuda:1", "bfloat16", cuda_available=True).device == "cuda:1"
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_placement("cuda", "auto", cuda_available=False)


def test_scene_prompt_and_generation_size() -> None:
    prompt = scene_prompt(scene_attributes(_scene()), DiffusionConfig().scene)
    assert prompt.startswith("a large red furry star in the ")
    assert "on a blue sky with clouds background" in prompt
    assert generation_size(224, 224, base=(512, 512)) == (512, 512)
    assert generation_size(300, 150, base=(512, 512)) == (728, 360)
    assert generation_size(8, 2048, base=(64, 64)) == (8, 1024)


# --- loading: offline errors and the real loader ---------------------------------------------------


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    cache = hub_cache_dir()
    assert cache == tmp_path / "hf-home" / "hub"
    with pytest.raises(ModelNotAvailable) as info:
        resolve_model(
            "stabilityai/sd-turbo", key="text2image.model", allow_downloads=False, cache_dir=cache
        )
    message = str(info.value)
    assert "\n" not in message
    assert f"model 'stabilityai/sd-turbo' is not in the local Hugging Face cache {cache}" in message
    assert "`hf download stabilityai/sd-turbo`" in message
    assert "`huggingface-cli download stabilityai/sd-turbo`" in message
    assert "local pipeline folder" in message and "configs/diffusion.yaml" in message
    # downloads allowed: the hub id is handed to diffusers as it is
    assert resolve_model("org/name", key="k", allow_downloads=True, cache_dir=cache) == "org/name"
    with pytest.raises(ModelNotAvailable, match="no folder"):
        resolve_model(str(tmp_path / "nope" / "x"), key="k", allow_downloads=False, cache_dir=cache)
    with pytest.raises(ModelNotAvailable, match="no model_index.json"):
        resolve_model(str(tmp_path), key="k", allow_downloads=False, cache_dir=cache)
    with pytest.raises(ValueError, match="expected a local pipeline folder or a hub id"):
        resolve_model("not a repo!", key="k", allow_downloads=False, cache_dir=cache)


def test_backend_with_default_models_fails_offline_before_any_download() -> None:
    backend = DiffusionBackend(DiffusionConfig(), cuda_available=False)
    with pytest.raises(ModelNotAvailable, match=r"text2image.model: model 'stabilityai/sd-turbo'"):
        backend.load()
    with pytest.raises(ModelNotAvailable, match=r"edit.model: model 'timbrooks/instruct-pix2pix'"):
        backend.edit(Image.new("RGB", (SIZE, SIZE)), "make it blue", seed=0)


def test_edit_model_must_be_an_instruct_pix2pix_pipeline(tiny_models: dict[str, Path]) -> None:
    config = dataclasses.replace(
        _tiny_config(tiny_models), edit=EditConfig(model=str(tiny_models["text2image"]))
    )
    with pytest.raises(ValueError, match="UNet takes 8 input channels"):
        DiffusionBackend(config, cuda_available=False).load()


# --- the backend, in process ----------------------------------------------------------------------


def test_generate_is_deterministic_for_a_seed(backend: DiffusionBackend) -> None:
    prompts = ["a red star on a blue sky", "a green ring", "a furry square"]
    first = backend.generate(prompts, seed=3)
    again = backend.generate(prompts, seed=3)
    assert [im.size for im in first] == [(SIZE, SIZE)] * 3
    assert all(im.mode == "RGB" for im in first)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(_pixels(a), _pixels(b))
    other = backend.generate(prompts[:1], seed=4)[0]
    assert np.abs(_pixels(first[0]) - _pixels(other)).max() > 10
    assert backend.generate(["x"], seed=0, width=32, height=48)[0].size == (32, 48)
    with pytest.raises(ValueError, match="width: expected a multiple of 8"):
        backend.generate(["x"], seed=0, width=30)
    with pytest.raises(ValueError, match=r"prompts\[1\]: expected a non-empty string"):
        backend.generate(["x", ""], seed=0)


def test_edit_is_deterministic_and_keeps_the_size(backend: DiffusionBackend) -> None:
    image, _ = render(_scene(SIZE, SIZE))
    first = backend.edit(image, "make the star blue", seed=1)
    assert first.size == (SIZE, SIZE) and first.mode == "RGB"
    np.testing.assert_array_equal(
        _pixels(first), _pixels(backend.edit(image, "make the star blue", 1))
    )
    other = backend.edit(image, "make the star blue", seed=2)
    assert np.abs(_pixels(first) - _pixels(other)).max() > 10
    odd, _ = render(_scene(60, 44))
    assert backend.edit(odd, "make it green", seed=1).size == (60, 44)


def test_render_turns_a_scene_spec_into_a_png(backend: DiffusionBackend) -> None:
    scene = _scene()
    out = backend.render(scene.to_dict())
    assert (out.format, out.width, out.height) == ("png", 48, 40)
    with Image.open(io.BytesIO(out.image)) as im:
        assert im.size == (48, 40) and im.mode == "RGB"
    assert out.attributes == scene_attributes(scene)
    assert backend.render(scene.to_dict()).image == out.image
    bad = scene.to_dict()
    bad["objects"][0]["color"] = "mauve"
    with pytest.raises(SceneError):
        backend.render(bad)


# --- requests -------------------------------------------------------------------------------------


def test_requests_are_parsed_with_the_field_at_fault() -> None:
    req = parse_generate({"op": "generate", "id": 1, "prompt": "a star", "seed": 9, "width": 64})
    assert (req.prompts, req.seed, req.width, req.height, req.steps) == (
        ("a star",),
        9,
        64,
        None,
        None,
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompts": []}, "prompts"),
        ({"prompts": ["a", 3]}, "prompts[1]"),
        ({"prompts": ["a"], "width": 65}, "width"),
        ({"prompts": ["a"], "seed": -1}, "seed"),
        ({"prompts": ["a"], "guidance": 2}, "guidance"),
    ]
    for header, path in cases:
        with pytest.raises(RequestError) as info:
            parse_generate(header)
        assert info.value.path == path and info.value.error_type == protocol.BAD_REQUEST
    with pytest.raises(RequestError) as info:
        parse_generate({"prompts": ["a"] * 65})
    assert info.value.error_type == protocol.TOO_LARGE
    png = encode_png(Image.new("RGB", (16, 8)))
    edit = parse_edit({"instruction": "make it red", "seed": 2}, [png])
    assert edit.image.size == (16, 8) and edit.instruction == "make it red" and edit.seed == 2
    with pytest.raises(RequestError, match="exactly one blob"):
        parse_edit({"instruction": "x"}, [])
    with pytest.raises(RequestError, match="not a readable image"):
        parse_edit({"instruction": "x"}, [b"not a png"])
    with pytest.raises(RequestError, match="instruction: expected a non-empty string"):
        parse_edit({}, [png])


def test_server_refuses_ops_whose_model_is_off(tiny_models: dict[str, Path]) -> None:
    config = dataclasses.replace(_tiny_config(tiny_models), edit=EditConfig(model=None))
    server = DiffusionServer(DiffusionBackend(config, cuda_available=False), port=0)
    try:
        ping, _ = server.handle_request_frame(protocol.Frame(header={"op": "ping", "id": 1}))
        assert ping["ok"] and ping["ops"] == ["ping", "render", "generate"]
        assert ping["models"] == {"text2image": str(tiny_models["text2image"]), "edit": None}
        png = encode_png(Image.new("RGB", (16, 16)))
        frame = protocol.Frame(header={"op": "edit", "id": 2, "instruction": "x"}, blobs=(png,))
        answer, blobs = server.handle_request_frame(frame)
        assert not answer["ok"] and answer["id"] == 2 and blobs == []
        assert answer["error"]["type"] == protocol.BAD_REQUEST
        assert "edit.model is null" in answer["error"]["message"]
    finally:
        server.server_close()


# --- the server process ---------------------------------------------------------------------------


def _start(args: list[str], home: Path, log_path: Path) -> tuple[subprocess.Popen[str], str]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unity_pool.diffusion", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=_offline_env(home),
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    return proc, proc.stdout.readline() if ready else ""


@pytest.fixture(scope="module")
def server_port(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    root = tmp_path_factory.mktemp("diffusion-server")
    config = root / "diffusion.yaml"
    config.write_text(
        f"device: cpu\n"
        f"text2image: {{model: '{tiny_models['text2image']}', steps: 2, width: {SIZE}, height: {SIZE}, batch_size: 2}}\n"
        f"edit: {{model: '{tiny_models['edit']}', steps: 2}}\n"
    )
    proc, line = _start(["--port", "0", "--config", str(config)], root / "hf-home", root / "log")
    try:
        assert line.startswith("READY "), (
            f"server did not start: {line!r} {(root / 'log').read_text()}"
        )
        yield int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def test_server_generates_edits_and_renders(server_port: int, backend: DiffusionBackend) -> None:
    with DiffusionClient("127.0.0.1", server_port, timeout=60) as client:
        info = client.ping()
        assert info["backend"] == "diffusion" and info["protocol"] == 1
        assert info["ops"] == ["ping", "render", "generate", "edit"]
        assert (info["device"], info["dtype"]) == ("cpu", "float32")
        prompts = ["a red star", "a blue ring"]
        images = client.generate(prompts, seed=7)
        assert [im.size for im in images] == [(SIZE, SIZE)] * 2
        for a, b in zip(images, client.generate(prompts, seed=7), strict=True):
            np.testing.assert_array_equal(_pixels(a), _pixels(b))
        # the same pipeline in this process samples the same images (up to float rounding)
        local = backend.generate(prompts, seed=7)
        assert (
            max(np.abs(_pixels(a) - _pixels(b)).max() for a, b in zip(images, local, strict=True))
            <= 2
        )
        edited = client.edit(images[0], "make it green", seed=1)
        assert edited.size == (SIZE, SIZE)
        with pytest.raises(ValueError, match=r"field width\): width: expected a multiple of 8"):
            client.generate(["x"], seed=0, width=33)
        raw = client.request({"op": "edit", "instruction": "x"})  # no image blob
        assert raw.header["error"]["type"] == protocol.BAD_REQUEST
        raw = client.request({"op": "paint"})
        assert "expected one of: ping, render, generate, edit" in raw.header["error"]["message"]
        assert client.generate(["still serving"], seed=0)[0].size == (SIZE, SIZE)
    with RenderClient("127.0.0.1", server_port, timeout=60) as plain:
        result = plain.render(_scene())
        assert (result.width, result.height) == (48, 40)
        assert result.attributes == scene_attributes(_scene())
        assert result.image().size == (48, 40)


def test_server_exits_with_one_line_when_a_model_is_not_cached(tmp_path: Path) -> None:
    start = time.monotonic()
    proc, line = _start(["--port", "0"], tmp_path / "empty-home", tmp_path / "log")
    assert proc.wait(timeout=120) == 4, line
    errors = [ln for ln in (tmp_path / "log").read_text().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, errors
    assert (
        "text2image.model: model 'stabilityai/sd-turbo' is not in the local Hugging Face cache"
        in errors[0]
    )
    assert str(tmp_path / "empty-home" / "hub") in errors[0]
    assert time.monotonic() - start < 120


# --- several callers' prompts in one call; tiny-random; the pool's config on the command line ------


def test_per_prompt_seeds_give_each_prompt_the_image_it_gets_alone(backend: DiffusionBackend) -> None:
    """A batch of several agents' prompts keeps each prompt's own seed, so an image does not
    depend on what else was generated with it."""
    alone = [backend.generate(["a red star"], seed=3)[0], backend.generate(["a ring"], seed=11)[0]]
    together = backend.generate(["a red star", "a ring"], seed=0, seeds=[3, 11])
    for a, b in zip(alone, together, strict=True):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 2
    with pytest.raises(ValueError, match="seeds: expected one per prompt"):
        backend.generate(["x", "y"], seed=0, seeds=[1])
    req = parse_generate({"prompts": ["a", "b"], "seeds": [4, 9]})
    assert req.seeds == (4, 9)
    for header, match in (
        ({"prompts": ["a"], "seeds": [1, 2]}, "one integer per prompt"),
        ({"prompts": ["a"], "seeds": [1], "seed": 0}, "not both"),
        ({"prompts": ["a"], "seeds": [-1]}, r"seeds\[0\]"),
    ):
        with pytest.raises(RequestError, match=match) as info:
            parse_generate(header)
        assert info.value.path == "seeds"


def test_tiny_random_needs_no_folder_and_is_the_same_in_every_process() -> None:
    config = DiffusionConfig(
        text2image=Text2ImageConfig(model="tiny-random", steps=2, width=SIZE, height=SIZE),
        edit=EditConfig(model="tiny-random", steps=2),
        device="cpu",
    )
    first, second = (DiffusionBackend(config, cuda_available=False) for _ in range(2))
    a, b = (be.generate(["a cat"], seed=1)[0] for be in (first, second))
    np.testing.assert_array_equal(_pixels(a), _pixels(b))
    assert first.edit(a, "make it blue", seed=0).size == (SIZE, SIZE)


def test_the_server_takes_its_config_as_json_and_refuses_bad_json(tmp_path: Path) -> None:
    config = {"device": "cpu", "text2image": {"model": "tiny-random", "steps": 1, "width": 32,
              "height": 32}, "edit": {"model": None}}  # fmt: skip
    proc, line = _start(
        ["--port", "0", "--config-json", json.dumps(config)], tmp_path / "home", tmp_path / "log"
    )
    try:
        assert line.startswith("READY "), (tmp_path / "log").read_text()
        with DiffusionClient("127.0.0.1", int(line.split()[1]), timeout=60) as client:
            assert client.ping()["ops"] == ["ping", "render", "generate"]
            assert [im.size for im in client.generate(["a", "b"], 0, seeds=[5, 6])] == [(32, 32)] * 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    for bad, match in (("[1]", "expected a JSON object"), ("{nope", "not JSON")):
        proc, _ = _start(["--port", "0", "--config-json", bad], tmp_path / "home", tmp_path / "log2")
        assert proc.wait(timeout=60) == 2
        assert match in (tmp_path / "log2").read_text()


def test_an_unreadable_image_from_a_server_is_a_render_failure() -> None:
    """A server that answers with bytes that are not an image: the client raises RenderFailed
    (which the agent's tools report to the model as an error it can read), not a decode error."""
    import socket
    import threading

    from unity_pool.client import RenderFailed

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while (frame := protocol.read_frame(conn)) is not None:
                n = len(frame.header.get("prompts", [])) or 1
                header = {"protocol": protocol.PROTOCOL_VERSION, "ok": True,
                          "id": frame.header.get("id"),
                          "results": [{"ok": True, "blob": i} for i in range(n)]}  # fmt: skip
                protocol.write_frame(conn, header, [b"\x89PNG garbage"] * n)

    threading.Thread(target=serve, daemon=True).start()
    with (
        DiffusionClient("127.0.0.1", port, timeout=10) as client,
        pytest.raises(RenderFailed, match="unreadable image"),
    ):
        client.generate(["a"], seed=0)
    listener.close()
