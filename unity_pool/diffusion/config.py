"""Configuration of the diffusion backend: which pipelines, where they run, how they sample.

One frozen dataclass per section, mirrored key for key by `configs/diffusion.yaml` (a test keeps
the file equal to the defaults here). `load_config(path)` reads the YAML; unknown keys and bad
values raise `ValueError` naming the key, what was expected and the fix.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

MAX_SIDE = 2048
"""Largest width or height, pixels, of a generated image (the render protocol's limit)."""

SIZE_MULTIPLE = 8
"""Widths and heights of generated images must be multiples of this (the VAE's downsampling)."""

MAX_SEED = 2**63 - 1
"""Largest seed accepted; the same range as a scene spec's `seed`."""

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""Accepted `device` values, besides `cuda:N`."""

DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")
"""Accepted `dtype` values."""

SCENE_PLACEHOLDERS = (
    "shape", "color", "texture", "background", "size", "position", "n_objects", "light",
)  # fmt: skip
"""Names `scene.template` may use: the render protocol's attributes (`vocab.ATTRIBUTES`)."""


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """`value` if it is an integer in [low, high]; else `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: expected an integer in {low}..{high}; got {value!r}")
    return value


def check_number(name: str, value: Any, low: float, high: float) -> float:
    """`value` as a float if it is a number in [low, high]; else `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name}: expected a number in {low}..{high}; got {value!r}")
    return float(value)


def check_side(name: str, value: Any) -> int:
    """A width or height: a multiple of `SIZE_MULTIPLE` in [SIZE_MULTIPLE, MAX_SIDE]."""
    if isinstance(value, bool) or not isinstance(value, int) or value % SIZE_MULTIPLE:
        raise ValueError(
            f"{name}: expected a multiple of {SIZE_MULTIPLE} in {SIZE_MULTIPLE}..{MAX_SIDE} "
            f"pixels; got {value!r}. Fix: round it to a multiple of {SIZE_MULTIPLE}."
        )
    return check_int(name, value, SIZE_MULTIPLE, MAX_SIDE)


def _check_optional_str(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{name}: expected a non-empty string or null; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Text2ImageConfig:
    """The text-to-image pipeline (loaded with diffusers' `AutoPipelineForText2Image`)."""

    model: str | None = "stabilityai/sd-turbo"
    """Hugging Face hub id or local pipeline folder (one written by `save_pretrained`); null
    disables text-to-image (and so the `generate` and `render` requests)."""
    steps: int = 1
    """Denoising steps per image. sd-turbo is distilled for 1 to 4."""
    guidance_scale: float = 0.0
    """Classifier-free guidance weight; 0 turns guidance off (what sd-turbo is trained for).
    Ordinary Stable Diffusion checkpoints want about 7.5."""
    width: int = 512
    """Default image width, pixels, a multiple of 8 (a request may ask for another)."""
    height: int = 512
    """Default image height, pixels, a multiple of 8."""
    negative_prompt: str | None = None
    """Text to steer away from; only used when `guidance_scale` > 1."""
    batch_size: int = 4
    """Prompts denoised together in one pipeline call; more prompts are split into batches."""
    variant: str | None = None
    """Weight-file variant to load, e.g. "fp16" (smaller files, if the repository has them)."""

    def __post_init__(self) -> None:
        _check_optional_str("text2image.model", self.model)
        check_int("text2image.steps", self.steps, 1, 1000)
        check_number("text2image.guidance_scale", self.guidance_scale, 0.0, 50.0)
        check_side("text2image.width", self.width)
        check_side("text2image.height", self.height)
        _check_optional_str("text2image.negative_prompt", self.negative_prompt)
        check_int("text2image.batch_size", self.batch_size, 1, 256)
        _check_optional_str("text2image.variant", self.variant)


@dataclass(frozen=True, kw_only=True)
class EditConfig:
    """The instruction-based editing pipeline (`StableDiffusionInstructPix2PixPipeline`)."""

    model: str | None = "timbrooks/instruct-pix2pix"
    """Hugging Face hub id or local pipeline folder; its UNet must take 8 input channels (noise
    latents + image latents). null disables the `edit` request."""
    steps: int = 20
    """Denoising steps per edit."""
    guidance_scale: float = 7.5
    """How strongly the edit follows the instruction."""
    image_guidance_scale: float = 1.5
    """How strongly the edit stays close to the input image (>= 1 to have an effect)."""
    variant: str | None = None
    """Weight-file variant to load, e.g. "fp16"."""

    def __post_init__(self) -> None:
        _check_optional_str("edit.model", self.model)
        check_int("edit.steps", self.steps, 1, 1000)
        check_number("edit.guidance_scale", self.guidance_scale, 0.0, 50.0)
        check_number("edit.image_guidance_scale", self.image_guidance_scale, 0.0, 50.0)
        _check_optional_str("edit.variant", self.variant)


def _default_phrases() -> dict[str, dict[str, str]]:
    return {
        "texture": {
            "solid": "plain",
            "stripes": "striped",
            "dots": "polka-dot",
            "checker": "checkered",
            "fur": "furry",
        },
        "background": {
            "plain": "plain grey",
            "gradient": "smooth gradient",
            "noise": "grainy grey",
            "grid": "grid paper",
            "sky": "blue sky with clouds",
        },
    }


@dataclass(frozen=True, kw_only=True)
class ScenePromptConfig:
    """How a `render` request's scene spec becomes a text prompt."""

    template: str = (
        "a {size} {color} {texture} {shape} in the {position} of the picture, "
        "on a {background} background, {light} light, simple flat illustration"
    )
    """`str.format` template over the scene's attributes (`SCENE_PLACEHOLDERS`)."""
    phrases: dict[str, dict[str, str]] = field(default_factory=_default_phrases)
    """Per attribute, words to use instead of an attribute value (e.g. texture `fur` ->
    "furry"); values not listed are used as they are."""

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or not self.template.strip():
            raise ValueError(f"scene.template: expected a non-empty string; got {self.template!r}")
        names = {f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None}
        unknown = sorted(names - set(SCENE_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"scene.template: unknown placeholder(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(SCENE_PLACEHOLDERS)}"
            )
        if not isinstance(self.phrases, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in self.phrases.items()
        ):
            raise ValueError(
                "scene.phrases: expected a mapping attribute -> {value: phrase}; "
                f"got {self.phrases!r:.200}"
            )
        unknown = sorted(set(self.phrases) - set(SCENE_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"scene.phrases: unknown attribute(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(SCENE_PLACEHOLDERS)}"
            )


@dataclass(frozen=True, kw_only=True)
class DiffusionConfig:
    """Everything `python -m unity_pool.diffusion` and `DiffusionBackend` need."""

    text2image: Text2ImageConfig = field(default_factory=Text2ImageConfig)
    """The text-to-image pipeline."""
    edit: EditConfig = field(default_factory=EditConfig)
    """The instruction-based editing pipeline."""
    scene: ScenePromptConfig = field(default_factory=ScenePromptConfig)
    """How scene specs (the `render` request) become prompts."""
    device: str = "auto"
    """"auto" (the first CUDA device when there is one, else CPU), "cpu", "cuda" or "cuda:N"."""
    dtype: str = "auto"
    """"auto" (float16 on CUDA, float32 on CPU), "float32", "float16" or "bfloat16"."""
    allow_downloads: bool = False
    """Let diffusers fetch missing files from the Hugging Face hub. Off: models load only from
    local folders and the local cache, and a missing one is a clear error."""
    cache_dir: str | None = None
    """Hugging Face hub cache folder; null means the standard one ($HF_HUB_CACHE, else
    $HF_HOME/hub, else ~/.cache/huggingface/hub)."""

    def __post_init__(self) -> None:
        valid = ", ".join((*DEVICE_CHOICES, "cuda:N"))
        device = self.device
        is_cuda_n = isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit()
        if device not in DEVICE_CHOICES and not is_cuda_n:
            raise ValueError(f"device: expected one of {valid}; got {device!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(
                f"dtype: expected one of {', '.join(DTYPE_CHOICES)}; got {self.dtype!r}"
            )
        if not isinstance(self.allow_downloads, bool):
            raise ValueError(
                f"allow_downloads: expected true or false; got {self.allow_downloads!r}"
            )
        _check_optional_str("cache_dir", self.cache_dir)
        if self.text2image.model is None and self.edit.model is None:
            raise ValueError(
                "text2image.model and edit.model are both null: the backend would have nothing "
                "to serve. Fix: set at least one of them to a hub id or a local pipeline folder."
            )


_SECTIONS: dict[str, type] = {
    "text2image": Text2ImageConfig,
    "edit": EditConfig,
    "scene": ScenePromptConfig,
}
"""Keys of `DiffusionConfig` whose values are sections (nested mappings)."""


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of keys; got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(names)}. "
            "Fix: remove or rename them (see configs/diffusion.yaml)."
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        section = _SECTIONS.get(name) if cls is DiffusionConfig else None
        prefix = "" if where == "config" else f"{where}."
        kwargs[name] = _build(section, value, f"{prefix}{name}") if section else value
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> DiffusionConfig:
    """A `DiffusionConfig` from parsed YAML/JSON; missing keys take their defaults."""
    config = _build(DiffusionConfig, data, "config")
    assert isinstance(config, DiffusionConfig)
    return config


def load_config(path: str | Path) -> DiffusionConfig:
    """Read a YAML config (an empty file gives the defaults)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"diffusion config {path} does not exist. Fix: pass --config with an existing file "
            "(the repository ships configs/diffusion.yaml)."
        ) from err
    except yaml.YAMLError as err:
        raise ValueError(f"diffusion config {path} is not valid YAML: {err}") from err
    try:
        return config_from_dict(data or {})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
