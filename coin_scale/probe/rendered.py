"""Rendered probe sets: scenes with ground-truth attributes, rendered once and cached."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from coin_scale.accounting import RENDERS
from coin_scale.cache import cache_root

log = logging.getLogger(__name__)

OpenRenderer = Callable[[], AbstractContextManager[Any]]
"""Opens a renderer with `render_many(scenes)` (a render pool) for the length of a `with`."""

PROBE_SIZE = 64
"""Side of the rendered probe images of `eval synthetic` and `eval mis`, pixels: the probe
model's and the attribute net's input size."""


def rendered_probe(
    n: int,
    size: int,
    *,
    progress: bool,
    single_object: bool = False,
    seed: int = 0,
    root_dir: Path | None = None,
    open_renderer: OpenRenderer | None = None,
) -> str:
    """A rendered probe set with ground-truth attributes, rendered once and cached under
    `root_dir/probes` (default: the coin-scale cache); `seed` picks the scenes. When it is not
    cached, `open_renderer()` (a driver's render pool: `runtime.pools.render_opener`) renders it,
    else this process does; the images are the same bytes either way with the procedural
    renderer. An opener with another `backend` (Unity, diffusion: its name and a digest of its
    settings) renders a set of its own, cached under a name that ends with it.

    `single_object` draws one large object per image and no distractors, like the scenes the
    probe CNN was trained on: every image's attributes then describe everything in it, and
    object size (a nuisance that model never saw vary) does not dominate the units' masks."""
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    probes = (root_dir or cache_root()) / "probes"
    name = f"single-large-n{n}-seed{seed}-{size}" if single_object else f"rendered-n{n}-seed{seed}-{size}"
    backend = getattr(open_renderer, "backend", "procedural")
    if backend != "procedural":  # another renderer's images are another set
        name += f"-{backend}"
    root = probes / name
    if not (root / "attributes.parquet").is_file():
        log.info("rendering a %d-image probe set at %dpx into %s (once)", n, size, root)
        fixed = (("n_objects", 1), ("size", "large")) if single_object else ()
        params = ProbeSetParams(n=n, seed=seed, size=size, fixed=fixed)
        if open_renderer is None:
            write_probe_set(root, params, progress=progress)
            RENDERS.count("driver", n)  # in this process
        else:
            with open_renderer() as renderer:  # the pool counts what its workers return
                write_probe_set(root, params, progress=progress, renderer=renderer)
    return str(root)
