"""Resolve `--model` and `--weights` into a picklable payload that every replica rebuilds alike."""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from coin_scale.errors import ResourceError, UserError, close_matches
from coin_scale.models.checkpoint import first_line, read_checkpoint
from coin_scale.models.preprocess import Preprocess

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_WARNING = (
    "--weights none: the model has RANDOM weights. Activations, exemplars and any label derived "
    "from them say nothing about a trained network; use this only to test the pipeline."
)


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """What the user asked for on the command line."""

    model: str
    """A torchvision classification model name (resnet18, vit_b_16, ...) or a coin-scale checkpoint path."""
    weights: str = "default"
    """`default` (torchvision's pretrained weights), `none` (random), a weights enum name such as
    IMAGENET1K_V1, or a path to a state-dict file for the architecture."""
    seed: int = 0
    """Seed of the random initialisation when weights is `none`, so every replica and rerun agree."""


@dataclass(frozen=True, kw_only=True)
class ModelPayload:
    """Everything needed to rebuild the model anywhere: shipped once to Ray's object store."""

    model_id: str
    """Short name used in tables and partitions ([A-Za-z0-9._-])."""
    arch: str
    """torchvision builder name."""
    arch_kwargs: dict[str, Any]
    weights_id: str
    """Identity of the weights: the enum name, `none-seed<N>`, or `file-<sha256 prefix>`."""
    random_weights: bool
    preprocess: Preprocess
    class_names: tuple[str, ...]
    state_dict: dict[str, torch.Tensor] = field(repr=False)


def classification_models() -> list[str]:
    """Every torchvision classification model name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _instantiate(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    """A randomly initialised model: a coin-scale zoo architecture, else a torchvision one."""
    from coin_scale.models import zoo

    if arch in zoo.architectures():
        return zoo.build(arch, **arch_kwargs)
    return torchvision.models.get_model(arch, weights=None, **arch_kwargs)


def build_module(payload: ModelPayload) -> nn.Module:
    """Instantiate the architecture and load the payload's weights, in eval mode, on the CPU."""
    module = _instantiate(payload.arch, payload.arch_kwargs)
    module.load_state_dict(payload.state_dict)
    return module.eval()


def resolve_model(source: ModelSource) -> ModelPayload:
    """Turn a ModelSource into a payload; user errors are one-line `UserError`s."""
    path = Path(source.model)
    if path.suffix in {".pt", ".pth", ".ckpt"} or path.is_file():
        if not path.is_file():
            raise UserError(f"model checkpoint {path} does not exist")
        return _from_checkpoint(path)
    names = classification_models()
    if source.model not in names:
        hint = close_matches(source.model, names)
        raise UserError(
            f"unknown model {source.model!r}; "
            + (f"did you mean: {hint}? " if hint else "")
            + "`python -c 'import torchvision; print(torchvision.models.list_models())'` lists all"
        )
    return _from_torchvision(source)


def _from_torchvision(source: ModelSource) -> ModelPayload:
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
    state_dict, digest = _read_state_dict(path)
    _check_fits(arch, state_dict, path)
    return ModelPayload(
        model_id=arch, arch=arch, arch_kwargs={}, weights_id=f"file-{digest[:12]}",
        random_weights=False, preprocess=preprocess, class_names=class_names,
        state_dict=state_dict,
    )  # fmt: skip


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


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
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
        raise UserError(f"weights file {path} does not fit the architecture {arch}: {detail}") from None


def _from_checkpoint(path: Path) -> ModelPayload:
    payload = read_checkpoint(path)
    arch = payload["arch"]
    from coin_scale.models import zoo

    if arch not in classification_models() and arch not in zoo.architectures():
        raise UserError(f"checkpoint {path} names an unknown architecture {arch!r}")
    state_dict = payload["state_dict"]
    module = _instantiate(arch, payload["arch_kwargs"])
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not fit {arch}: {first_line(err)}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pre = payload["preprocess"]
    return ModelPayload(
        model_id=_safe_id(path.stem), arch=arch, arch_kwargs=dict(payload["arch_kwargs"]),
        weights_id=f"file-{digest[:12]}", random_weights=False,
        preprocess=Preprocess(
            resize=pre["resize"], crop=pre["crop"], mean=tuple(pre["mean"]),
            std=tuple(pre["std"]), interpolation=pre["interpolation"],
        ),
        class_names=tuple(payload["class_names"]), state_dict=state_dict,
    )  # fmt: skip


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"
