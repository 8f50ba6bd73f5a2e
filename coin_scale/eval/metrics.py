"""Label accuracy: how close an explainer's formula is to a synthetic unit's true formula.

Pure functions over formulas and concept names:

- exact match: equal `canonical_text` (the same formula up to the order of commutative operands);
- same images: the two formulas cover the same probe images (a weaker, probe-dependent match:
  `size=large AND light=dim` and `light=dim AND NOT size=small AND NOT size=medium` agree);
- concept precision, recall and F1: between the sets of concepts (leaves) of the predicted and
  the true formula, ignoring operators and negation (`a AND NOT b` vs `a AND b` scores 1.0; the
  exact match tells them apart).

An unexplained unit (no predicted formula) scores False, False and 0.0 on everything.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from coin_scale.concepts.formula import Formula, Leaf, canonical_text, evaluate, to_text
from coin_scale.concepts.synthetic import FORMULA_KINDS

ALL = "all"
"""`KindSummary.kind` of the row over every unit."""


@dataclass(frozen=True, kw_only=True)
class UnitScore:
    """How one unit's predicted formula compares with its true one."""

    name: str
    """The synthetic unit's name."""
    kind: str
    """The true formula's kind: `mono`, `or`, `and` or `and_not`."""
    true_formula: str
    """The true formula, machine form (`to_text`)."""
    predicted_formula: str
    """The explainer's formula, machine form; "" when it explained nothing (see `status`)."""
    status: str
    """The explanation's status: `ok`, `empty` or `failed` (`coin_scale.explain.explanation`)."""
    reason: str | None = None
    """Why the status is not `ok` (`no_overlap`, `parse_failure`, ...)."""
    exact: bool
    """Same canonical formula."""
    same_images: bool
    """Same probe images covered."""
    precision: float
    """Share of the predicted formula's concepts that are in the true one; 0.0 when none."""
    recall: float
    """Share of the true formula's concepts that the predicted one names."""
    f1: float
    """Harmonic mean of precision and recall; 0.0 when both are 0."""
    iou: float
    """The explainer's IoU between its formula's images and the unit's mask."""
    label: str = ""
    """The explainer's words: the formula in words, or an LLM agent's own label (which the
    matcher read as `predicted_formula`)."""


@dataclass(frozen=True, kw_only=True)
class KindSummary:
    """Label accuracy over the units of one kind (or all of them): shares and means."""

    kind: str
    """`mono`, `or`, `and`, `and_not`, or `all`."""
    n: int
    """Units."""
    exact: float
    """Share of exact matches."""
    same_images: float
    """Share of predictions covering the same probe images as the truth."""
    precision: float
    """Mean concept precision over the units."""
    recall: float
    """Mean concept recall."""
    f1: float
    """Mean concept F1."""
    mean_iou: float
    """Mean explainer IoU."""


def concept_set(formula: Formula, names: Sequence[str]) -> frozenset[str]:
    """The names of the concepts a formula mentions (its leaves), negated or not."""
    if isinstance(formula, Leaf):
        return frozenset((names[formula.index],))
    return concept_set(formula.left, names) | concept_set(formula.right, names)


def concept_prf(predicted: Collection[str], true: Collection[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of the predicted concepts against the true ones; a side that is
    empty gives 0.0 for the ratios over it (and F1 0.0 when precision + recall is 0)."""
    hits = len(set(predicted) & set(true))
    precision = hits / len(set(predicted)) if predicted else 0.0
    recall = hits / len(set(true)) if true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def exact_match(predicted: Formula | None, true: Formula, names: Sequence[str]) -> bool:
    """Whether the formulas are equal up to the order of commutative operands."""
    return predicted is not None and canonical_text(predicted, names) == canonical_text(true, names)


def covers_same_images(predicted: Formula | None, true: Formula, matrix: torch.Tensor) -> bool:
    """Whether the formulas cover the same images of the bool (concept, image) matrix."""
    return predicted is not None and bool(
        torch.equal(evaluate(predicted, matrix), evaluate(true, matrix))
    )


def score_unit(
    *,
    name: str,
    kind: str,
    true: Formula,
    predicted: Formula | None,
    names: Sequence[str],
    matrix: torch.Tensor,
    status: str,
    iou: float,
    label: str = "",
    reason: str | None = None,
) -> UnitScore:
    """The scores of one unit; `predicted` None when the explainer gave no formula."""
    predicted_concepts = concept_set(predicted, names) if predicted is not None else frozenset()
    precision, recall, f1 = concept_prf(predicted_concepts, concept_set(true, names))
    return UnitScore(
        name=name,
        kind=kind,
        true_formula=to_text(true, names),
        predicted_formula=to_text(predicted, names) if predicted is not None else "",
        status=status,
        reason=reason,
        exact=exact_match(predicted, true, names),
        same_images=covers_same_images(predicted, true, matrix),
        precision=precision,
        recall=recall,
        f1=f1,
        iou=iou,
        label=label,
    )


def summarize(
    scores: Sequence[UnitScore], kinds: Sequence[str] = FORMULA_KINDS
) -> tuple[KindSummary, ...]:
    """One row per kind present (in `kinds` order, then any other), then the `all` row."""
    present = [k for k in kinds if any(s.kind == k for s in scores)]
    present += sorted({s.kind for s in scores} - set(present))
    rows = [_summary(k, [s for s in scores if s.kind == k]) for k in present]
    return (*rows, _summary(ALL, list(scores)))


def _summary(kind: str, scores: list[UnitScore]) -> KindSummary:
    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else 0.0

    return KindSummary(
        kind=kind,
        n=len(scores),
        exact=mean([float(s.exact) for s in scores]),
        same_images=mean([float(s.same_images) for s in scores]),
        precision=mean([s.precision for s in scores]),
        recall=mean([s.recall for s in scores]),
        f1=mean([s.f1 for s in scores]),
        mean_iou=mean([s.iou for s in scores]),
    )
