"""The diffusion backend: text-to-image, instruction-based edits, and scene specs as prompts.

`DiffusionBackend(config)` holds up to two diffusers pipelines (loaded on first use, or all at
once by `load()`), and is a `unity_pool.server.Backend` (`render(spec)` turns the scene's
attributes into a prompt) as well as a text-to-image tool (`generate(prompts, seed)`) and an
editor (`edit(image, instruction, seed)`).

Determinism: prompt `i` of a call is sampled from a CPU `torch.Generator` seeded `seed + i`, so
its starting noise does not depend on the device or on the other prompts; on one machine with
one config the same call gives the same pixels. GPU kernels may differ from one GPU model or
driver to another, and a prompt batched with others may differ from the same prompt alone by a
rounding step; nothing is bit-exact across machines.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from unity_pool.attributes import scene_attributes
from unity_pool.diffusion.config import (
    MAX_SEED,
    MAX_SIDE,
    SIZE_MULTIPLE,
    DiffusionConfig,
    ScenePromptConfig,
    check_int,
    check_number,
    check_side,
)
from unity_pool.diffusion.loading import Placement, hub_cache_dir, load_pipeline, resolve_placement
from unity_pool.procedural.backend import encode_png
from unity_pool.scene import Scene
from unity_pool.server import Rendered

log = logging.getLogger(__name__)


def scene_prompt(attributes: Mapping[str, Any], config: ScenePromptConfig) -> str:
    """The prompt for a scene's attributes: `config.template` filled with each attribute's
    phrase (`config.phrases`) or, without one, its value."""
    words = {
        name: config.phrases.get(name, {}).get(str(value), str(value))
        for name, value in attributes.items()
    }
    return config.template.format(**words)


def generation_size(width: int, height: int, *, base: tuple[int, int]) -> tuple[int, int]:
    """Size to sample a `width` x `height` image at: the aspect ratio of the request with about
    the pixel count of `base` (the model's native size), each side a multiple of 8."""
    scale = math.sqrt(base[0] * base[1] / (width * height))

    def side(n: int) -> int:
        snapped = round(n * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE
        return min(MAX_SIDE, max(SIZE_MULTIPLE, snapped))

    return side(width), side(height)


def _check_seed(seed: Any) -> int:
    return check_int("seed", seed, 0, MAX_SEED)


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: expected a non-empty string; got {value!r}")
    return value


class DiffusionBackend:
    """Text-to-image and instruction editing with diffusers, behind the render `Backend`
    protocol. Thread-safe: calls into the pipelines are serialised by a lock."""

    name = "diffusion"

    def __init__(self, config: DiffusionConfig, *, cuda_available: bool | None = None) -> None:
        """`cuda_available`: None asks torch (importing it); tests pass a value."""
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        self.config = config
        self.placement: Placement = resolve_placement(
            config.device, config.dtype, cuda_available=cuda_available
        )
        self._pipes: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def ops(self) -> tuple[str, ...]:
        """What this backend can do with its config: some of "render", "generate", "edit"."""
        text = ("render", "generate") if self.config.text2image.model is not None else ()
        edit = ("edit",) if self.config.edit.model is not None else ()
        return (*text, *edit)

    def models(self) -> dict[str, str | None]:
        """The configured model of each pipeline kind (None where disabled)."""
        return {"text2image": self.config.text2image.model, "edit": self.config.edit.model}

    def load(self) -> None:
        """Load every configured pipeline now (a server does this before listening). Raises
        `ModelNotAvailable` with one line saying what is missing and how to get it."""
        for kind, model in self.models().items():
            if model is not None:
                self._pipe(kind)

    def _pipe(self, kind: str) -> Any:
        with self._lock:
            if kind not in self._pipes:
                section = getattr(self.config, kind)
                if section.model is None:
                    raise ValueError(
                        f"this backend has no {kind} pipeline ({kind}.model is null). Fix: set "
                        f"{kind}.model in configs/diffusion.yaml to a hub id or a local folder."
                    )
                self._pipes[kind] = load_pipeline(
                    kind,
                    section.model,
                    placement=self.placement,
                    allow_downloads=self.config.allow_downloads,
                    cache_dir=hub_cache_dir(self.config.cache_dir),
                    variant=section.variant,
                )
            return self._pipes[kind]

    def generate(
        self,
        prompts: Sequence[str],
        seed: int,
        *,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Image.Image]:
        """One RGB image per prompt, in order; prompt `i` is sampled with seed `seed + i`, or with
        `seeds[i]` when `seeds` is given (requests of several callers batched together keep each
        caller's seeds). Size, steps and guidance default to the `text2image` config."""
        cfg = self.config.text2image
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError(f"prompts: expected a non-empty list of strings; got {prompts!r:.200}")
        prompts = [_check_text(f"prompts[{i}]", p) for i, p in enumerate(prompts)]
        if seeds is None:
            seed = _check_seed(seed)
            check_int("seed + len(prompts)", seed + len(prompts) - 1, 0, MAX_SEED)
            seeds = [seed + i for i in range(len(prompts))]
        elif len(seeds) != len(prompts):
            raise ValueError(f"seeds: expected one per prompt ({len(prompts)}); got {len(seeds)}")
        seeds = [check_int(f"seeds[{i}]", s, 0, MAX_SEED) for i, s in enumerate(seeds)]
        width = check_side("width", cfg.width if width is None else width)
        height = check_side("height", cfg.height if height is None else height)
        steps = check_int("steps", cfg.steps if steps is None else steps, 1, 1000)
        guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
        guidance = check_number("guidance_scale", guidance, 0.0, 50.0)
        pipe = self._pipe("text2image")
        images: list[Image.Image] = []
        for start in range(0, len(prompts), cfg.batch_size):
            batch = prompts[start : start + cfg.batch_size]
            extra = (
                {"negative_prompt": [cfg.negative_prompt] * len(batch)}
                if (cfg.negative_prompt and guidance > 1)
                else {}
            )
            with self._lock:
                out = pipe(
                    prompt=batch,
                    width=width,
                    height=height,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    generator=_generators(seeds[start : start + len(batch)]),
                    output_type="pil",
                    **extra,
                )
            images.extend(im.convert("RGB") for im in out.images)
        return images

    def edit(
        self,
        image: Image.Image,
        instruction: str,
        seed: int,
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
    ) -> Image.Image:
        """`image` edited as `instruction` says ("make the star blue"), RGB, same size as the
        input (sides that are not multiples of 8 are sampled a little smaller and resized
        back). Steps and guidances default to the `edit` config."""
        cfg = self.config.edit
        if not isinstance(image, Image.Image):
            raise TypeError(f"image: expected a PIL.Image.Image; got {type(image).__name__}")
        width, height = image.size
        if not (SIZE_MULTIPLE <= width <= MAX_SIDE and SIZE_MULTIPLE <= height <= MAX_SIDE):
            raise ValueError(
                f"image: expected sides in {SIZE_MULTIPLE}..{MAX_SIDE} pixels; got "
                f"{width}x{height}. Fix: resize it first."
            )
        instruction = _check_text("instruction", instruction)
        seed = _check_seed(seed)
        steps = check_int("steps", cfg.steps if steps is None else steps, 1, 1000)
        guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
        guidance = check_number("guidance_scale", guidance, 0.0, 50.0)
        image_guidance = cfg.image_guidance_scale
        if image_guidance_scale is not None:
            image_guidance = image_guidance_scale
        image_guidance = check_number("image_guidance_scale", image_guidance, 0.0, 50.0)
        pipe = self._pipe("edit")
        with self._lock:
            out = pipe(
                prompt=instruction,
                image=image.convert("RGB"),
                num_inference_steps=steps,
                guidance_scale=guidance,
                image_guidance_scale=image_guidance,
                generator=_generators([seed])[0],
                output_type="pil",
            )
        result: Image.Image = out.images[0].convert("RGB")
        if result.size != (width, height):
            result = result.resize((width, height), Image.Resampling.LANCZOS)
        return result

    def render(self, spec: Mapping[str, Any]) -> Rendered:
        """Render a scene spec by prompting with its attributes (`scene_prompt`), seeded by the
        spec's `seed`, sampled near the model's native size and resized to the spec's. Raises
        `SceneError` for an invalid spec. The returned attributes are the ones the prompt asked
        for: a diffusion model is not guaranteed to draw them."""
        scene = Scene.from_dict(spec)
        attributes = scene_attributes(scene)
        prompt = scene_prompt(attributes, self.config.scene)
        cfg = self.config.text2image
        size = generation_size(scene.width, scene.height, base=(cfg.width, cfg.height))
        image = self.generate([prompt], scene.seed, width=size[0], height=size[1])[0]
        if image.size != (scene.width, scene.height):
            image = image.resize((scene.width, scene.height), Image.Resampling.LANCZOS)
        return Rendered(
            image=encode_png(image),
            format="png",
            width=scene.width,
            height=scene.height,
            attributes=attributes,
        )


def _generators(seeds: Sequence[int]) -> list[Any]:
    """One CPU generator per seed: the sampling noise of each image is then the same on every
    device and whatever else is in its batch."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
