"""What makes the agents' images: the image generator chosen by `--image-generator`.

- `procedural` (the default): the built-in renderer; agents `render` and `edit` synthetic scenes.
- `unity`: the Unity player of `configs/unity.yaml` renders the same scenes (docs/unity.md).
- `diffusion`: diffusers pipelines (`configs/diffusion.yaml`, or `--diffusion-model` and
  `--edit-model`): agents also get `text2image(prompts)` and `edit(image, instruction)` on any
  image, photographs and exemplars included, and `render` turns scene specs into prompts.

The generator's backends run as the workers of the agents' render pool (Ray actors, one backend
process each, GPU where present); this module holds the pure part: the settings, checked before
any work (`image_generator`), and `PooledGenerator`, which gathers several agents' `text2image`
requests into one pipeline call and sends edits one by one, through any `GeneratorBackend`.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

from PIL import Image

from coin_scale.agent.batched_meter import RequestBatcher
from coin_scale.errors import ResourceError, UserError
from unity_pool.diffusion.config import DiffusionConfig, EditConfig, Text2ImageConfig, load_config
from unity_pool.diffusion.tiny import TINY_RANDOM, TINY_SIDE
from unity_pool.tools import MAX_PROMPTS
from unity_pool.unity.launcher import UnityPlayerConfig

log = logging.getLogger(__name__)

GENERATOR_KINDS = ("procedural", "diffusion", "unity")
"""The values of `--image-generator`."""

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
"""The repository's configs/ (the defaults of `--diffusion-config` and `--unity-config`)."""

GENERATE_BATCH = 8
"""Prompts of several agents denoised together in one pipeline call, at most."""

GENERATE_WINDOW_S = 0.05
"""How long a first prompt waits for others to join its pipeline call."""


@dataclass(frozen=True, kw_only=True)
class ImageGenerator:
    """The agents' image generator, resolved and checked (`image_generator`)."""

    kind: str = "procedural"
    """One of `GENERATOR_KINDS`."""
    diffusion: DiffusionConfig | None = None
    """The diffusion server's config (kind `diffusion`)."""
    unity: UnityPlayerConfig | None = None
    """The Unity player's config (kind `unity`)."""

    @property
    def generates(self) -> bool:
        """Whether agents get `text2image`."""
        return self.diffusion is not None and self.diffusion.text2image.model is not None

    @property
    def edits_images(self) -> bool:
        """Whether agents get `edit(image, instruction)` on any image."""
        return self.diffusion is not None and self.diffusion.edit.model is not None

    def command(self) -> tuple[str, ...] | None:
        """The backend command of each render worker; None for the procedural default."""
        if self.diffusion is not None:
            config = json.dumps(asdict(self.diffusion), separators=(",", ":"))
            return ("python", "-m", "unity_pool.diffusion", "--port", "0", "--config-json", config)
        if self.unity is not None:
            env = [f"{k}={v}" for k, v in self.unity.env.items()]
            argv = self.unity.command(port=0, check=False)
            return ("env", *env, *argv) if env else tuple(argv)
        return None

    def describe(self) -> str:
        """One line for the output: what makes the images."""
        if self.diffusion is not None:
            models = [
                f"text2image {self.diffusion.text2image.model}" if self.generates else "",
                f"edit {self.diffusion.edit.model}" if self.edits_images else "",
            ]
            return "diffusion (" + ", ".join(m for m in models if m) + ")"
        if self.unity is not None:
            return f"unity ({self.unity.player})"
        return "procedural"


def image_generator(
    kind: str = "procedural",
    *,
    diffusion_model: str | None = None,
    edit_model: str | None = None,
    diffusion_config: str | None = None,
    unity_config: str | None = None,
    allow_downloads: bool = False,
) -> ImageGenerator:
    """The generator `--image-generator kind` asks for, checked now: a model that is neither a
    local pipeline folder, a cached hub id (or allowed to download) nor `tiny-random`, a missing
    config file or Unity player is one line (`UserError` / `ResourceError`) before any work.

    `diffusion_model` / `edit_model` replace the config's text-to-image and editing models
    (`none` switches one off). `tiny-random` as the diffusion model selects the testing-size
    pipelines for both (random weights: testing only), at 64x64 and two steps."""
    if kind not in GENERATOR_KINDS:
        raise UserError(
            f"--image-generator: unknown generator {kind!r}; expected one of "
            f"{', '.join(GENERATOR_KINDS)}"
        )
    diffusion_flags = [
        name for name, value in (("--diffusion-model", diffusion_model), ("--edit-model", edit_model),
                                 ("--diffusion-config", diffusion_config)) if value is not None
    ]  # fmt: skip
    if kind != "diffusion" and diffusion_flags:
        raise UserError(
            f"{', '.join(diffusion_flags)} only apply with --image-generator diffusion (got {kind})"
        )
    if kind == "unity":
        return ImageGenerator(kind=kind, unity=_unity(unity_config))
    if kind == "procedural":
        if unity_config is not None:
            raise UserError("--unity-config only applies with --image-generator unity")
        return ImageGenerator()
    config = _diffusion(diffusion_model, edit_model, diffusion_config, allow_downloads)
    return ImageGenerator(kind=kind, diffusion=config)


