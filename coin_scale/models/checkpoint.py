"""coin-scale's own model checkpoint: architecture + weights + classes + preprocessing in one file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from coin_scale.errors import UserError
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
    """Save a model that `--model PATH` can load back (arch is a torchvision model name)."""
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
