"""The torchvision family: `--model NAME` of a torchvision classification model, with
`--weights default` (the enum's DEFAULT), an enum member's name (IMAGENET1K_V1), `none` or a
state-dict file."""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from coin_scale.errors import ResourceError, UserError, close_matches
from coin_scale.models.checkpoint import first_line
from coin_scale.models.families import ModelFamily, register, split_name
from coin_scale.models.payload import RANDOM_WEIGHTS_WARNING, ModelPayload, ModelSource
from coin_scale.models.preprocess import Preprocess

log = logging.getLogger(__name__)


def classification_models() -> list[str]:
    """Every torchvision classification model name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def resolve(source: ModelSource) -> ModelPayload:
    """A torchvision model and its weights; an unknown name lists close ones."""
    names = classification_models()
    if source.model not in names:
        raise UserError(_unknown(source.model, names))
    arch = source.model
    enum = torchvision.models.get_model_weights(arch)
    default = enum.DEFAULT  # type: ignore[attr-defined]
    preprocess = Preprocess.from_torchvision(default.transforms())
    class_names = tuple(default.meta["categories"])
    weights = source.weights
    if weights == "none":
        log.warning(RANDOM_WEIGHTS_WARNING)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source.seed)
            module = torchvision.models.get_model(arch, weights=None)
        return ModelPayload(
            model_id=arch, arch=arch, arch_kwargs={}, weights_id=f"none-seed{source.seed}",
            random_weights=True, preprocess=preprocess, class_names=class_names,
            state_dict=module.state_dict(),
        )  # fmt: skip
    members = {m.name: m for m in enum}  # type: ignore[attr-defined]
    if weights == "default" or weights in members:
        chosen = default if weights == "default" else members[weights]
        state_dict = _download(chosen)
        return ModelPayload(
            model_id=arch, arch=arch, arch_kwargs={}, weights_id=chosen.name,
            random_weights=False, preprocess=Preprocess.from_torchvision(chosen.transforms()),
            class_names=tuple(chosen.meta["categories"]), state_dict=state_dict,
        )  # fmt: skip
    path = Path(weights)
    if not path.is_file():
        raise UserError(
            f"--weights {weights!r} is neither default, none, one of {', '.join(members)}, "
            "nor an existing file"
        )
    state_dict, digest = read_state_dict(path)
    _check_fits(arch, state_dict, path)
    return ModelPayload(
        model_id=arch, arch=arch, arch_kwargs={}, weights_id=f"file-{digest[:12]}",
        random_weights=False, preprocess=preprocess, class_names=class_names,
        state_dict=state_dict,
    )  # fmt: skip


def _unknown(model: str, names: list[str]) -> str:
    """The unknown-name message: close torchvision names, or the timm/clip spelling of a name
    those libraries know."""
    import open_clip
    import timm

    if timm.is_model(model):
        return f"unknown torchvision model {model!r}; timm has it: --model timm:{model}"
    if model in open_clip.list_models():
        return f"unknown torchvision model {model!r}; open_clip has it: --model clip:{model}"
    hint = close_matches(model, names)
    return (
        f"unknown model {model!r}; "
        + (f"did you mean: {hint}? " if hint else "")
        + "`python -c 'import torchvision; print(torchvision.models.list_models())'` lists all "
        "(timm models are --model timm:NAME, open_clip image encoders --model clip:ARCH)"
    )


def _download(weights: Any) -> dict[str, torch.Tensor]:
    """torchvision's own download into its cache; offline, name the file and --weights PATH."""
    url: str = weights.url
    filename = url.rsplit("/", 1)[-1]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
        raise ResourceError(
            f"cannot download the pretrained weights {filename} ({first_line(err)}). "
            f"Without network, copy {filename} into {cache}/ or pass --weights PATH/{filename}"
        ) from None


_OFFICIAL_NAME = re.compile(r"^[a-z0-9_]+-([0-9a-f]{8})\.pth$")


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A file's state dict of tensors and the file's sha256; a file named like torchvision's
    official one must match its hash prefix."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    official = _OFFICIAL_NAME.match(path.name)
    if official and not digest.startswith(official.group(1)):
        raise UserError(
            f"{path} is named like torchvision's official file but its sha256 starts with "
            f"{digest[:8]}, not {official.group(1)}: the file is corrupt or truncated"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read weights file {path}: {first_line(err)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file {path} does not hold a state dict of tensors")
    return state, digest


def _check_fits(arch: str, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    module = torchvision.models.get_model(arch, weights=None)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise UserError(
            f"weights file {path} does not fit the architecture {arch}: {detail}"
        ) from None


def _instantiate(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    return torchvision.models.get_model(arch, weights=None, **arch_kwargs)


FAMILY = ModelFamily(
    name="torchvision", usage="a torchvision classification model name (resnet152)",
    prefixed=False, resolve=resolve, instantiate=_instantiate,
    claims=lambda model: split_name(model) is None,
    builds=lambda arch: arch in classification_models(), catch_all=True,
)  # fmt: skip
register(FAMILY)
