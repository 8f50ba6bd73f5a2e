"""What `--model`/`--weights` ask for (`ModelSource`) and what every replica rebuilds the model
from (`ModelPayload`): plain, picklable data shared by every model family."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from coin_scale.errors import UserError
from coin_scale.models.preprocess import Preprocess

RANDOM_WEIGHTS_WARNING = (
    "--weights none: the model has RANDOM weights. Activations, exemplars and any label derived "
    "from them say nothing about a trained network; use this only to test the pipeline."
)


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """What the user asked for on the command line."""

    model: str
    """A torchvision classification model name (resnet18, vit_b_16, ...), `timm:NAME` (any
    `timm.list_models()` name, with or without its weights tag), `clip:ARCH` (the image encoder
    of an open_clip architecture) or a coin-scale checkpoint path."""
    weights: str = "default"
    """`default` (the family's standard pretrained weights), `none` (random), a named set of
    weights of the family (torchvision's enum names such as IMAGENET1K_V1, open_clip's pretrained
    tags), or a path to a weights file for the architecture."""
    seed: int = 0
    """Seed of the random initialisation when weights is `none`, so every replica and rerun agree."""


@dataclass(frozen=True, kw_only=True)
class ModelPayload:
    """Everything needed to rebuild the model anywhere: shipped once to Ray's object store."""

    model_id: str
    """Short name used in tables and partitions ([A-Za-z0-9._-]): the torchvision name,
    `timm-NAME`, `clip-ARCH`, or a checkpoint's file stem."""
    arch: str
    """The architecture its family instantiates: a torchvision builder name, a coin-scale zoo
    name, `timm:NAME` or `clip:ARCH` (see `coin_scale.models.families`)."""
    arch_kwargs: dict[str, Any]
    """Keyword arguments of the family's builder (e.g. num_classes; an open_clip tower's config)."""
    weights_id: str
    """Identity of the weights: the enum name or pretrained tag, `none-seed<N>`, or
    `file-<sha256 prefix>`."""
    random_weights: bool
    preprocess: Preprocess
    class_names: tuple[str, ...]
    """The class of each output logit; empty when the model outputs an embedding, not class
    logits (an open_clip image encoder, a timm model without a classifier head)."""
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    @property
    def has_class_logits(self) -> bool:
        """Whether the model's output is one logit per class of `class_names`."""
        return bool(self.class_names)


def require_class_logits(payload: ModelPayload, what: str) -> None:
    """A one-line UserError when `what` (e.g. "the sweep") needs class logits the model lacks."""
    if payload.has_class_logits:
        return
    from coin_scale.models.families import model_flag

    flag = model_flag(payload.model_id)
    raise UserError(
        f"{flag} outputs an embedding, not class logits, so {what} has no predicted class to "
        f"explain; explain its units with `coin-scale dissect --model {flag} --layer LAYER "
        f"--probe DIR` (`coin-scale layers --model {flag}` lists the layers)"
    )


def safe_id(text: str) -> str:
    """`text` with every run of characters outside [A-Za-z0-9._-] replaced by one dash."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"
