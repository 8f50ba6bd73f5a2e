"""How much each unit of a layer contributes to a class logit: exact for a linear head, else
gradient x activation. Pure functions over a model and one input; no Ray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from coin_scale.models.layers import SPATIAL_DIMS, Layout

Method = Literal["exact_linear", "exact_sae_decoder", "grad_x_activation"]
EXACT_METHODS: tuple[Method, ...] = ("exact_linear", "exact_sae_decoder")
"""Methods whose contributions, head bias and terms add up to the logit exactly."""


@dataclass(frozen=True, slots=True)
class UnitContributions:
    """Per-unit contributions of one layer to one class logit, for one image."""

    layer: str
    class_index: int
    logit: float
    contributions: torch.Tensor
    """float64 (unit,). With method exact_linear, contributions.sum() + head_bias == logit."""
    head_bias: float | None
    """The head's bias for the class (exact methods only)."""
    method: Method
    terms: tuple[tuple[str, float], ...] = ()
    """Named parts of the logit that belong to no unit, e.g. an SAE's decoder bias and its
    reconstruction error. With an exact method, contributions.sum() + head_bias + terms ==
    logit."""

    @property
    def exact(self) -> bool:
        """Whether the contributions decompose the logit exactly."""
        return self.method in EXACT_METHODS

    def top(self, k: int, *, negative: bool = False) -> list[tuple[int, float]]:
        """The k strongest positive (or negative) contributors as (unit, contribution)."""
        values = -self.contributions if negative else self.contributions
        order = torch.argsort(values, descending=True, stable=True)[:k]
        return [(int(i), float(self.contributions[i])) for i in order if values[i] > 0]


def pooled_linear_head(module: nn.Module, layer: str) -> nn.Linear | None:
    """The `fc` of a ResNet-style head when `layer` feeds `avgpool -> flatten -> fc` directly
    (torchvision's `avgpool`, or timm's `global_pool` averaging: its ResNets)."""
    children = list(module.named_children())
    names = [name for name, _ in children]
    if names[-2:] not in (["avgpool", "fc"], ["global_pool", "fc"]):
        return None
    if layer not in names or names.index(layer) != len(names) - 3:
        return None
    pool, fc = children[-2][1], children[-1][1]
    if _averages_space(pool) and isinstance(fc, nn.Linear):
        return fc
    return None


def _averages_space(pool: nn.Module) -> bool:
    """torchvision's AdaptiveAvgPool2d, or timm's SelectAdaptivePool2d of pool type `avg`."""
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return True
    return type(pool).__name__ == "SelectAdaptivePool2d" and getattr(pool, "pool_type", "") == "avg"


def forward_keeping(module: nn.Module, layer: str, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the layer's output) of one forward pass, the output kept in the autograd graph."""
    kept: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: kept.append(out)
    )
    try:
        logits = module(inputs)
    finally:
        handle.remove()
    return logits, kept[0]


def unit_contributions(
    module: nn.Module,
    layer: str,
    layout: Layout,
    inputs: torch.Tensor,
    class_index: int | None = None,
) -> UnitContributions:
    """Contributions of `layer`'s units to the logit of `class_index` (default: the prediction).

    `inputs` is one preprocessed image (1, channel, height, width).
    """
    if inputs.shape[0] != 1:
        raise ValueError(f"unit_contributions takes one image, got a batch of {inputs.shape[0]}")
    module.eval()
    head = pooled_linear_head(module, layer)
    if head is not None:
        with torch.inference_mode():
            logits, acts = forward_keeping(module, layer, inputs)
            cls = int(logits[0].argmax()) if class_index is None else class_index
            pooled = acts[0].double().mean(dim=(1, 2))
            contributions = head.weight[cls].double() * pooled
            head_bias = float(head.bias[cls]) if head.bias is not None else 0.0
        return UnitContributions(
            layer, cls, float(logits[0, cls]), contributions, head_bias, "exact_linear"
        )
    with torch.enable_grad():
        logits, acts = forward_keeping(module, layer, inputs)
        cls = int(logits[0].argmax()) if class_index is None else class_index
        (grad,) = torch.autograd.grad(logits[0, cls], acts)
    product = (grad * acts).detach()[0].double()
    dims = tuple(d - 1 for d in SPATIAL_DIMS[layout])
    contributions = product.sum(dim=dims) if dims else product
    return UnitContributions(
        layer, cls, float(logits[0, cls].detach()), contributions, None, "grad_x_activation"
    )


def class_probabilities(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The softmax over the classes of each input, (batch, classes), under inference mode."""
    with torch.inference_mode():
        return module(inputs).softmax(dim=1)
