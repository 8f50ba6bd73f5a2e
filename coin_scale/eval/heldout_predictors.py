"""Every explanation of a layer read as a predictor on its held-out images, and scored there
(`coin_scale.eval.heldout`).

What an explanation predicts on an image it never saw depends on what it is:

- a `clip` concept word: the word's image-text similarity with the image (the explainer's own
  concept scorer);
- a `clip-formula` formula over image-text pseudo-attributes: the formula read softly on the
  pseudo-attributes' margins (`coin_scale.concepts.pseudo.concept_margins`, computed over the
  explained and held-out images together, as the explainer's attributes were over the explained
  ones): a concept's margin above its split, AND the smaller of two, OR the larger, AND NOT the
  smaller of the left and minus the right. It is positive exactly where the 0/1 formula holds,
  which F1 reads;
- an `offline` formula over a labelled folder's labels: the formula on the held-out images'
  labels, 0/1;
- an LLM's free-text label: the label's image-text similarity, embedded as a text by the
  image-text model of `--clip-model` / `--clip-weights`; without one it is not scored, and the
  reason says what to pass.

The unit's threshold is its explanation's (the mask it was explained from) or, for explainers
that draw none, the 0.9 quantile of its activations over the explained images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from coin_scale.concepts.formula import Formula, Leaf, evaluate, parse_text
from coin_scale.concepts.pseudo import PseudoAttributeConfig, concept_margins
from coin_scale.eval.heldout import QUANTILE, HeldOutScore, score_predictor, unit_threshold
from coin_scale.explain.evidence import EvidenceSplit
from coin_scale.explain.explanation import Explanation
from coin_scale.explain.image_text import (
    FORMULA_NAME,
    NAME,
    ClipExplainer,
    ClipFormulaExplainer,
    ConceptScorer,
    LabelScorer,
)
from coin_scale.explain.registry import Explainer

NO_TEXT_MODEL = (
    "a free-text label needs an image-text model to be read on images: pass --clip-model / "
    "--clip-weights"
)


@dataclass(frozen=True, kw_only=True)
class Predictor:
    """An explanation's prediction on each held-out image."""

    kind: str
    """A key of `coin_scale.eval.heldout.PREDICTORS`."""
    values: np.ndarray
    """float (held-out image,); NaN where it cannot be read (an image the model could not)."""
    predicted: np.ndarray | None = None
    """bool (held-out image,): its own yes/no, where it has one (formulas)."""


@dataclass(frozen=True, kw_only=True)
class HeldOutSources:
    """What the predictors are read with, beside the held-out images' labels."""

    concepts: ConceptScorer | None = None
    """The image-text explainers' concept scorer (`clip`, `clip-formula`)."""
    attributes: PseudoAttributeConfig = field(default_factory=PseudoAttributeConfig)
    """How `clip-formula` turned similarities into pseudo-attributes."""
    labels: LabelScorer | None = None
    """The image-text model that reads free-text labels (an LLM's); None: they are not scored."""
    quantile: float = QUANTILE
    """A unit's threshold quantile where its explanation carries no threshold."""


class _Lazy:
    """Per-layer tables computed on first need, once."""

    def __init__(self, split: EvidenceSplit, sources: HeldOutSources) -> None:
        self.split, self.sources = split, sources
        self._similarities: torch.Tensor | None = None
        self._margins: torch.Tensor | None = None

    def similarities(self) -> torch.Tensor:
        """float (held-out row, concept) of the concept scorer."""
        if self._similarities is None:
            self._similarities = _scorer(self.sources).scores(self.split.held_out).double()
        return self._similarities

    def margins(self) -> torch.Tensor:
        """float64 (held-out row, concept) pseudo-attribute margins over all readable rows (NaN
        where the held-out image could not be read)."""
        if self._margins is None:
            scorer = _scorer(self.sources)
            held = self.similarities()
            both = torch.cat([scorer.scores(self.split.explain).double(), held])
            readable = ~torch.isnan(both).any(dim=1)
            margins = torch.full_like(both, float("nan"))
            margins[readable] = concept_margins(both[readable], self.sources.attributes)
            self._margins = margins[-held.shape[0] :]
        return self._margins


def _scorer(sources: HeldOutSources) -> ConceptScorer:
    if sources.concepts is None:
        raise ValueError("an image-text explainer's explanations need its concept scorer")
    return sources.concepts


