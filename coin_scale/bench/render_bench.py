"""Render throughput: in process (no PNG), through one server (PNG + TCP), through a RenderPool.

All three render the same `sample_scenes(n, seed)` at `size` x `size`; each is measured
`repeats` times after a warm-up and the median is reported. Start-up (spawning servers, Ray
actors) is timed apart. The issue's target is `TARGET_IMG_S_PER_WORKER` per worker at 224x224.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unity_pool.launcher import SupervisedRenderer
from unity_pool.procedural.backend import encode_png
from unity_pool.procedural.draw import render, render_array
from unity_pool.sampling import sample_scenes
from unity_pool.scene import Scene

log = logging.getLogger(__name__)

TARGET_IMG_S_PER_WORKER = 200.0
"""Images per second one render worker should sustain at 224x224 (issue 3)."""


@dataclass(frozen=True, kw_only=True)
class RenderBenchConfig:
    """What `coin-scale bench render` measures."""

    workers: int = 2
    """RenderPool workers (each owns one server process)."""
    n: int = 256
    """Scenes rendered per measurement."""
    size: int = 224
    """Image width and height, pixels."""
    batch_size: int = 16
    """Scenes per request, for the server and the pool."""
    repeats: int = 3
    """Measurements per path; the median is reported."""
    seed: int = 0
    """Scene sampler seed."""
    address: str | None = None
    """Ray address; None starts a local Ray."""

    def __post_init__(self) -> None:
        for name in ("workers", "n", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1; got {getattr(self, name)}.")
        if not 8 <= self.size <= 2048:
            raise ValueError(f"size: expected 8..2048 pixels; got {self.size}.")


def _img_s(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, list[float]]:
    """Median images/s of `fn` (which renders n images) over `repeats` timed runs."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - start))
    return statistics.median(runs), runs


def _batches(scenes: list[Scene], size: int) -> list[list[Scene]]:
    return [scenes[i : i + size] for i in range(0, len(scenes), size)]


def run_render_bench(config: RenderBenchConfig) -> dict[str, Any]:
    """Median images/s of each path, per worker where it applies, and the start-up times."""
    from coin_scale.actors.cluster import connect
    from coin_scale.actors.render_pool import RenderPool, RenderPoolConfig

    scenes = sample_scenes(config.n, config.seed, width=config.size, height=config.size)
    render_array(scenes[0])  # warm-up: imports, schema
    bare, bare_runs = _img_s(lambda: [render_array(s) for s in scenes], config.n, config.repeats)
    png, png_runs = _img_s(
        lambda: [encode_png(render(s)[0]) for s in scenes], config.n, config.repeats
    )
    log.info("in process: %.1f img/s, with PNG %.1f img/s", bare, png)

    start = time.perf_counter()
    with SupervisedRenderer() as server:
        server_startup = time.perf_counter() - start
        batches = _batches(scenes, config.batch_size)
        server.render_many(batches[0])
        served, served_runs = _img_s(
            lambda: [server.render_many(b) for b in batches], config.n, config.repeats
        )
    log.info("one server: %.1f img/s", served)

    session = connect(config.address)
    try:
        start = time.perf_counter()
        pool_config = RenderPoolConfig(workers=config.workers, batch_size=config.batch_size)
        with RenderPool(pool_config) as pool:
            pool.wait_ready()
            pool_startup = time.perf_counter() - start
            pool.render_outcomes(scenes[: config.workers * config.batch_size])
            pooled, pooled_runs = _img_s(
                lambda: pool.render_outcomes(scenes), config.n, config.repeats
            )
    finally:
        session.close()
    log.info("pool of %d: %.1f img/s", config.workers, pooled)

    def r(values: list[float]) -> list[float]:
        return [round(v, 1) for v in values]

    return {
        "benchmark": "render",
        "backend": "procedural",
        "size": config.size,
        "n": config.n,
        "batch_size": config.batch_size,
        "workers": config.workers,
        "repeats": config.repeats,
        "cpu_count": os.cpu_count(),
        "in_process_img_s": round(bare, 1),
        "in_process_png_img_s": round(png, 1),
        "server_img_s": round(served, 1),
        "pool_img_s": round(pooled, 1),
        "pool_img_s_per_worker": round(pooled / config.workers, 1),
        "target_img_s_per_worker": TARGET_IMG_S_PER_WORKER,
        "server_startup_s": round(server_startup, 2),
        "pool_startup_s": round(pool_startup, 2),
        "runs": {
            "in_process": r(bare_runs),
            "in_process_png": r(png_runs),
            "server": r(served_runs),
            "pool": r(pooled_runs),
        },
    }
