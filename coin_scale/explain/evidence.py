"""A layer's evidence over a probe set: what explainers read, and its held-out split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

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
    held_out: float = 0.0
    """The share of the probe's images held out of these rows for scoring
    (`coin_scale.probe.split`); 0: none was."""

    def image_indices(self) -> tuple[int, ...]:
        """The probe image index of each row of `activations`."""
        return self.rows if self.rows is not None else tuple(range(int(self.activations.shape[0])))

    def subset(self, keep: Sequence[bool], *, held_out: float | None = None) -> LayerEvidence:
        """The evidence of the rows where `keep` (one flag per row), concepts alike."""
        mask = torch.tensor(list(keep), dtype=torch.bool)
        if mask.numel() != self.activations.shape[0]:
            raise ValueError(
                f"keep: expected one flag per row ({self.activations.shape[0]}); got {mask.numel()}"
            )
        index = mask.nonzero().flatten()
        rows = self.image_indices()
        return replace(
            self,
            activations=self.activations[index],
            concepts=replace(self.concepts, matrix=self.concepts.matrix[:, index]),
            rows=tuple(rows[int(i)] for i in index),
            held_out=self.held_out if held_out is None else held_out,
        )

    def top_images(self, unit: int, k: int) -> list[tuple[str, float]]:
        """(path, activation) of the unit's `k` most active rows, ties in probe order."""
        column = self.activations[:, unit].float()
        order = torch.sort(-column, stable=True).indices[:k]
        rows = self.image_indices()
        images = self.probe.images
        return [(images[rows[int(i)]].path, float(column[i])) for i in order]


@dataclass(frozen=True, slots=True)
class EvidenceSplit:
    """A layer's evidence cut in two by `coin_scale.probe.split`: the rows explainers read and
    the held-out rows their explanations are scored on."""

    explain: LayerEvidence
    """What the explainers see (`held_out` set to the share)."""
    held_out: LayerEvidence
    """The images no explainer saw."""


def split_evidence(
    evidence: LayerEvidence, held_out: Sequence[bool], share: float
) -> EvidenceSplit:
    """`evidence` split by `held_out` (one flag per probe image, from
    `coin_scale.probe.split.held_out_images` at `share`)."""
    if len(held_out) != len(evidence.probe.images):
        raise ValueError(
            f"held_out: expected one flag per probe image ({len(evidence.probe.images)}); got "
            f"{len(held_out)}"
        )
    out = [bool(held_out[i]) for i in evidence.image_indices()]
    return EvidenceSplit(
        explain=evidence.subset([not o for o in out], held_out=share),
        held_out=evidence.subset(out, held_out=share),
    )


def held_out_split(
    evidence: LayerEvidence, share: float
) -> tuple[EvidenceSplit | None, str | None]:
    """The held-out split of a folder probe's evidence at `share` (`coin_scale.probe.split`):
    (the split, None); (None, why) when fewer than `MIN_HELD_OUT` readable images fall on the
    held-out side (explainers then see every image); (None, None) when nothing is held out
    (`share` 0, or a rendered probe, which is scored on its own held-out rendered set)."""
    from coin_scale.probe.split import MIN_HELD_OUT, held_out_images

    if share <= 0.0 or evidence.probe.attributes_path is not None:
        return None, None
    split = split_evidence(evidence, held_out_images(evidence.probe, share), share)
    n_held = int(split.held_out.activations.shape[0])
    if n_held < MIN_HELD_OUT or split.explain.activations.shape[0] < MIN_HELD_OUT:
        return None, (
            f"No held-out scores: {n_held} of the probe's {evidence.activations.shape[0]} "
            f"readable images fall in the held-out {share:g} (need {MIN_HELD_OUT} on each side), "
            "so the explainer sees every image; add images to the probe folder, or pass "
            "--held-out 0 to skip this note."
        )
    return split, None
