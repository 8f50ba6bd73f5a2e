"""The agents' image generator without Ray: settings checked before any work, several agents'
text-to-image requests gathered into one pipeline call with each prompt's own seed, and an
unreadable image reported as a render failure."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

import pytest
from PIL import Image

from coin_scale.agent.generation import ImageGenerator, PooledGenerator, image_generator
from coin_scale.errors import ResourceError, UserError
from unity_pool.client import RenderFailed


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value % 256, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeBackend:
    """Encodes each prompt's seed in its image's red channel; records every call."""

    def __init__(self, garbage: bool = False) -> None:
        self.calls: list[tuple[list[str], list[int]]] = []
        self.garbage = garbage
        self.lock = threading.Lock()

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[bytes]:
        with self.lock:
            self.calls.append((list(prompts), list(seeds)))
        return [b"not a png" if self.garbage else _png(s) for s in seeds]

    def edit(self, image: bytes, instruction: str, seed: int) -> bytes:
        return b"not a png" if self.garbage else _png(seed + len(instruction))


def test_agents_generating_at_once_share_pipeline_calls_and_keep_their_seeds() -> None:
    backend = FakeBackend()
    results: dict[int, list[Image.Image]] = {}
    with PooledGenerator(backend, max_prompts=8, window_s=0.2) as pooled:

        def agent(i: int) -> None:
            results[i] = pooled.generate([f"agent {i} prompt {j}" for j in range(2)], seed=10 * i)

        threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pooled.generated == 16 and pooled.calls == len(backend.calls) <= 4
    for i, images in results.items():  # prompt j of agent i was sampled with seed 10 i + j
        assert [im.getpixel((0, 0))[0] for im in images] == [10 * i, 10 * i + 1]
    assert all(len(prompts) <= 8 for prompts, _ in backend.calls)


def test_an_unreadable_image_is_a_render_failure_the_agent_can_read() -> None:
    with PooledGenerator(FakeBackend(garbage=True), window_s=0.0) as pooled:
        with pytest.raises(RenderFailed, match="unreadable image"):
            pooled.generate(["a"], seed=0)
        with pytest.raises(RenderFailed, match="unreadable edit"):
            pooled.edit(Image.new("RGB", (8, 8)), "x", seed=0)
    with PooledGenerator(FakeBackend(), window_s=0.0) as pooled:
        assert pooled.edit(Image.new("RGB", (8, 8)), "abc", seed=4).getpixel((0, 0))[0] == 7
        assert pooled.edits == 1


def test_settings_are_checked_before_any_work(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert image_generator() == ImageGenerator() and image_generator().command() is None
    tiny = image_generator("diffusion", diffusion_model="tiny-random")
    assert tiny.generates and tiny.edits_images and tiny.diffusion is not None
    assert tiny.diffusion.text2image.model == tiny.diffusion.edit.model == "tiny-random"
    command = tiny.command()
    assert command is not None and command[:3] == ("python", "-m", "unity_pool.diffusion")
    no_edit = image_generator("diffusion", diffusion_model="tiny-random", edit_model="none")
    assert no_edit.generates and not no_edit.edits_images
    folder = tmp_path / "sd"
    folder.mkdir()
    cases = [
        (dict(kind="dall-e"), UserError, "unknown generator 'dall-e'"),
        (dict(kind="procedural", diffusion_model="tiny-random"), UserError, "only apply with"),
        (dict(kind="diffusion"), ResourceError, "stabilityai/sd-turbo' is not in the local"),
        (dict(kind="diffusion", diffusion_model=str(folder), edit_model="none"), ResourceError,
         "not a diffusers pipeline"),
        (dict(kind="diffusion", diffusion_config=str(tmp_path / "nope.yaml")), ResourceError,
         "does not exist"),
        (dict(kind="unity", unity_config=str(tmp_path / "nope.yaml")), ResourceError,
         "no Unity player config"),
    ]  # fmt: skip
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            image_generator(**kwargs)  # type: ignore[arg-type]
