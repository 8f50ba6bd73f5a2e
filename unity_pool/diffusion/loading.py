"""Loading diffusers pipelines: device and dtype, offline by default, one-line errors.

A model is a local pipeline folder (written by `save_pretrained`, or a downloaded snapshot), a
Hugging Face hub id, or `tiny-random` (random weights, built in memory; testing only, see
`unity_pool.diffusion.tiny`). Unless downloads are allowed, a hub id loads only from the local cache
(`local_files_only=True`), and one that is not there raises `ModelNotAvailable` saying which
cache was searched and how to fill it. torch and diffusers are imported on first use, not at
import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unity_pool.diffusion.tiny import TINY_RANDOM, tiny_pipeline

log = logging.getLogger(__name__)


class ModelNotAvailable(FileNotFoundError):
    """A configured model is neither a local pipeline folder nor in the local hub cache."""


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where and in which precision the pipelines run."""

    device: str
    """A torch device string: "cpu", "cuda" or "cuda:N"."""
    dtype: str
    """A torch dtype name: "float32", "float16" or "bfloat16"."""


AUTO_DTYPE: dict[str, str] = {"cpu": "float32", "cuda": "float16"}
"""dtype chosen by `dtype: auto`, per device type. float16 is what Stable Diffusion checkpoints
are published and tested in on GPUs; CPUs run float32."""


def resolve_placement(device: str, dtype: str, *, cuda_available: bool) -> Placement:
    """Turn the config's `device`/`dtype` (which may be "auto") into concrete names."""
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    elif device.startswith("cuda") and not cuda_available:
        raise ValueError(
            f"device: {device!r} was asked for but torch sees no CUDA device. Fix: set device "
            "to auto or cpu, or run on a machine with a GPU."
        )
    if dtype == "auto":
        dtype = AUTO_DTYPE[device.split(":")[0]]
    return Placement(device=device, dtype=dtype)


def hub_cache_dir(configured: str | None = None) -> Path:
    """The Hugging Face hub cache to search, following the hub's own rules, read now (not at
    import): `configured`, else $HF_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or "\\" in model


def resolve_model(model: str, *, key: str, allow_downloads: bool, cache_dir: Path) -> str:
    """What to hand `from_pretrained`: the folder for a local pipeline, else the hub id.

    `key` names the config key (e.g. "text2image.model") for messages. Raises `ModelNotAvailable`
    for a missing folder, a folder without `model_index.json`, or (downloads off) a hub id whose
    `model_index.json` is not in `cache_dir`; `ValueError` for a string that is neither.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelNotAvailable(
                f"{key}: {folder} is a folder but not a diffusers pipeline (no model_index.json). "
                "Fix: point it at a folder written by `save_pretrained` or a downloaded snapshot."
            )
        return str(folder)
    if _looks_like_path(model):
        raise ModelNotAvailable(
            f"{key}: no folder {folder}. Fix: check the path in configs/diffusion.yaml, or use a "
            "Hugging Face hub id such as stabilityai/sd-turbo."
        )
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model, "model_index.json", cache_dir=cache_dir)
    except HFValidationError as err:
        raise ValueError(
            f"{key}: expected a local pipeline folder or a hub id like org/name; got {model!r} "
            f"({err})"
        ) from err
    if not allow_downloads and not isinstance(cached, str):
        raise ModelNotAvailable(_not_cached_message(model, key=key, cache_dir=cache_dir))
    return model


def _not_cached_message(model: str, *, key: str, cache_dir: Path, detail: str = "") -> str:
    state = f"is only partly in ({detail})" if detail else "is not in"
    return (
        f"{key}: model {model!r} {state} the local Hugging Face cache {cache_dir} and downloads "
        f"are off. Fix: on a machine with network run `hf download {model}` (older "
        f"huggingface_hub: `huggingface-cli download {model}`) and copy its cache here (or point "
        "HF_HOME at it), set the key in configs/diffusion.yaml to a local pipeline folder, or "
        "allow downloads (allow_downloads: true, or --allow-downloads)."
    )


def _check_edit_pipeline(pipe: Any, key: str) -> None:
    channels = pipe.unet.config.in_channels
    if channels != 8:
        raise ValueError(
            f"{key}: expected an InstructPix2Pix pipeline, whose UNet takes 8 input channels "
            f"(noise + image latents); got a UNet with {channels}. Fix: point it at an "
            "instruction-editing model such as timbrooks/instruct-pix2pix."
        )


@dataclass(frozen=True, kw_only=True)
class PipelineKind:
    """How one kind of pipeline is loaded."""

    class_name: str
    """The diffusers class whose `from_pretrained` loads it."""
    check: Callable[[Any, str], None] | None = None
    """Called with the loaded pipeline and the config key; raises if it is the wrong kind."""


PIPELINE_KINDS: dict[str, PipelineKind] = {
    "text2image": PipelineKind(class_name="AutoPipelineForText2Image"),
    "edit": PipelineKind(
        class_name="StableDiffusionInstructPix2PixPipeline", check=_check_edit_pipeline
    ),
}
"""Pipeline kinds by name; the name is also the config section holding the model."""


def load_pipeline(
    kind: str,
    model: str,
    *,
    placement: Placement,
    allow_downloads: bool = False,
    cache_dir: Path,
    variant: str | None = None,
) -> Any:
    """Load the `kind` pipeline of `model` on `placement`, progress bars off.

    Offline unless `allow_downloads`: see `resolve_model` for the errors.
    """
    if kind not in PIPELINE_KINDS:
        raise ValueError(
            f"unknown pipeline kind {kind!r}; expected one of {', '.join(PIPELINE_KINDS)}"
        )
    spec = PIPELINE_KINDS[kind]
    key = f"{kind}.model"
    import torch

    if model == TINY_RANDOM:
        log.warning(
            "%s: %s, a testing-size pipeline with RANDOM weights: its images mean nothing; use "
            "it only to test the pipeline", key, TINY_RANDOM,
        )  # fmt: skip
        pipe = tiny_pipeline(kind).to(dtype=getattr(torch, placement.dtype))
        pipe = pipe.to(placement.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    source = resolve_model(model, key=key, allow_downloads=allow_downloads, cache_dir=cache_dir)
    import diffusers

    cls = getattr(diffusers, spec.class_name)
    log.info("loading %s pipeline %s on %s (%s)", kind, source, placement.device, placement.dtype)
    try:
        pipe = cls.from_pretrained(
            source,
            dtype=getattr(torch, placement.dtype),
            local_files_only=not allow_downloads,
            cache_dir=str(cache_dir),
            variant=variant,
        )
    except OSError as err:
        if allow_downloads or Path(source).is_dir():
            raise
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelNotAvailable(
            _not_cached_message(model, key=key, cache_dir=cache_dir, detail=detail)
        ) from err
    if spec.check is not None:
        spec.check(pipe, key)
    pipe = pipe.to(placement.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
