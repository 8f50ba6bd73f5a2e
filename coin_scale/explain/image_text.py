"""The `clip` explainer: each unit gets the concept of a vocabulary whose image-text similarity
profile over the probe best matches the unit's activations (soft-WPMI,
`coin_scale.concepts.matching`), with its score and runners-up. No labels and no API key: any
folder of photographs is a probe.

The image-text model and the vocabulary are resolved when the explainer is made (a missing
weights file or an empty vocabulary stops the run before any work); the probe's image
embeddings and the vocabulary's text embeddings are cached (`coin_scale.models.image_text`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from coin_scale.concepts.matching import MatchConfig, match_concepts
from coin_scale.concepts.vocabulary import ALL_FOR_PHOTOS, Vocabulary, load_vocabulary
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.explanation import Explanation
from coin_scale.models.image_text import (
    DEFAULT_MODEL,
    ImageTextModel,
    ImageTextSource,
    concept_similarity,
    image_embeddings,
    text_embeddings,
)

log = logging.getLogger(__name__)

NAME = "clip"


@dataclass(frozen=True, kw_only=True)
class ClipExplainerConfig:
    """The image-text model, the vocabulary and the matching of the `clip` explainer."""

    model: str = DEFAULT_MODEL
    """open_clip architecture (`--clip-model`)."""
    weights: str = "default"
    """`--clip-weights`: default | none (random, tests only) | PATH."""
    concepts: str = ALL_FOR_PHOTOS
    """`--concepts`: a shipped vocabulary, `photo` (all of them), or a file (one concept a line)."""
    match: MatchConfig = field(default_factory=MatchConfig)
    runners_up: int = 2
    """Concepts kept after the best one, in the description."""


class ClipExplainer:
    """The `Explainer` of concept words matched through an image-text model."""

    name = NAME

    def __init__(self, config: ClipExplainerConfig | None = None) -> None:
        """Loads the vocabulary and the model now: `ValueError` on a bad file or weights."""
        self.config = config = config or ClipExplainerConfig()
        self.vocabulary: Vocabulary = load_vocabulary(config.concepts)
        self.model = ImageTextModel(ImageTextSource(model=config.model, weights=config.weights))

    def similarity(self, evidence: LayerEvidence) -> torch.Tensor:
        """(row, concept) similarities of the evidence's images (NaN rows: unreadable here)."""
        probe = evidence.probe
        paths = [image.path for image in probe.images]
        images = image_embeddings(self.model, paths, probe.probe_id)
        texts = text_embeddings(self.model, self.vocabulary.concepts, self.vocabulary.fingerprint)
        rows = torch.tensor(evidence.image_indices(), dtype=torch.long)
        return concept_similarity(images[rows], texts)

    def explain(self, evidence: LayerEvidence, units: Sequence[int]) -> list[Explanation]:
        sims = self.similarity(evidence)
        readable = ~torch.isnan(sims).any(dim=1)
        acts = evidence.activations[readable].float()
        sims = sims[readable]
        keep = 1 + self.config.runners_up
        matches = match_concepts(sims, acts, list(units), keep=keep, config=self.config.match)
        constant = acts.amax(0) == acts.amin(0)
        words = self.vocabulary.concepts
        out = []
        for m in matches:
            if bool(constant[m.unit]):
                out.append(Explanation(
                    unit=m.unit, explainer=NAME, status="empty", reason="constant",
                    description="Not explained: the unit's activation is the same on every probe image.",
                ))  # fmt: skip
                continue
            best, *others = m.concepts
            runners = ", ".join(f"{words[c]} ({s:.2f})" for c, s in zip(others, m.scores[1:], strict=True))
            out.append(Explanation(
                unit=m.unit, explainer=NAME, label=words[best], match=m.scores[0],
                description=(
                    f"Its top probe images match '{words[best]}' best (soft-WPMI {m.scores[0]:.2f} "
                    f"over {int(readable.sum())} images, {len(words)} concepts)"
                    + (f"; then {runners}" if runners else "") + "."
                ),
            ))  # fmt: skip
        return out
