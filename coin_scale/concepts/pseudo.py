"""Pseudo-attributes: soft (image, concept) scores turned into the boolean concept matrix that the
formula search reads, so that photographs without labels get AND / OR / AND NOT explanations
(the `clip-formula` explainer) as rendered scenes do from their ground truth.

An image-text model scores every image against every concept word (cosine similarity); an
attribute reader scores it with probabilities. Neither says "this image shows a dog" outright, so
each score is made relative twice:

1. per image, minus the image's mean over the vocabulary: some images are closer to every word
   (a plain photograph of one object) and would otherwise show every concept;
2. per concept, standardised over the probe images (z-score): words differ in their typical
   similarity ("photo" is close to every image), so one threshold for all concepts would
   favour some words everywhere.

Each concept's standardised scores are then split in two by Otsu's method (the threshold with
the largest variance between the two groups): a scorer that separates a concept cleanly gives two
modes, and the split falls between them whatever share of the probe shows the concept (a fixed
z threshold would be too high for common concepts and too low for rare ones). A concept whose
scores have one mode has its split near the middle, so an image also needs a z-score of at least
`min_z` (default 0.25: the top 40% of a normal distribution at most) to show it. Concepts that no
image or every image shows are dropped (`filter_concepts`), so the formula search reads only
concepts that tell images apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from coin_scale.concepts.matrix import ConceptMatrix, filter_concepts


@dataclass(frozen=True, kw_only=True)
class PseudoAttributeConfig:
    """How soft concept scores become per-image yes/no attributes."""

    min_z: float = 0.25
    """An image shows a concept only when its standardised score is above the concept's Otsu
    split and at least `min_z` (see the module doc)."""
    min_images: int = 2
    """Concepts shown by fewer images are dropped (a formula over one image is noise)."""

    def __post_init__(self) -> None:
        if not self.min_z >= 0.0:
            raise ValueError(f"min_z: expected >= 0; got {self.min_z}. Fix: e.g. 0.25.")
        if self.min_images < 1:
            raise ValueError(f"min_images: expected >= 1; got {self.min_images}. Fix: e.g. 2.")


def standardized_scores(scores: torch.Tensor) -> torch.Tensor:
    """float64 (image, concept): each score minus its image's mean over the concepts, then
    standardised per concept over the images (0 where a concept's centred score is constant up to
    rounding)."""
    if scores.dim() != 2 or scores.shape[0] < 2 or scores.shape[1] < 1:
        raise ValueError(
            f"scores: expected (image, concept) with at least 2 images and 1 concept; got shape "
            f"{tuple(scores.shape)}"
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores: expected finite values (drop the unreadable images first)")
    centred = scores.double() - scores.double().mean(dim=1, keepdim=True)
    mean = centred.mean(dim=0, keepdim=True)
    std = centred.std(dim=0, keepdim=True)
    # constant up to the input's rounding (float32: ~1e-7 of its scale) counts as constant
    tol = 1e-6 * float(centred.abs().max()) + 1e-300
    return torch.where(std > tol, (centred - mean) / std.clamp_min(tol), 0.0)


def otsu_thresholds(values: torch.Tensor) -> torch.Tensor:
    """float64 (column,): per column of (row, column) values, the threshold between two sorted
    neighbours that maximises the between-group variance w0 w1 (mean1 - mean0)^2."""
    ordered = torch.sort(values.double(), dim=0).values
    n = ordered.shape[0]
    below = torch.cumsum(ordered, dim=0)[:-1]  # sums of the k smallest, k = 1..n-1
    k = torch.arange(1, n, dtype=torch.float64)[:, None]
    mean0 = below / k
    mean1 = (ordered.sum(dim=0, keepdim=True) - below) / (n - k)
    between = k * (n - k) * (mean1 - mean0) ** 2
    best = torch.argmax(between, dim=0)  # the first among equals
    columns = torch.arange(ordered.shape[1])
    return (ordered[best, columns] + ordered[best + 1, columns]) / 2


def pseudo_attributes(
    scores: torch.Tensor, names: Sequence[str], config: PseudoAttributeConfig | None = None
) -> ConceptMatrix:
    """The concepts each image shows, from float (image, concept) scores: a `ConceptMatrix` of
    the concepts that at least `min_images` images show and at least one does not."""
    config = config or PseudoAttributeConfig()
    if scores.dim() != 2 or scores.shape[1] != len(names):
        raise ValueError(
            f"scores: expected (image, concept) with {len(names)} concepts (one per name); got "
            f"shape {tuple(scores.shape)}"
        )
    shown = concept_margins(scores, config) > 0
    return filter_concepts(list(names), shown.T.contiguous(), min_count=config.min_images)


def concept_margins(
    scores: torch.Tensor, config: PseudoAttributeConfig | None = None
) -> torch.Tensor:
    """float64 (image, concept): how far each standardised score lies above what its concept
    needs (above its Otsu split and at least `min_z`); an image shows a concept exactly where
    its margin is positive. Every concept is kept (none is filtered), so a formula found on some
    images can be read, softly, on others (`coin_scale.eval.heldout_predictors`)."""
    config = config or PseudoAttributeConfig()
    z = standardized_scores(scores)
    split = otsu_thresholds(z)[None, :]
    # z > split and z >= min_z, as one signed distance: the smaller of the two margins, with
    # z == min_z (shown) nudged just above zero
    above_min = torch.where(
        z >= config.min_z, (z - config.min_z).clamp_min(1e-12), z - config.min_z
    )
    return torch.minimum(z - split, above_min)
