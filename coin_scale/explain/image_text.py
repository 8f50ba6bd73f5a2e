"""The image-text explainers: concept words scored against every probe image, no labels and no
API key, so any folder of photographs is a probe.

- `clip` (`ClipExplainer`): each unit gets the concept whose similarity profile over the probe
  best matches its activations (soft-WPMI, `coin_scale.concepts.matching`), with its score and
  runners-up.
- `clip-formula` (`ClipFormulaExplainer`): the scores become per-image pseudo-attributes
  (`coin_scale.concepts.pseudo`) and the offline explainer's beam search finds AND / OR / AND NOT
  formulas over them ("dog and grass, not indoor"), scored by IoU like a rendered-probe formula.

Both read their scores from a `ConceptScorer`: in production `ImageTextScorer` (an open_clip
model and a vocabulary, resolved when the explainer is made, so a missing weights file or an
empty vocabulary stops the run before any work; embeddings cached by
`coin_scale.models.image_text`, the probe's images encoded on image-text replicas when the driver
passes `open_encoders`); in `coin-scale eval synthetic`, a stand-in that reads concept
probabilities from rendered scenes' pixels (`coin_scale.eval.stand_in`), where the truth is known.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from coin_scale.concepts.matching import MatchConfig, match_concepts
from coin_scale.concepts.pseudo import PseudoAttributeConfig, pseudo_attributes
from coin_scale.concepts.vocabulary import ALL_FOR_PHOTOS, Vocabulary, load_vocabulary
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.explanation import Explanation
from coin_scale.explain.offline import OfflineExplainerConfig, explain_units
from coin_scale.models.image_text import (
    DEFAULT_MODEL,
    ImageTextModel,
    ImageTextSource,
    OpenEncoders,
    concept_similarity,
    image_embeddings,
    text_embeddings,
)

log = logging.getLogger(__name__)

NAME = "clip"
FORMULA_NAME = "clip-formula"
IMAGE_TEXT_EXPLAINERS = (NAME, FORMULA_NAME)
"""The explainers that read concepts from an image-text model (`--clip-*`, `--concepts`)."""

FORMULA_CHUNK = 128
"""Units whose formulas are searched at a time (memory: chunk x beam x concepts scores)."""

FORMULA_MIN_IOU_GAIN = 0.02
"""`clip-formula`'s beam search adds a concept only when it raises the IoU by more than this.
Pseudo-attributes are noisy (an image the scorer finds ambiguous shows two shapes), and without
a minimum gain the search appends an `AND NOT` that removes a few such images from a correct
formula. Chosen on `eval synthetic --seed 0` (0.63 -> 0.84 exact; seeds 1-3, untuned: see
BENCHMARKS.md); it costs some `AND NOT` units whose negated concept removes few images."""


@dataclass(frozen=True, kw_only=True)
class ClipExplainerConfig:
    """The image-text model, the vocabulary and how units are matched to it (both explainers)."""

    model: str = DEFAULT_MODEL
    """open_clip architecture (`--clip-model`)."""
    weights: str = "default"
    """`--clip-weights`: default | none (random, tests only) | PATH."""
    concepts: str = ALL_FOR_PHOTOS
    """`--concepts`: a shipped vocabulary, `photo` (all of them), or a file (one concept a line)."""
    match: MatchConfig = field(default_factory=MatchConfig)
    """`clip`: soft-WPMI's settings."""
    runners_up: int = 2
    """`clip`: concepts kept after the best one, in the description."""
    attributes: PseudoAttributeConfig = field(default_factory=PseudoAttributeConfig)
    """`clip-formula`: how the scores become per-image yes/no concepts."""
    search: OfflineExplainerConfig = field(
        default_factory=lambda: OfflineExplainerConfig(min_iou_gain=FORMULA_MIN_IOU_GAIN)
    )
    """`clip-formula`: the beam search (formula length, beam, the unit's mask quantile, the
    minimum IoU gain of an added concept)."""


class ConceptScorer(Protocol):
    """Scores every probe image of a layer's evidence against every concept of a vocabulary."""

    names: tuple[str, ...]
    """The concepts, in score-column order."""
    summary: str
    """What scores them, for descriptions: `open_clip ViT-B-32`."""

    def scores(self, evidence: LayerEvidence) -> torch.Tensor:
        """float (row, concept) over the evidence's rows; a NaN row: an image it could not read."""
        ...


