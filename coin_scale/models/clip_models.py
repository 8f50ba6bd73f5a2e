"""The clip family: `--model clip:ARCH`, the image encoder (`model.visual`) of an open_clip
architecture (RN50, ViT-B-32, ... `open_clip.list_models()`), which outputs an embedding, not
class logits.

Only the image tower is built, from the architecture's config, which travels in the payload's
`arch_kwargs` so every replica builds the same tower (a config registered in this process with
`open_clip.add_model_config` included). Weights: `default` (the standard pretrained tag,
`openai` where there is one) or any pretrained tag of the architecture, read from the Hugging
Face cache or downloaded into it (neither cached nor reachable: one line naming the model, the
hub file and `--weights PATH`, checked in seconds by `coin_scale.models.image_text`); `none`
(random, seeded); or PATH: an open_clip checkpoint of the architecture (the whole model's state
dict, as on the hub) or the image encoder's own. Preprocessing is open_clip's: resize the short
side to the tower's image size, centre crop, the tag's mean/std and interpolation.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coin_scale.errors import ResourceError, UserError, close_matches
from coin_scale.models import image_text
from coin_scale.models.checkpoint import first_line
from coin_scale.models.families import ModelFamily, register
from coin_scale.models.payload import RANDOM_WEIGHTS_WARNING, ModelPayload, ModelSource, safe_id
from coin_scale.models.preprocess import Preprocess

log = logging.getLogger(__name__)

NAME = "clip"
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def resolve(source: ModelSource) -> ModelPayload:
    """An open_clip image encoder and its weights as a payload (arch `clip:ARCH`)."""
    import open_clip

    arch = source.model.split(":", 1)[1]
    architectures = image_text._architectures()
    if arch not in architectures:
        hint = close_matches(arch, architectures)
        raise UserError(
            f"unknown open_clip architecture {arch!r}; "
            + (f"did you mean: {hint}? " if hint else "")
            + "`python -c 'import open_clip; print(open_clip.list_models())'` lists them"
        )
    tags = list(open_clip.list_pretrained_tags_by_model(arch))
    weights, tag_cfg = source.weights, {}
    if weights == "none":
        log.warning(RANDOM_WEIGHTS_WARNING)
        kwargs = tower_config(arch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source.seed)
            module = build_tower(**kwargs)
        weights_id, random = f"none-seed{source.seed}", True
    elif weights == "default" or weights in tags:
        tag = _checked_tag(arch, None if weights == "default" else weights)
        tag_cfg = dict(open_clip.get_pretrained_cfg(arch, tag))
        kwargs = tower_config(arch, quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        module = build_tower(**kwargs)
        path = _download(arch, tag, tag_cfg)
        _load_tower(module, path, arch)
        weights_id, random = safe_id(tag), False
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(
                f"--weights {weights!r} is neither default, none, a pretrained tag of open_clip "
                f"{arch} ({', '.join(tags) or 'it has none'}) nor an existing file"
            )
        kwargs = tower_config(arch)
        module = build_tower(**kwargs)
        _load_tower(module, path, arch)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        weights_id, random = f"file-{digest[:12]}", False
    return ModelPayload(
        model_id=safe_id(f"{NAME}-{arch}"), arch=f"{NAME}:{arch}", arch_kwargs=kwargs,
        weights_id=weights_id, random_weights=random,
        preprocess=preprocess_of(kwargs, tag_cfg), class_names=(),
        state_dict=module.state_dict(),
    )  # fmt: skip


def tower_config(arch: str, *, quick_gelu: bool = False) -> dict[str, Any]:
    """The image tower's builder arguments from the architecture's config (plain data)."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise UserError(f"open_clip has no config for {arch!r}")
    return {
        "embed_dim": int(cfg["embed_dim"]), "vision_cfg": dict(cfg["vision_cfg"]),
        "quick_gelu": bool(cfg.get("quick_gelu", False) or quick_gelu),
    }  # fmt: skip


def build_tower(
    *, embed_dim: int, vision_cfg: dict[str, Any], quick_gelu: bool = False
) -> nn.Module:
    """open_clip's image tower alone (what `CLIP.visual` is), randomly initialised."""
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, dict(vision_cfg), quick_gelu=quick_gelu)


def _checked_tag(arch: str, tag: str | None) -> str:
    try:
        return image_text.pretrained_tag(arch, tag, flag="--weights")
    except image_text.WeightsUnavailable as err:
        raise ResourceError(str(err)) from None
    except ValueError as err:
        raise UserError(str(err)) from None


def _download(arch: str, tag: str, tag_cfg: dict[str, Any]) -> Path:
    """The tag's checkpoint file, from the cache or downloaded into it."""
    import open_clip

    try:
        found = open_clip.download_pretrained(tag_cfg)
    except Exception as err:  # network and hub errors take many types
        raise ResourceError(
            f"cannot download the weights of open_clip {arch} ({tag}): {first_line(err)[:200]}; "
            "pass --weights PATH (a local open_clip checkpoint)"
        ) from None
    if not found:
        raise ResourceError(
            f"open_clip {arch} ({tag}) names no file to download; pass --weights PATH"
        )
    return Path(found)


def _load_tower(module: nn.Module, path: Path, arch: str) -> None:
    """Weights from a whole-model checkpoint (its `visual.` keys) or an image tower's own."""
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as err:  # unreadable: pickle, safetensors and OS errors take many types
        raise UserError(f"cannot read weights file {path}: {first_line(err)}") from None
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    try:
        module.load_state_dict(visual or state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise UserError(
            f"weights file {path} does not fit the image encoder of open_clip {arch}: {detail}"
        ) from None


def preprocess_of(kwargs: dict[str, Any], tag_cfg: dict[str, Any]) -> Preprocess:
    """open_clip's evaluation preprocessing of the tower (and the tag's mean/std) as data."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), tag_cfg)
    size = kwargs["vision_cfg"].get("image_size", cfg["size"])
    side = int(size if isinstance(size, int) else size[0])
    if cfg.get("resize_mode", "shortest") != "shortest":
        log.warning("open_clip resize mode %s read as short side + centre crop", cfg["resize_mode"])
    interpolation = str(cfg.get("interpolation", "bicubic"))
    return Preprocess(
        resize=side, crop=side,
        mean=tuple(float(x) for x in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(x) for x in cfg["std"]),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bicubic",
    )  # fmt: skip


def _instantiate(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    return build_tower(**arch_kwargs)


FAMILY = ModelFamily(
    name=NAME, usage="clip:ARCH (an open_clip image encoder, e.g. clip:RN50)",
    prefixed=True, resolve=resolve, instantiate=_instantiate,
)  # fmt: skip
register(FAMILY)
