"""Where the LLM agents' images are made: the render pool of the chosen image generator, and
each agent's `RenderTools` on it.

`agent_image_tools(generator, address=...)` opens the agents' render pool (procedural, Unity or
diffusion workers: `runtime.pools.generator_pool_config`) and yields a maker of `RenderTools`:
renders and scene edits on the pool's workers (procedural ones through one cache the agents
share, `unity_pool.render_cache`) and, with a diffusion generator, `text2image` and
edits of any image by instruction through one `PooledGenerator`, which gathers the text-to-image
requests of agents running at once into shared pipeline calls on those same workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from coin_scale.agent.generation import ImageGenerator, PooledGenerator
from coin_scale.runtime.pools import agents_render_pool
from unity_pool.render_cache import CachedRenderer
from unity_pool.tools import RenderTools

log = logging.getLogger(__name__)

RenderToolsMaker = Callable[[], RenderTools]
"""A fresh `RenderTools` (its own image store) for one agent."""


@contextmanager
def agent_image_tools(
    generator: ImageGenerator, *, address: str | None
) -> Iterator[RenderToolsMaker]:
    """The agents' render pool for `generator`, ready, and a maker of each agent's tools on it;
    the pool is shut down on exit."""
    with agents_render_pool(generator, address=address) as pool:
        if generator.diffusion is None and generator.unity is None:
            # The procedural renderer draws a spec the same way every time: the agents share
            # one cache of its scenes (they render many of the same ones).
            cache = CachedRenderer(pool)
            yield lambda: RenderTools(renderer=cache)
            log.info("agents' renders: %d scenes, %d from the cache", cache.hits + cache.misses, cache.hits)
            return
        if generator.diffusion is None:
            yield lambda: RenderTools(renderer=pool)
            return
        with PooledGenerator(pool) as pooled:
            text_to_image = pooled if generator.generates else None
            editor = pooled if generator.edits_images else None
            yield lambda: RenderTools(
                renderer=pool, text_to_image=text_to_image, image_editor=editor
            )
            log.info(
                "image generator %s: %d images in %d pipeline calls, %d edits",
                generator.describe(), pooled.generated, pooled.calls, pooled.edits,
            )  # fmt: skip
