"""Small frozen identifiers shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UnitKind = Literal["neuron", "sae", "synthetic"]
"""What a unit is: a channel of a layer (`neuron`), a latent of an SAE trained on the layer
(`sae`) or a ground-truth unit of a synthetic model (`synthetic`)."""
UNIT_KINDS: tuple[UnitKind, ...] = ("neuron", "sae", "synthetic")

LayerUnitKind = Literal["neuron", "sae"]
"""The unit kinds a user chooses for a layer (`--units`); `synthetic` follows from the model."""
LAYER_UNIT_KINDS: tuple[LayerUnitKind, ...] = ("neuron", "sae")


@dataclass(frozen=True, slots=True)
class UnitId:
    """One unit: a channel of a layer (`neuron`), an SAE feature of it (`sae`) or a ground-truth unit."""

    model: str
    layer: str
    kind: UnitKind
    index: int

    def __str__(self) -> str:
        return f"{self.model}/{self.layer}/{self.kind}#{self.index}"