def _probe_embeddings(
    model: ImageTextModel, evidence: LayerEvidence, open_encoders: OpenEncoders | None
) -> torch.Tensor:
    """(probe image, dim) embeddings of the evidence's whole probe (cached, so the held-out
    images cost nothing later), on image-text replicas when `open_encoders` is given."""
    probe = evidence.probe
    paths = [image.path for image in probe.images]
    return image_embeddings(
        model, paths, probe.probe_id, open_encoders=open_encoders, progress=open_encoders is not None
    )


class ImageTextScorer:
    """Cosine similarity of an open_clip model's image and text embeddings (both cached)."""

    def __init__(
        self, model: ImageTextModel, vocabulary: Vocabulary, open_encoders: OpenEncoders | None = None
    ) -> None:
        """`open_encoders`: where the probe's images are encoded (image-text replicas on Ray,
        from the driver); None: in this process."""
        self.model = model
        self.vocabulary = vocabulary
        self.open_encoders = open_encoders
        self.names = tuple(vocabulary.concepts)
        self.summary = f"open_clip {model.arch}"

    def scores(self, evidence: LayerEvidence) -> torch.Tensor:
        images = _probe_embeddings(self.model, evidence, self.open_encoders)
        texts = text_embeddings(self.model, self.vocabulary.concepts, self.vocabulary.fingerprint)
        rows = torch.tensor(evidence.image_indices(), dtype=torch.long)
        return concept_similarity(images[rows], texts)


class LabelScorer:
    """Free-text labels (an LLM's) scored against probe images: the cosine similarity of each
    label's text embedding with every image's, by an open_clip model (both cached)."""

    def __init__(self, model: ImageTextModel, open_encoders: OpenEncoders | None = None) -> None:
        self.model = model
        self.open_encoders = open_encoders
        self.summary = f"open_clip {model.arch}"

    def scores(self, evidence: LayerEvidence, labels: Sequence[str]) -> torch.Tensor:
        """float (row, label) over the evidence's rows; a NaN row: an image it could not read."""
        images = _probe_embeddings(self.model, evidence, self.open_encoders)
        fingerprint = hashlib.blake2b("\n".join(labels).encode(), digest_size=16).hexdigest()
        texts = text_embeddings(self.model, list(labels), fingerprint)
        rows = torch.tensor(evidence.image_indices(), dtype=torch.long)
        return concept_similarity(images[rows], texts)


def label_scorer(config: ClipExplainerConfig, open_encoders: OpenEncoders | None = None) -> LabelScorer:
    """The image-text model of `config` (its vocabulary unused), loaded now: `ValueError` on bad
    weights."""
    source = ImageTextSource(model=config.model, weights=config.weights)
    return LabelScorer(ImageTextModel(source), open_encoders)


def image_text_scorer(
    config: ClipExplainerConfig, open_encoders: OpenEncoders | None = None
) -> ImageTextScorer:
    """The vocabulary and the model of `config`, loaded now: `ValueError` on a bad file or weights."""
    vocabulary = load_vocabulary(config.concepts)
    source = ImageTextSource(model=config.model, weights=config.weights)
    return ImageTextScorer(ImageTextModel(source), vocabulary, open_encoders)


