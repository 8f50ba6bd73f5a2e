"""The agents' image generator on the render pool: diffusion servers (the testing-size
`tiny-random` pipelines) as render workers on Ray. Several agents' prompts share pipeline calls
and get the images they would get alone; a worker killed in the middle of a generation request
is replaced and the request answered by a live one with the same images."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from coin_scale.agent.generation import PooledGenerator, image_generator
from coin_scale.runtime.pools import agents_render_pool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_generation_and_edits_on_diffusion_workers_survive_a_killed_worker(
    ray_cluster, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = image_generator("diffusion", diffusion_model="tiny-random")
    assert tiny.diffusion is not None
    # many steps, so that a request is still running when its worker is killed
    slow = replace(tiny.diffusion.text2image, steps=200)
    generator = replace(tiny, diffusion=replace(tiny.diffusion, text2image=slow))
    with agents_render_pool(generator, address=None) as pool:
        assert len(pool.workers) == 1  # no GPU: one diffusion worker on the CPU
        prompts, seeds = ["a dog on grass", "an empty room"], [3, 8]
        undisturbed = pool.generate(prompts, seeds)
        assert [_pixels(d).shape for d in undisturbed] == [(64, 64, 3)] * 2

        # Two agents at once: their prompts go out in one pipeline call, each with its seed.
        with PooledGenerator(pool, window_s=0.5) as pooled:
            got: dict[int, list[Image.Image]] = {}
            agents = [
                threading.Thread(target=lambda i=i: got.__setitem__(i, pooled.generate(
                    [prompts[i]], seed=seeds[i]))) for i in range(2)
            ]  # fmt: skip
            for a in agents:
                a.start()
            for a in agents:
                a.join()
            assert pooled.calls == 1 and pooled.generated == 2
            edited = pooled.edit(got[0][0], "make the dog a cat", seed=1)
            assert edited.size == (64, 64)
        for i in range(2):
            together = np.asarray(got[i][0], dtype=np.int16)
            assert np.abs(together - _pixels(undisturbed[i])).max() <= 2

        # The worker's actor process is SIGKILLed while it generates: Ray restarts it, the
        # request is sent again and answered with the same images.
        (pid,) = pool.pids()
        result: list[list[bytes]] = []
        request = threading.Thread(target=lambda: result.append(pool.generate(prompts, seeds)))
        request.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        request.join(timeout=600)
        assert result, "the request was not answered after its worker was killed"
        assert pool.resubmitted >= 1 and pool.pids() != [pid]
        for a, b in zip(result[0], undisturbed, strict=True):
            assert np.abs(_pixels(a) - _pixels(b)).max() <= 2
