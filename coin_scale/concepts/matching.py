"""Matching units to concepts from image-concept similarities, without labels: the core of the
image-text (CLIP-Dissect style) explainer, pure torch, no model.

Inputs are two matrices over the same probe images: `similarity` (image, concept), an image-text
model's cosine similarity of every image with every concept's text, and `activations`
(image, unit), each unit's activation pooled to one value per image.

The matching function is soft-WPMI (Oikarinen & Weng, "CLIP-Dissect", ICLR 2023), chosen because
it scores a concept by how well it describes a unit's *top* images relative to how well it
describes the top images of every unit of the layer, so that a concept true of most photographs
("object", "photo") does not win every unit:

- `p(c | x) = softmax_c(temperature * similarity[x, c])`: how much image `x` is about concept `c`
  among the vocabulary.
- For unit `u`, its `top_k` most activating images `x_1..x_k` (strongest first) are each taken
  to show the unit's concept with a weight `w_r` falling linearly from `weight_first` to
  `weight_last` with rank. Then `log p(c | u) = sum_r log(1 - w_r (1 - p(c | x_r)))`: the
  log-probability that each top image "shows" `c`, where a weight below 1 keeps one image that
  does not show it from vetoing the concept.
- `log p(c)` is the mean over the layer's units of `p(c | u)` (a log-mean-exp), and
  `score(u, c) = log p(c | u) - lam * log p(c)`: weighted pointwise mutual information.

The unit's concept is the best-scoring one; the runners-up and the score margin are kept. `p(c)`
is taken over every unit passed in, so pass the whole layer even when explaining a few units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True, kw_only=True)
class MatchConfig:
    """Soft-WPMI's settings (the defaults are CLIP-Dissect's)."""

    top_k: int = 100
    """A unit's most activating probe images that describe it (fewer when the probe is smaller)."""
    temperature: float = 10.0
    """Sharpness of `p(c | x)`: similarities are multiplied by it before the softmax."""
    lam: float = 1.0
    """Weight of the concept's prior `log p(c)` (0: plain log-likelihood)."""
    weight_first: float = 0.998
    """How surely the strongest image shows the unit's concept."""
    weight_last: float = 0.97
    """How surely the k-th strongest image does."""
    floor: float = 1e-7
    """Added inside the log so that no concept's likelihood is exactly zero."""
    chunk_units: int = 64
    """Units scored at a time (memory: chunk x top_k x concepts floats)."""

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.chunk_units < 1:
            raise ValueError(f"top_k and chunk_units: expected >= 1; got {self.top_k}, {self.chunk_units}")
        if not 0.0 < self.weight_last <= self.weight_first <= 1.0:
            raise ValueError(
                "weights: expected 0 < weight_last <= weight_first <= 1; got "
                f"{self.weight_last}, {self.weight_first}"
            )
        if self.temperature <= 0 or self.lam < 0 or self.floor <= 0:
            raise ValueError("temperature and floor must be > 0 and lam >= 0")


@dataclass(frozen=True, kw_only=True)
class ConceptMatch:
    """The concepts that best describe one unit."""

    unit: int
    concepts: tuple[int, ...]
    """Indices of the best concepts, best first."""
    scores: tuple[float, ...]
    """Their soft-WPMI scores (nats)."""

    @property
    def margin(self) -> float:
        """How far the best concept is ahead of the runner-up (inf with a single concept)."""
        return self.scores[0] - self.scores[1] if len(self.scores) > 1 else math.inf


def _check(similarity: torch.Tensor, activations: torch.Tensor) -> None:
    if similarity.dim() != 2 or activations.dim() != 2:
        raise ValueError(
            f"similarity and activations: expected (image, concept) and (image, unit); got shapes "
            f"{tuple(similarity.shape)} and {tuple(activations.shape)}"
        )
    if similarity.shape[0] != activations.shape[0] or similarity.shape[0] == 0:
        raise ValueError(
            f"similarity has {similarity.shape[0]} images and activations {activations.shape[0]}: "
            "expected the same probe images, at least one"
        )
    if similarity.shape[1] == 0:
        raise ValueError("similarity has no concepts")
    for name, m in (("similarity", similarity), ("activations", activations)):
        if not bool(torch.isfinite(m).all()):
            raise ValueError(f"{name}: expected finite values")


def concept_log_likelihoods(
    similarity: torch.Tensor, activations: torch.Tensor, config: MatchConfig | None = None
) -> torch.Tensor:
    """float64 (unit, concept): `log p(c | u)` from each unit's top images (see the module doc).

    The per-image terms are computed in float32, in place (a whole layer against thousands of
    concepts is ~10^9 of them), and summed over the top images in float64."""
    config = config or MatchConfig()
    _check(similarity, activations)
    p_concept = torch.softmax(config.temperature * similarity.double(), dim=1).float()
    k = min(config.top_k, activations.shape[0])
    top = torch.topk(activations.double(), k, dim=0).indices  # (k, unit)
    ranks = torch.arange(k, dtype=torch.float64)
    weights = config.weight_first - ranks / max(k, 1) * (config.weight_first - config.weight_last)
    w = weights.float().view(k, 1, 1)
    out = []
    for start in range(0, activations.shape[1], config.chunk_units):
        rows = top[:, start : start + config.chunk_units]  # (k, chunk)
        shown = p_concept[rows]  # (k, chunk, concept), a copy: p(c | x_r)
        shown.sub_(1.0).mul_(w).add_(1.0 + config.floor).log_()  # log(1 - w (1 - p) + floor)
        out.append(shown.sum(dim=0, dtype=torch.float64))
    return torch.cat(out, dim=0)


def soft_wpmi(
    similarity: torch.Tensor, activations: torch.Tensor, config: MatchConfig | None = None
) -> torch.Tensor:
    """float64 (unit, concept): every unit's soft-WPMI score of every concept."""
    config = config or MatchConfig()
    log_given = concept_log_likelihoods(similarity, activations, config)
    log_prior = torch.logsumexp(log_given, dim=0, keepdim=True) - math.log(log_given.shape[0])
    return log_given - config.lam * log_prior


def match_concepts(
    similarity: torch.Tensor,
    activations: torch.Tensor,
    units: list[int] | None = None,
    *,
    keep: int = 3,
    config: MatchConfig | None = None,
) -> list[ConceptMatch]:
    """The best `keep` concepts of each unit in `units` (default all), scored over every unit of
    `activations` (the prior needs the whole layer). Ties go to the earlier concept."""
    scores = soft_wpmi(similarity, activations, config)
    chosen = list(range(scores.shape[0])) if units is None else list(units)
    keep = min(keep, scores.shape[1])
    matches = []
    for unit in chosen:
        # a stable sort on the negated scores keeps the earlier concept first among equals
        order = torch.sort(-scores[unit], stable=True).indices[:keep]
        matches.append(
            ConceptMatch(
                unit=unit,
                concepts=tuple(int(i) for i in order),
                scores=tuple(float(scores[unit, i]) for i in order),
            )
        )
    return matches
