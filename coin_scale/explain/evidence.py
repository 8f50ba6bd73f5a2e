"""A layer's evidence over a probe set: what explainers read."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coin_scale.concepts import ConceptMatrix
from coin_scale.dissect.pipeline import DissectResult
from coin_scale.probe import ProbeSet


@dataclass(frozen=True, slots=True)
class LayerEvidence:
    """What explainers read: activations and concepts over the same readable probe images."""

    dissection_id: str
    activations: torch.Tensor
    """float32 (image, unit) of the readable images, in probe order."""
    concepts: ConceptMatrix
    """Concepts of the same images."""
    probe: ProbeSet
    result: DissectResult | None = None
    """The dissection's summary (run id, images, timing)."""
    rows: tuple[int, ...] | None = None
    """The probe image index of each row of `activations` (None: every image, in order)."""

    def image_indices(self) -> tuple[int, ...]:
        """The probe image index of each row of `activations`."""
        return self.rows if self.rows is not None else tuple(range(int(self.activations.shape[0])))