def _readable(evidence: LayerEvidence, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, float activations) of the rows the scorer could read."""
    readable = ~torch.isnan(scores).any(dim=1)
    return scores[readable], evidence.activations[readable].float()


def _constant(unit: int, explainer: str) -> Explanation:
    return Explanation(
        unit=unit, explainer=explainer, status="empty", reason="constant",
        description="Not explained: the unit's activation is the same on every probe image.",
    )  # fmt: skip


class ClipExplainer:
    """The `Explainer` of one concept word per unit, matched by soft-WPMI."""

    name = NAME

    def __init__(
        self, config: ClipExplainerConfig | None = None, scorer: ConceptScorer | None = None
    ) -> None:
        """Loads the vocabulary and the model now (unless `scorer` is given): `ValueError` on a
        bad file or weights."""
        self.config = config = config or ClipExplainerConfig()
        self.scorer: ConceptScorer = scorer or image_text_scorer(config)

    def explain(self, evidence: LayerEvidence, units: Sequence[int]) -> list[Explanation]:
        sims, acts = _readable(evidence, self.scorer.scores(evidence))
        keep = 1 + self.config.runners_up
        matches = match_concepts(sims, acts, list(units), keep=keep, config=self.config.match)
        constant = acts.amax(0) == acts.amin(0)
        words = self.scorer.names
        out = []
        for m in matches:
            if bool(constant[m.unit]):
                out.append(_constant(m.unit, NAME))
                continue
            best, *others = m.concepts
            runners = ", ".join(f"{words[c]} ({s:.2f})" for c, s in zip(others, m.scores[1:], strict=True))
            out.append(Explanation(
                unit=m.unit, explainer=NAME, label=words[best], match=m.scores[0],
                description=(
                    f"Its top probe images match '{words[best]}' best (soft-WPMI {m.scores[0]:.2f} "
                    f"over {sims.shape[0]} images, {len(words)} concepts, {self.scorer.summary})"
                    + (f"; then {runners}" if runners else "") + "."
                ),
            ))  # fmt: skip
        return out


class ClipFormulaExplainer:
    """The `Explainer` of AND / OR / AND NOT formulas over image-text pseudo-attributes."""

    name = FORMULA_NAME

    def __init__(
        self, config: ClipExplainerConfig | None = None, scorer: ConceptScorer | None = None
    ) -> None:
        """Loads the vocabulary and the model now (unless `scorer` is given)."""
        self.config = config = config or ClipExplainerConfig()
        self.scorer: ConceptScorer = scorer or image_text_scorer(config)

    def explain(self, evidence: LayerEvidence, units: Sequence[int]) -> list[Explanation]:
        sims, acts = _readable(evidence, self.scorer.scores(evidence))
        concepts = pseudo_attributes(sims, self.scorer.names, self.config.attributes)
        units = list(units)
        if concepts.n_concepts == 0:
            return [
                Explanation(
                    unit=u, explainer=FORMULA_NAME, status="empty", reason="no_concepts",
                    description=(
                        f"Not explained: no concept of {len(self.scorer.names)} stands out on "
                        f"between {self.config.attributes.min_images} and all but one of the "
                        f"{sims.shape[0]} probe images ({self.scorer.summary})."
                    ),
                )  # fmt: skip
                for u in units
            ]
        source = (
            f"concepts from {self.scorer.summary}: an image shows a word when its standardised "
            f"similarity is above the word's Otsu split and {self.config.attributes.min_z:g} std "
            f"({concepts.n_concepts} of {len(self.scorer.names)} words tell the images apart)"
        )
        out: list[Explanation] = []
        for start in range(0, len(units), FORMULA_CHUNK):
            piece = units[start : start + FORMULA_CHUNK]
            found = explain_units(acts[:, piece], concepts, self.config.search)
            for unit, e in zip(piece, found, strict=True):
                description = e.description if not e.ok else f"{e.description[:-1]}; {source}."
                out.append(replace(e, unit=unit, explainer=FORMULA_NAME, description=description))
        return out


def image_text_explainer(
    name: str,
    config: ClipExplainerConfig | None = None,
    scorer: ConceptScorer | None = None,
    *,
    open_encoders: OpenEncoders | None = None,
) -> ClipExplainer | ClipFormulaExplainer:
    """The image-text explainer registered as `name` (`clip` or `clip-formula`); without a
    `scorer`, `config`'s model and vocabulary, the probe's images encoded on the replicas
    `open_encoders` starts (in this process without it)."""
    if scorer is None and name in IMAGE_TEXT_EXPLAINERS:
        scorer = image_text_scorer(config or ClipExplainerConfig(), open_encoders)
    if name == NAME:
        return ClipExplainer(config, scorer)
    if name == FORMULA_NAME:
        return ClipFormulaExplainer(config, scorer)
    raise ValueError(f"explainer {name!r}: expected one of {', '.join(IMAGE_TEXT_EXPLAINERS)}")
