"""Resolve `--model` and `--weights` into a picklable payload that every replica rebuilds alike.

The work is the model families' (`coin_scale.models.families`: torchvision, checkpoint, timm,
clip); this module is the two entry points every command uses.
"""

from __future__ import annotations

from torch import nn

from coin_scale.models.families import family_for_model, instantiate
from coin_scale.models.payload import (
    RANDOM_WEIGHTS_WARNING,
    ModelPayload,
    ModelSource,
    require_class_logits,
)
from coin_scale.models.torchvision_models import classification_models

__all__ = [
    "RANDOM_WEIGHTS_WARNING",
    "ModelPayload",
    "ModelSource",
    "build_module",
    "classification_models",
    "require_class_logits",
    "resolve_model",
]


def resolve_model(source: ModelSource) -> ModelPayload:
    """Turn a ModelSource into a payload through its family; user errors are one-line
    `UserError`s (an unreachable download a `ResourceError`)."""
    return family_for_model(source.model).resolve(source)


def build_module(payload: ModelPayload) -> nn.Module:
    """Instantiate the architecture and load the payload's weights, in eval mode, on the CPU."""
    module = instantiate(payload.arch, payload.arch_kwargs)
    module.load_state_dict(payload.state_dict)
    return module.eval()