def held_out_sources(explainer: Explainer | None, labels: LabelScorer | None) -> HeldOutSources:
    """What the predictors of `explainer`'s explanations are read with: an image-text
    explainer's concept scorer and attribute settings, and `labels` for free-text labels."""
    if isinstance(explainer, ClipExplainer | ClipFormulaExplainer):
        return HeldOutSources(
            concepts=explainer.scorer, attributes=explainer.config.attributes, labels=labels
        )
    return HeldOutSources(labels=labels)


def score_held_out(
    explanations: Sequence[Explanation], split: EvidenceSplit, sources: HeldOutSources
) -> dict[int, HeldOutScore]:
    """The held-out score (or why none) of every `ok` explanation, by unit."""
    lazy = _Lazy(split, sources)
    ok = [e for e in explanations if e.ok]
    texts = {e.unit: e.label for e in ok if _is_free_text(e)}
    text_values = _text_similarities(texts, split, sources)
    explain_acts = split.explain.activations.double().numpy()
    held_acts = split.held_out.activations.double().numpy()
    out: dict[int, HeldOutScore] = {}
    for e in ok:
        column = explain_acts[:, e.unit]
        threshold = e.threshold
        if threshold is None:
            threshold = unit_threshold(column, sources.quantile)
        share = float(np.mean(column > threshold))
        if e.unit in texts and text_values is None:
            out[e.unit] = HeldOutScore(
                predictor="text_similarity", n_images=int(held_acts.shape[0]),
                n_positive=int(np.sum(held_acts[:, e.unit] > threshold)),
                threshold=float(threshold), positive_share=share, reason="no_text_model",
                note=NO_TEXT_MODEL,
            )  # fmt: skip
            continue
        if e.unit in texts:
            assert text_values is not None
            predictor = Predictor(kind="text_similarity", values=text_values[e.unit])
        else:
            predictor = _predictor(e, split, lazy)
        out[e.unit] = score_predictor(
            predictor.values, held_acts[:, e.unit], threshold, positive_share=share,
            kind=predictor.kind, predicted=predictor.predicted,
        )  # fmt: skip
    return out


def _is_free_text(e: Explanation) -> bool:
    """A label that is neither a concept word of the image-text explainers nor a formula."""
    return e.explainer not in (NAME, FORMULA_NAME) and not e.formula


def _predictor(e: Explanation, split: EvidenceSplit, lazy: _Lazy) -> Predictor:
    """The predictor of an explanation that is a concept word or a formula."""
    if e.explainer == NAME:
        names = _scorer(lazy.sources).names
        return Predictor(
            kind="word_similarity", values=lazy.similarities()[:, names.index(e.label)].numpy()
        )
    if e.explainer == FORMULA_NAME:
        formula = parse_text(e.formula, _scorer(lazy.sources).names)
        margins = lazy.margins().T
        soft = soft_evaluate(formula, margins).numpy()
        shown = evaluate(formula, margins > 0).numpy()  # exact where a margin is 0 (ties)
        return Predictor(kind="soft_formula", values=soft, predicted=shown)
    concepts = split.held_out.concepts
    formula = parse_text(e.formula, concepts.names)
    hard = evaluate(formula, concepts.matrix).numpy()
    return Predictor(kind="formula", values=hard.astype(np.float64), predicted=hard)


def soft_evaluate(formula: Formula, margins: torch.Tensor) -> torch.Tensor:
    """float (image,): `formula` over float (concept, image) margins, positive where it holds:
    a leaf's margin, AND = min, OR = max, AND NOT = min(left, -right)."""
    if isinstance(formula, Leaf):
        return margins[formula.index]
    left, right = soft_evaluate(formula.left, margins), soft_evaluate(formula.right, margins)
    return _SOFT[formula.operator](left, right)


_SOFT: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "and": torch.minimum,
    "or": torch.maximum,
    "and_not": lambda a, b: torch.minimum(a, -b),
}
"""The soft form of every operator of `coin_scale.concepts.formula.OPERATORS`."""


def _text_similarities(
    texts: dict[int, str], split: EvidenceSplit, sources: HeldOutSources
) -> dict[int, np.ndarray] | None:
    """float (held-out row,) of each unit's free-text label; None without an image-text model."""
    if not texts or sources.labels is None:
        return None
    labels = list(dict.fromkeys(texts.values()))
    scores = sources.labels.scores(split.held_out, labels).double().numpy()
    return {unit: scores[:, labels.index(label)] for unit, label in texts.items()}
