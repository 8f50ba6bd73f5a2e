"""The diffusion backend: text-to-image and instruction-based edits with diffusers pipelines.

In process: `DiffusionBackend(load_config(path))` with `generate(prompts, seed)`,
`edit(image, instruction, seed)` and `render(spec)`. Over TCP: `python -m unity_pool.diffusion
--port P` (a `DiffusionServer`) and `DiffusionClient`. torch and diffusers are imported when a
backend is built, not when this package is imported. See docs/diffusion.md.
"""

from unity_pool.diffusion.backend import DiffusionBackend, generation_size, scene_prompt
from unity_pool.diffusion.client import DiffusionClient
from unity_pool.diffusion.config import (
    DiffusionConfig,
    EditConfig,
    ScenePromptConfig,
    Text2ImageConfig,
    config_from_dict,
    load_config,
)
from unity_pool.diffusion.loading import (
    ModelNotAvailable,
    Placement,
    hub_cache_dir,
    load_pipeline,
    resolve_model,
    resolve_placement,
)
from unity_pool.diffusion.server import DiffusionServer, RequestError, parse_edit, parse_generate

__all__ = [
    "DiffusionBackend",
    "DiffusionClient",
    "DiffusionConfig",
    "DiffusionServer",
    "EditConfig",
    "ModelNotAvailable",
    "Placement",
    "RequestError",
    "ScenePromptConfig",
    "Text2ImageConfig",
    "config_from_dict",
    "generation_size",
    "hub_cache_dir",
    "load_config",
    "load_pipeline",
    "parse_edit",
    "parse_generate",
    "resolve_model",
    "resolve_placement",
    "scene_prompt",
]
