"""coin-scale's own model checkpoint: architecture + weights + classes + preprocessing in one file,
and the `checkpoint` model family (`--model PATH`), whose own architectures are the zoo's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from coin_scale.errors import UserError
from coin_scale.models.families import ModelFamily, register
from coin_scale.models.payload import ModelPayload, ModelSource, safe_id
from coin_scale.models.preprocess import Preprocess

CHECKPOINT_FORMAT = "coin-scale-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    class_names: list[str],
    preprocess: Preprocess,
    arch_kwargs: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a model that `--model PATH` can load back (arch: a torchvision or zoo name, or a
    family's namespaced architecture such as `timm:resnet10t`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and validate a checkpoint written by `save_checkpoint`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise UserError(f"cannot read model checkpoint {path}: {first_line(err)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} is not a coin-scale checkpoint (no format={CHECKPOINT_FORMAT!r}); "
            "for a torchvision state dict use --model ARCH --weights PATH"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(
            f"{path} is checkpoint version {payload.get('version')}, "
            f"this coin-scale reads version {CHECKPOINT_VERSION}"
        )
    return payload


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def resolve_checkpoint(source: ModelSource) -> ModelPayload:
    """A coin-scale checkpoint (`--model PATH`): its architecture, weights, classes and
    preprocessing; `--weights` is not used."""
    import hashlib

    from coin_scale.models.families import family_for_arch, instantiate

    path = Path(source.model)
    if not path.is_file():
        raise UserError(f"model checkpoint {path} does not exist")
    payload = read_checkpoint(path)
    arch = payload["arch"]
    if family_for_arch(arch) is None:
        raise UserError(f"checkpoint {path} names an unknown architecture {arch!r}")
    state_dict = payload["state_dict"]
    module = instantiate(arch, payload["arch_kwargs"])
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path} does not fit {arch}: {first_line(err)}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pre = payload["preprocess"]
    return ModelPayload(
        model_id=safe_id(path.stem), arch=arch, arch_kwargs=dict(payload["arch_kwargs"]),
        weights_id=f"file-{digest[:12]}", random_weights=False,
        preprocess=Preprocess(
            resize=pre["resize"], crop=pre["crop"], mean=tuple(pre["mean"]),
            std=tuple(pre["std"]), interpolation=pre["interpolation"],
        ),
        class_names=tuple(payload["class_names"]), state_dict=state_dict,
    )  # fmt: skip


def _is_checkpoint_path(model: str) -> bool:
    path = Path(model)
    return path.suffix in {".pt", ".pth", ".ckpt"} or path.is_file()


def _build_zoo(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    from coin_scale.models import zoo

    return zoo.build(arch, **arch_kwargs)


def _in_zoo(arch: str) -> bool:
    from coin_scale.models import zoo

    return arch in zoo.architectures()


FAMILY = ModelFamily(
    name="checkpoint", usage="a coin-scale checkpoint PATH", prefixed=False,
    resolve=resolve_checkpoint, instantiate=_build_zoo, claims=_is_checkpoint_path,
    builds=_in_zoo,
)  # fmt: skip
register(FAMILY)