def _unity(path: str | None) -> UnityPlayerConfig:
    from unity_pool.unity.launcher import UnityPlayerNotFound

    try:
        config = UnityPlayerConfig.from_yaml(path or REPO_CONFIGS / "unity.yaml")
        config.player_path()
    except (FileNotFoundError, UnityPlayerNotFound) as err:
        raise ResourceError(f"--image-generator unity: {err}") from None
    except (ValueError, TypeError) as err:
        raise UserError(f"--image-generator unity: {err}") from None
    return config


def _model(flag: str | None, configured: str | None) -> str | None:
    if flag is None:
        return configured
    return None if flag.lower() == "none" else flag


def _diffusion(
    diffusion_model: str | None, edit_model: str | None, path: str | None, allow_downloads: bool
) -> DiffusionConfig:
    import importlib.util

    from unity_pool.diffusion.loading import ModelNotAvailable, hub_cache_dir, resolve_model

    missing = [m for m in ("diffusers", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ResourceError(
            f"--image-generator diffusion needs {' and '.join(missing)}, which are not "
            "installed. Fix: pip install -e '.[diffusion]' (scripts/setup.sh installs it)."
        )

    try:
        default = REPO_CONFIGS / "diffusion.yaml"
        config = load_config(path) if path else (
            load_config(default) if default.is_file() else DiffusionConfig()
        )  # fmt: skip
        if diffusion_model == TINY_RANDOM:
            config = replace(
                config,
                text2image=Text2ImageConfig(
                    model=TINY_RANDOM, steps=2, guidance_scale=0.0, width=TINY_SIDE,
                    height=TINY_SIDE, batch_size=GENERATE_BATCH,
                ),
                edit=EditConfig(model=TINY_RANDOM, steps=2),
            )  # fmt: skip
            if edit_model is not None:
                config = replace(config, edit=replace(config.edit, model=_model(edit_model, None)))
        else:
            config = replace(
                config,
                text2image=replace(
                    config.text2image, model=_model(diffusion_model, config.text2image.model)
                ),
                edit=replace(config.edit, model=_model(edit_model, config.edit.model)),
            )
        if allow_downloads:
            config = replace(config, allow_downloads=True)  # `replace` re-checks the config
    except FileNotFoundError as err:
        raise ResourceError(f"--image-generator diffusion: {err}") from None
    except ValueError as err:
        raise UserError(f"--image-generator diffusion: {err}") from None
    cache = hub_cache_dir(config.cache_dir)
    for key, model in (("text2image.model", config.text2image.model), ("edit.model", config.edit.model)):
        if model is None or model == TINY_RANDOM:
            continue
        try:
            resolve_model(model, key=key, allow_downloads=config.allow_downloads, cache_dir=cache)
        except ModelNotAvailable as err:
            raise ResourceError(f"--image-generator diffusion: {err}") from None
        except ValueError as err:
            raise UserError(f"--image-generator diffusion: {err}") from None
    if TINY_RANDOM in (config.text2image.model, config.edit.model):
        log.warning(
            "--diffusion-model %s: testing-size pipelines with RANDOM weights; the images they "
            "make mean nothing (use this only to test the pipeline)", TINY_RANDOM,
        )  # fmt: skip
    return config


TYPICAL_GENERATED = 2
"""Images a unit's agent usually generates (one text2image call of two prompts)."""
TYPICAL_EDITS = 1
"""Edits by instruction a unit's agent usually makes."""
STEP_SECONDS = {"gpu": 0.05, "cpu": 3.0}
"""Assumed seconds of one denoising step of a Stable-Diffusion-size pipeline at 512x512, per
device (fp16 on a datacentre GPU; float32 on a few CPU cores): the dry run's time figures rest on
these; `tiny-random` takes about a hundredth of a second on a CPU."""


def generation_plan_lines(generator: ImageGenerator, *, units: int, max_rounds: int) -> list[str]:
    """A dry run's lines for the image generator: generated images and edits, typical and at
    most (every round a text2image call of 16 prompts), and their time on a GPU and on a CPU."""
    if generator.diffusion is None:
        return []
    text, edit = generator.diffusion.text2image, generator.diffusion.edit
    images = units * TYPICAL_GENERATED if generator.generates else 0
    images_max = units * max_rounds * MAX_PROMPTS if generator.generates else 0
    edits = units * TYPICAL_EDITS if generator.edits_images else 0
    edits_max = units * max_rounds if generator.edits_images else 0
    tiny = TINY_RANDOM in (text.model, edit.model)

    def seconds(device: str, n_images: int, n_edits: int) -> float:
        step = 0.01 if tiny else STEP_SECONDS[device]
        return step * (n_images * text.steps + n_edits * edit.steps)

    def when(n_images: int, n_edits: int) -> str:
        gpu, cpu = seconds("gpu", n_images, n_edits), seconds("cpu", n_images, n_edits)
        return f"~{gpu / 60:.1f} min on one GPU, ~{cpu / 60:.1f} min on a CPU"

    assumed = (
        "assumed 0.01 s a step (tiny-random)" if tiny
        else f"assumed {STEP_SECONDS['gpu']:g} s a step on a GPU, {STEP_SECONDS['cpu']:g} s on a CPU"
    )  # fmt: skip
    return [
        f"images by {generator.describe()} (no tokens, no dollars):",
        f"  generated      {images:>10,}   (at most {images_max:,}; {text.steps} steps each)",
        f"  edits          {edits:>10,}   (at most {edits_max:,}; {edit.steps} steps each)",
        f"  time           {when(images, edits)}",
        f"                 (at most {when(images_max, edits_max)}; {assumed})",
    ]


class GeneratorBackend(Protocol):
    """Where generation and edits run (the render pool of diffusion workers, or a fake)."""

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[bytes]:
        """Encoded images, one per prompt, prompt `i` sampled with `seeds[i]`."""
        ...

    def edit(self, image: bytes, instruction: str, seed: int) -> bytes:
        """The encoded `image` edited as `instruction` says, encoded."""
        ...


def _decode(data: bytes, what: str) -> Image.Image:
    from unity_pool.client import RenderFailed

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except (OSError, ValueError, TypeError) as err:
        raise RenderFailed(f"the image generator returned an unreadable {what} ({err})") from err


class PooledGenerator:
    """The agents' `TextToImage` and `ImageEditor` on a `GeneratorBackend`: text-to-image
    requests of agents running at once share pipeline calls (at most `max_prompts` prompts,
    gathered for `window_s`), each prompt keeping its own seed, so the images do not depend on
    what else was in the call. An image that cannot be decoded is a `RenderFailed` the agent
    reads as a tool error. Counts calls and images for the output."""

    def __init__(
        self,
        backend: GeneratorBackend,
        *,
        max_prompts: int = GENERATE_BATCH,
        window_s: float = GENERATE_WINDOW_S,
        in_flight: int = 2,
    ) -> None:
        self.backend = backend
        self.edits = 0
        """Edits made so far."""
        self._batcher = RequestBatcher(
            self._generate, max_items=max_prompts, window_s=window_s, in_flight=in_flight,
            name="generate-batcher",
        )  # fmt: skip

    @property
    def calls(self) -> int:
        """Pipeline calls made for text-to-image so far."""
        return self._batcher.batches

    @property
    def generated(self) -> int:
        """Images generated so far."""
        return self._batcher.items

    def _generate(self, pairs: list[tuple[str, int]]) -> list[bytes]:
        return self.backend.generate([p for p, _ in pairs], [s for _, s in pairs])

    def generate(self, prompts: Sequence[str], seed: int) -> list[Image.Image]:
        """One image per prompt, prompt `i` sampled with seed `seed + i`."""
        data = self._batcher.submit([(p, seed + i) for i, p in enumerate(prompts)])
        return [_decode(d, "image") for d in data]

    def edit(self, image: Image.Image, instruction: str, seed: int) -> Image.Image:
        """`image` edited as `instruction` says."""
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        edited = _decode(self.backend.edit(buffer.getvalue(), instruction, seed), "edit")
        self.edits += 1
        return edited

    def close(self) -> None:
        self._batcher.close()

    def __enter__(self) -> PooledGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

