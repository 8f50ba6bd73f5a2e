"""The timm family: `--model timm:NAME`, any `timm.list_models()` architecture, with or without
its weights tag (`timm:vit_small_patch8_224.dino`, `timm:resnet50.a1_in1k`).

Weights: `default` (the tag's pretrained weights, from the Hugging Face cache or downloaded into
it; neither cached nor reachable is one line naming the model, the hub file and `--weights
PATH`, checked in seconds), `none` (random, seeded), or PATH (a timm state-dict file of that
architecture, `.safetensors` or torch). Preprocessing is timm's evaluation config
(`resolve_model_data_config`, test size): resize to crop / crop_pct, centre crop, its
mean/std and interpolation. A classifier's classes are the pretrained config's label names or
ImageNet's; a model without a head (`num_classes` 0, e.g. DINO) outputs an embedding.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from coin_scale.errors import ResourceError, UserError, close_matches
from coin_scale.models import image_text
from coin_scale.models.checkpoint import first_line
from coin_scale.models.families import ModelFamily, register
from coin_scale.models.payload import RANDOM_WEIGHTS_WARNING, ModelPayload, ModelSource, safe_id
from coin_scale.models.preprocess import Preprocess

log = logging.getLogger(__name__)

NAME = "timm"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files timm's pretrained weights have on the Hugging Face hub."""
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def timm_names() -> list[str]:
    """Every timm architecture and every architecture.tag with pretrained weights."""
    import timm

    return sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True)))


def resolve(source: ModelSource) -> ModelPayload:
    """A timm model and its weights as a payload (arch `timm:NAME`)."""
    import timm

    name = source.model.split(":", 1)[1]
    _check_name(name)
    weights = source.weights
    if weights == "none":
        log.warning(RANDOM_WEIGHTS_WARNING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source.seed)
            module = timm.create_model(name, pretrained=False)
        weights_id, random = f"none-seed{source.seed}", True
    elif weights == "default":
        module = _pretrained(name)
        tag = dict(getattr(module, "pretrained_cfg", {}) or {}).get("tag")
        weights_id, random = safe_id(tag or "default"), False
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(
                f"--weights {weights!r} is neither default, none nor an existing file; timm "
                f"names its pretrained weights by the tag: --model timm:ARCH.TAG "
                f"(`python -c \"import timm; print(timm.list_pretrained('{name.split('.')[0]}*'))\"`)"
            )
        module = timm.create_model(name, pretrained=False)
        _load_file(module, path, name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        weights_id, random = f"file-{digest[:12]}", False
    return ModelPayload(
        model_id=safe_id(f"{NAME}-{name}"), arch=f"{NAME}:{name}", arch_kwargs={},
        weights_id=weights_id, random_weights=random, preprocess=preprocess_of(module),
        class_names=class_names_of(module), state_dict=module.state_dict(),
    )  # fmt: skip


def _check_name(name: str) -> None:
    import timm

    base, _, tag = name.partition(".")
    if timm.is_model(base) and (not tag or name in timm.list_models(pretrained=True)):
        return
    if timm.is_model(base):
        tags = [n.partition(".")[2] for n in timm.list_models(f"{base}.*", pretrained=True)]
        raise UserError(
            f"timm {base} has no weights tag {tag!r}; its tags: {', '.join(tags) or 'none'}"
        )
    hint = close_matches(name, timm_names(), n=5)
    raise UserError(
        f"unknown timm model {name!r}; "
        + (f"did you mean: {hint}? " if hint else "")
        + "`python -c \"import timm; print(timm.list_models('*vit*'))\"` lists them by pattern"
    )


def _pretrained(name: str) -> nn.Module:
    """The model with its pretrained weights, from the cache or downloaded into it."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    where = _check_downloadable(name, cfg)
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as err:  # network, hub and file errors take many types
        raise ResourceError(
            f"cannot load the pretrained weights of timm {name} ({where}): {first_line(err)[:200]}; "
            "pass --weights PATH (a local file of those weights)"
        ) from None


def _check_downloadable(name: str, cfg: Any) -> str:
    """Where the weights come from (hub file or URL), once checked to be cached or reachable."""
    hub_id = (cfg.hf_hub_id or "").split("@")[0] if cfg is not None else ""
    if hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
        where = f"{hub_id}/{files[0]}"
        available = image_text.hub_file_available(hub_id, *files)
        cache = "the Hugging Face cache"
    elif cfg is not None and cfg.url:
        filename = cfg.url.rsplit("/", 1)[-1]
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        where, cache = cfg.url, f"{folder}/"
        host = urlparse(cfg.url).hostname or ""
        available = (folder / filename).is_file() or image_text.reachable((host, 443))
    else:
        raise UserError(
            f"timm {name} has no pretrained weights to download; pass --weights PATH or "
            "--weights none (random, tests only)"
        )
    if not available:
        raise ResourceError(
            f"the weights of timm {name} are not in {cache} ({where}) and cannot be downloaded "
            "from here: pass --weights PATH (a local file of those weights), or --weights none "
            "for random weights (tests only)"
        )
    return where


def _load_file(module: nn.Module, path: Path, name: str) -> None:
    """A state-dict file into `module` (strict); a file of another architecture is one line."""
    from timm.models import load_checkpoint

    try:
        load_checkpoint(module, str(path), strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise UserError(f"weights file {path} does not fit timm {name}: {detail}") from None
    except Exception as err:  # unreadable: pickle, safetensors and OS errors take many types
        raise UserError(f"cannot read weights file {path}: {first_line(err)}") from None


def preprocess_of(module: nn.Module) -> Preprocess:
    """timm's evaluation preprocessing of `module` (its pretrained config, test size) as data."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(module, use_test_size=True)
    _, height, width = cfg["input_size"]
    if height != width:
        log.warning("timm input size %dx%d is not square; using %d", height, width, height)
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    if cfg.get("crop_mode", "center") != "center":
        log.warning("timm crop mode %s read as a centre crop", cfg["crop_mode"])
    interpolation = cfg.get("interpolation", "bilinear")
    return Preprocess(
        resize=max(height, math.floor(height / crop_pct)), crop=height,
        mean=tuple(float(x) for x in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(x) for x in cfg["std"]),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bilinear",
    )  # fmt: skip


def class_names_of(module: nn.Module) -> tuple[str, ...]:
    """The class of each logit: the config's label names, else ImageNet's when the count
    matches, else class0..; () for a model without a classifier head."""
    n = int(getattr(module, "num_classes", 0) or 0)
    if n == 0:
        return ()
    cfg = dict(getattr(module, "pretrained_cfg", {}) or {})
    names = cfg.get("label_names")
    if names and len(names) == n:
        return tuple(str(x) for x in names)
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(cfg) if cfg else None
    if subset:
        info = ImageNetInfo(subset)
        offset = int(cfg.get("label_offset") or 0)
        if info.num_classes() + offset == n:
            lemmas = [info.index_to_description(i).split(",")[0] for i in range(info.num_classes())]
            return ("background",) * offset + tuple(lemmas)
    return tuple(f"class{i}" for i in range(n))


def _instantiate(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    import timm

    return timm.create_model(arch.split(":", 1)[1], pretrained=False, **arch_kwargs)


FAMILY = ModelFamily(
    name=NAME, usage="timm:NAME (a timm model, e.g. timm:vit_small_patch8_224.dino)",
    prefixed=True, resolve=resolve, instantiate=_instantiate,
)  # fmt: skip
register(FAMILY)
