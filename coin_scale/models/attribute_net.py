"""The attribute net's architecture: the probe CNN's body and one logit per scene concept.

It predicts, from pixels, every attribute of `unity_pool.vocab.ATTRIBUTES` that varies between
scenes of one large object (`ATTRIBUTE_HEADS`), one softmax group per attribute. Its training
loop is `coin_scale.training.attribute_net`; the synthetic units of
`coin_scale.models.synthetic_model` read their formulas' concepts from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from coin_scale.models.probe_cnn import add_probe_body, probe_body
from coin_scale.models.zoo import register
from unity_pool import vocab

ARCH = "attribute_net"
"""The zoo architecture of the attribute net."""

ATTRIBUTE_HEADS: tuple[str, ...] = ("shape", "color", "texture", "background", "position", "light")
"""Attributes the net predicts: those of `vocab.ATTRIBUTES` that vary in single-object scenes."""

ATTRIBUTE_NET_FIXED: tuple[tuple[str, Any], ...] = (("n_objects", 1), ("size", "large"))
"""Attributes pinned in the training scenes: one large object, as in the single-object probe."""


def head_spec(attributes: Sequence[str] = ATTRIBUTE_HEADS) -> list[list[Any]]:
    """[[attribute, [values...]], ...] in vocabulary order: the net's `heads` argument (plain
    lists, so it travels in a checkpoint's `arch_kwargs`)."""
    unknown = [a for a in attributes if a not in vocab.ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(
            f"attributes: expected some of {', '.join(vocab.ATTRIBUTES)}; got {list(attributes)}."
        )
    return [[a, [str(v) for v in vocab.ATTRIBUTES[a]]] for a in attributes]


def concept_names(heads: Sequence[Sequence[Any]]) -> tuple[str, ...]:
    """`attribute=value` per output logit, heads in order: the probe's concept names."""
    return tuple(f"{attribute}={value}" for attribute, values in heads for value in values)


class AttributeNet(nn.Module):
    """The probe CNN's body (`ProbeCNN`'s stem and four normalisation-free residual blocks)
    -> features -> one logit per concept.

    At 64 px: stem -> (16, 32, 32), layer1 -> (32, 16, 16), layer2 -> (64, 8, 8),
    layer3 -> (96, 8, 8), layer4 -> (width, 4, 4); the features are its average (what) and a 4x4 map of 8 channels
    (where), flattened: (width + 128,); `heads` -> (concept,) logits, one softmax group per
    attribute (`group_sizes`).
    """

    def __init__(self, *, heads: Sequence[Sequence[Any]], width: int = 128) -> None:
        super().__init__()
        if width < 8:
            raise ValueError(f"width: expected >= 8 channels; got {width}. Fix: e.g. 64.")
        self.group_sizes = [len(values) for _, values in heads]
        if not self.group_sizes or min(self.group_sizes) < 2:
            raise ValueError(f"heads: expected attributes with >= 2 values each; got {heads}.")
        add_probe_body(self, width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.where = nn.Sequential(nn.Conv2d(width, 8, 1), nn.AdaptiveAvgPool2d(4))
        self.heads = nn.Linear(width + 8 * 16, sum(self.group_sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (batch, 3, h, w) -> float (batch, concept) logits."""
        x = probe_body(self, x)
        what = torch.flatten(self.avgpool(x), 1)
        where = torch.flatten(self.where(x), 1)
        return self.heads(torch.cat([what, where], dim=1))


class Probabilities(nn.Module):
    """An attribute net's (batch, concept) logits -> probabilities, a softmax per attribute."""

    def __init__(self, group_sizes: Sequence[int]) -> None:
        super().__init__()
        self.group_sizes = list(group_sizes)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        groups = torch.split(logits.float(), self.group_sizes, dim=1)
        return torch.cat([g.softmax(dim=1) for g in groups], dim=1)


@register(ARCH)
def attribute_net(*, heads: list[list[Any]], width: int = 128) -> nn.Module:
    """`AttributeNet`: one logit per scene concept, a softmax group per attribute; not a
    classifier with an avgpool -> fc head."""
    return AttributeNet(heads=heads, width=width)
