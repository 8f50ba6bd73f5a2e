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


def test_an_agents_unit_completes_when_its_generator_is_killed_mid_request(
    ray_cluster, monkeypatch
):
    """The photo-experimenter agent's `text2image` request is in flight when the diffusion
    worker's process is killed: the pool answers it from the restarted worker and the unit ends
    with its label, the generated images measured."""
    import asyncio
    import json

    from coin_scale.agent import ExemplarImage, ExperimentTools, UnitSubject
    from coin_scale.agent.loop import AgentConfig, explain_unit
    from coin_scale.testing.agent_policies import PhotoExperimenter
    from coin_scale.testing.chat import policy_chat
    from unity_pool.tools import RenderTools

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = image_generator("diffusion", diffusion_model="tiny-random")
    assert tiny.diffusion is not None
    slow = replace(tiny.diffusion.text2image, steps=200)
    generator = replace(tiny, diffusion=replace(tiny.diffusion, text2image=slow))

    def png(colour: tuple[int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (96, 64), colour).save(buf, format="PNG")
        return buf.getvalue()

    subject = UnitSubject(model="m", layer="l", unit=3, exemplars=tuple(
        ExemplarImage(png=png((200 - 40 * i, 90, 30)), activation=4.0 - i) for i in range(4)
    ))  # fmt: skip

    class Brightness:  # the unit: mean brightness of the image
        def measure(self, images):  # noqa: ANN001, ANN201
            return [float(np.asarray(im.convert("L"), dtype=np.float32).mean()) for im in images]

    with agents_render_pool(generator, address=None) as pool, PooledGenerator(pool) as pooled:
        (pid,) = pool.pids()
        killed = threading.Event()

        class KillsItsWorker:  # the pooled generator, whose worker dies during the first call
            def generate(self, prompts, seed):  # noqa: ANN001, ANN201
                if not killed.is_set():
                    killed.set()
                    threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
                return pooled.generate(prompts, seed)

            def edit(self, image, instruction, seed):  # noqa: ANN001, ANN201
                return pooled.edit(image, instruction, seed)

        killer = KillsItsWorker()
        tools = ExperimentTools(subject, Brightness(), RenderTools(
            renderer=pool, text_to_image=killer, image_editor=killer,  # type: ignore[arg-type]
        ))  # fmt: skip
        outcome = asyncio.run(explain_unit(
            subject, tools, policy_chat(PhotoExperimenter()), config=AgentConfig(max_rounds=10),
            run_id="r", explainer="local", llm_model="scripted",
        ))  # fmt: skip
        assert killed.is_set() and pool.resubmitted >= 1 and pool.pids() != [pid]
    assert outcome.status == "ok", outcome.error
    generated = [r for r in outcome.experiments if r.tool == "text2image"]
    assert [r.status for r in generated] == ["ok"]
    finish = json.loads(next(r.arguments_json for r in outcome.experiments if r.tool == "finish"))
    assert any("dog on grass" in line or "white room" in line for line in finish["evidence"])
