"""Resolve `--model` and `--weights` into a picklable payload that every replica rebuilds alike.

The work is the model families' (`coin_scale.models.families`: torchvision, checkpoint, timm,
clip); this module is the two entry points every command uses.
"""

from __future__ import annotations

import logging

from torch import nn

from coin_scale.models.families import family_for_model, instantiate
from coin_scale.models.layers import LayerInfo, describe_layers
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

log = logging.getLogger(__name__)


def resolve_model(source: ModelSource) -> ModelPayload:
    """Turn a ModelSource into a payload through its family; user errors are one-line
    `UserError`s (an unreachable download a `ResourceError`)."""
    return family_for_model(source.model).resolve(source)


def structure_module(payload: ModelPayload, *, meta: bool = True) -> nn.Module:
    """The architecture without its weights: on the meta device (its layers' names, kinds and
    output shapes without memory or arithmetic), for the driver, which holds no model (issue 19).
    A model whose code reads tensor values while it is built (torchvision's RegNets) is built on
    the CPU instead, with random weights, for its structure only."""
    import torch

    if meta:
        try:
            with torch.device("meta"):
                return instantiate(payload.arch, payload.arch_kwargs).eval()
        except (NotImplementedError, RuntimeError) as err:
            log.debug("%s cannot be built on the meta device (%s)", payload.model_id, err)
    return instantiate(payload.arch, payload.arch_kwargs).eval()


def traced_structure(payload: ModelPayload) -> tuple[nn.Module, list[LayerInfo]]:
    """(the architecture without weights, its layers): traced on the meta device
    (`structure_module`), or on the CPU with random weights when its forward cannot run there.
    Enough to list layers, find the last block and check a chain's layer path, none of which
    depends on the weights."""
    crop = payload.preprocess.crop
    module = structure_module(payload)
    try:
        return module, describe_layers(module, payload.arch, crop)
    except (NotImplementedError, RuntimeError) as err:
        log.debug("%s does not trace on the meta device (%s)", payload.model_id, err)
        module = structure_module(payload, meta=False)
        return module, describe_layers(module, payload.arch, crop)


def payload_layers(payload: ModelPayload) -> list[LayerInfo]:
    """`describe_layers` of the model, from its structure alone (`traced_structure`)."""
    return traced_structure(payload)[1]


def build_module(payload: ModelPayload) -> nn.Module:
    """Instantiate the architecture and load the payload's weights, in eval mode, on the CPU."""
    module = instantiate(payload.arch, payload.arch_kwargs)
    module.load_state_dict(payload.state_dict)
    return module.eval()
