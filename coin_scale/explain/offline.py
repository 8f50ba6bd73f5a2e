"""Offline compositional explanations of units (Mu & Andreas 2020), at image level.

Each unit's mask is the set of probe images on which it fires above its own `quantile`; beam
search looks for the formula over concepts whose images best match that mask by IoU. Everything
is scored for all units and all candidate formulas at once with matrix products: for a beam
formula F, a concept C and a unit mask M, every operator's |M & op(F, C)| and |op(F, C)| follow
from |M & F|, |M & C|, |M & F & C|, |F|, |C| and |F & C| (`Operator.measure`).

Tie-breaking is deterministic: among equal IoUs the earlier candidate wins, candidates being
ordered (beam formulas kept from the last step, then extensions by beam rank, operator order in
the config, concept index). Candidates covering the same images as a better-ranked one are
dropped, so a beam holds distinct image sets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from coin_scale.concepts.formula import (
    OPERATORS,
    Formula,
    Leaf,
    Operator,
    get_operator,
    to_text,
    to_words,
)
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.explain.explanation import Explanation

if TYPE_CHECKING:
    from coin_scale.explain.evidence import LayerEvidence

log = logging.getLogger(__name__)

_FINGERPRINT_SEED = 0x5EED
_FINGERPRINT_MAX = 2**31
"""Random integer weights per image; sums over <= 2**22 images stay exact in float64."""


@dataclass(frozen=True, kw_only=True)
class OfflineExplainerConfig:
    """Beam search over formulas of concepts."""

    beam_size: int = 5
    """Formulas kept per unit after each step."""
    max_length: int = 3
    """Most concepts (leaves) in a formula; 1 gives the best single concept."""
    quantile: float = 0.9
    """A unit's mask is its images with activation above this quantile of its activations over
    the probe images (image level: lower than NetDissect's pixel-level 0.995)."""
    min_iou_gain: float = 0.0
    """An extension is a candidate only if its IoU exceeds its parent's by more than this."""
    operators: tuple[str, ...] = ("and", "or", "and_not")
    """Operators that extend a formula, by `OPERATORS` name; their order breaks ties."""

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size: expected >= 1; got {self.beam_size}. Fix: e.g. 5.")
        if self.max_length < 1:
            raise ValueError(f"max_length: expected >= 1; got {self.max_length}. Fix: e.g. 3.")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile: expected in (0, 1); got {self.quantile}. Fix: e.g. 0.9.")
        if self.min_iou_gain < 0.0:
            raise ValueError(
                f"min_iou_gain: expected >= 0; got {self.min_iou_gain}. Fix: 0.0 or more."
            )
        for name in self.operators:
            get_operator(name)
        if len(set(self.operators)) != len(self.operators):
            raise ValueError(
                f"operators: expected distinct names; got {self.operators}. Fix: list each once."
            )
        if self.max_length > 1 and not self.operators:
            raise ValueError(
                f"operators: expected at least one with max_length={self.max_length} > 1; got "
                "none. Fix: add operators or set max_length=1."
            )


def unit_masks(activations: torch.Tensor, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(bool (image, unit) masks, float (unit,) thresholds): activation > per-unit quantile."""
    acts = activations.float()
    thresholds = torch.quantile(acts, quantile, dim=0)
    return acts > thresholds, thresholds


def _fingerprint_weights(n_images: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_FINGERPRINT_SEED)
    return torch.randint(1, _FINGERPRINT_MAX, (n_images,), generator=generator).double()


@dataclass(frozen=True, kw_only=True)
class _Beam:
    """Beam state of every unit after one step (slot order = rank)."""

    masks: torch.Tensor
    """bool (unit, beam, image)."""
    iou: torch.Tensor
    """float64 (unit, beam); -inf in empty slots."""
    fingerprint: torch.Tensor
    """float64 (unit, beam): weighted image count, equal for equal image sets."""
    parent: torch.Tensor
    """int64 (unit, beam): slot in the previous beam this formula extends or keeps."""
    op: torch.Tensor
    """int64 (unit, beam): index into the config's operators, -1 when kept unchanged."""
    concept: torch.Tensor
    """int64 (unit, beam): the added (or, at step 0, the only) concept."""


def _iou(inter: torch.Tensor, size: torch.Tensor, mask_size: torch.Tensor) -> torch.Tensor:
    union = mask_size + size - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def _select(
    score: torch.Tensor, fingerprint: torch.Tensor, beam_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the first `beam_size` candidates by score (stable), skipping repeated image sets.

    score, fingerprint: (unit, candidate). Returns (int64 (unit, beam) candidate indices,
    bool (unit, beam) filled)."""
    n_units, n_candidates = score.shape
    order = torch.sort(-score, dim=1, stable=True).indices
    valid = score.gather(1, order) > float("-inf")
    fp_sorted = fingerprint.gather(1, order)
    # equal image sets are adjacent after a stable sort by fingerprint, best-ranked first
    by_fp = torch.sort(fp_sorted, dim=1, stable=True)
    repeat = torch.zeros_like(valid)
    repeat[:, 1:] = by_fp.values[:, 1:] == by_fp.values[:, :-1]
    duplicate = torch.zeros_like(valid).scatter(1, by_fp.indices, repeat)
    keep = valid & ~duplicate
    # kept candidates first, each group by rank: deterministic even for unfilled slots
    rank = torch.arange(n_candidates, 0, -1, dtype=torch.float64)
    key = keep.double() * (n_candidates + 1) + rank
    slots = min(beam_size, n_candidates)
    picked = torch.topk(key, slots, dim=1).indices.sort(dim=1).values
    filled = keep.gather(1, picked)
    chosen = order.gather(1, picked)
    if slots < beam_size:
        pad = beam_size - slots
        chosen = torch.cat([chosen, chosen[:, :1].expand(n_units, pad)], dim=1)
        filled = torch.cat([filled, torch.zeros(n_units, pad, dtype=torch.bool)], dim=1)
    return chosen, filled


def _first_beam(
    masks_f: torch.Tensor, concepts: torch.Tensor, weights: torch.Tensor, beam_size: int
) -> _Beam:
    n_units = masks_f.shape[0]
    concepts_f = concepts.float()
    inter = (masks_f @ concepts_f.T).double()
    iou = _iou(inter, concepts_f.sum(1).double()[None, :], masks_f.sum(1).double()[:, None])
    fp = (concepts.double() @ weights)[None, :].expand(n_units, -1)
    chosen, filled = _select(iou, fp, beam_size)
    return _Beam(
        masks=concepts[chosen],
        iou=torch.where(filled, iou.gather(1, chosen), float("-inf")),
        fingerprint=fp.gather(1, chosen),
        parent=torch.zeros_like(chosen),
        op=torch.full_like(chosen, -1),
        concept=chosen,
    )


def _extend(
    beam: _Beam,
    masks_f: torch.Tensor,
    concepts: torch.Tensor,
    weights: torch.Tensor,
    operators: tuple[Operator, ...],
    config: OfflineExplainerConfig,
) -> _Beam:
    """One beam-search step for every unit at once."""
    n_units, beam_size, n_images = beam.masks.shape
    n_concepts = concepts.shape[0]
    concepts_f = concepts.float()
    f = beam.masks.float()  # (unit, beam, image)
    mf_masks = f * masks_f[:, None, :]
    flat = (n_units * beam_size, n_images)
    fc = (f.reshape(flat) @ concepts_f.T).reshape(n_units, beam_size, n_concepts).double()
    mfc = (mf_masks.reshape(flat) @ concepts_f.T).reshape(n_units, beam_size, n_concepts).double()
    fp_fc = (beam.masks.reshape(flat).double() @ (concepts.double() * weights).T).reshape(
        n_units, beam_size, n_concepts
    )
    mf = mf_masks.sum(-1).double()[:, :, None]
    f_size = f.sum(-1).double()[:, :, None]
    mc = (masks_f @ concepts_f.T).double()[:, None, :]
    c_size = concepts_f.sum(1).double()[None, None, :]
    c_fp = (concepts.double() @ weights)[None, None, :]
    m_size = masks_f.sum(1).double()[:, None, None]
    fp = beam.fingerprint[:, :, None]

    scores, fps = [], []
    for op in operators:  # a handful of operators, each over all units x beams x concepts
        inter = op.measure(mf, mc, mfc)
        size = op.measure(f_size, c_size, fc)
        scores.append(_iou(inter, size, m_size))
        fps.append(op.measure(fp.expand_as(fp_fc), c_fp.expand_as(fp_fc), fp_fc))
    score = torch.stack(scores, dim=2)  # (unit, beam, op, concept)
    parent_iou = beam.iou[:, :, None, None]
    improves = (score > parent_iou + config.min_iou_gain) & (parent_iou > float("-inf"))
    score = torch.where(improves, score, float("-inf"))
    all_scores = torch.cat([beam.iou, score.reshape(n_units, -1)], dim=1)
    all_fps = torch.cat([beam.fingerprint, torch.stack(fps, dim=2).reshape(n_units, -1)], dim=1)
    chosen, filled = _select(all_scores, all_fps, beam_size)

    kept = chosen < beam_size
    ext = (chosen - beam_size).clamp(min=0)
    per_beam = len(operators) * n_concepts
    parent = torch.where(kept, chosen, ext // per_beam)
    op_index = torch.where(kept, -1, (ext // n_concepts) % len(operators))
    concept = torch.where(kept, 0, ext % n_concepts)
    parent_masks = beam.masks.gather(1, parent[:, :, None].expand(-1, -1, n_images))
    concept_masks = concepts[concept]
    masks = parent_masks
    for index, op in enumerate(operators):
        combined = op.combine(parent_masks, concept_masks)
        masks = torch.where((op_index == index)[:, :, None], combined, masks)
    return _Beam(
        masks=masks,
        iou=torch.where(filled, all_scores.gather(1, chosen), float("-inf")),
        fingerprint=all_fps.gather(1, chosen),
        parent=parent,
        op=op_index,
        concept=concept,
    )


def _formula(steps: list[_Beam], unit: int, slot: int, operators: tuple[Operator, ...]) -> Formula:
    """Rebuild the formula in `slot` of the last step by walking the parents back."""
    chain: list[tuple[int, int]] = []
    for step in reversed(steps[1:]):
        op = int(step.op[unit, slot])
        if op >= 0:
            chain.append((op, int(step.concept[unit, slot])))
        slot = int(step.parent[unit, slot])
    formula: Formula = Leaf(int(steps[0].concept[unit, slot]))
    for op, concept in reversed(chain):
        formula = operators[op].node(formula, Leaf(concept))
    return formula


def search_formulas(
    masks: torch.Tensor, concepts: ConceptMatrix, config: OfflineExplainerConfig
) -> tuple[list[Formula], torch.Tensor]:
    """Best formula and its IoU for every unit mask: bool (unit, image) -> (formulas, (unit,))."""
    operators = tuple(OPERATORS[name] for name in config.operators)
    weights = _fingerprint_weights(concepts.n_images)
    masks_f = masks.float()
    steps = [_first_beam(masks_f, concepts.matrix, weights, config.beam_size)]
    for _ in range(config.max_length - 1):
        steps.append(_extend(steps[-1], masks_f, concepts.matrix, weights, operators, config))
    best = [_formula(steps, unit, 0, operators) for unit in range(masks.shape[0])]
    return best, steps[-1].iou[:, 0]


def _describe(
    label: str, iou: float, mask_size: int, n_images: int, quantile: float, reason: str | None
) -> str:
    top = f"{mask_size} of {n_images} probe images above its {quantile:g} quantile"
    if reason == "constant":
        return (
            f"Not explained: the unit's activation is the same on all {n_images} probe images, "
            "so no image stands out."
        )
    if reason == "empty_mask":
        return (
            f"Not explained: no probe image (of {n_images}) is above the unit's {quantile:g} "
            "quantile (too many ties at its top activation)."
        )
    if reason == "no_overlap":
        return f"Not explained: no concept shares an image with the unit's {top}."
    return f"Fires on {label} (IoU {iou:.2f} with its {top})."


def explain_units(
    activations: torch.Tensor, concepts: ConceptMatrix, config: OfflineExplainerConfig
) -> list[Explanation]:
    """One explanation per unit from float (image, unit) activations over the probe images."""
    if activations.dim() != 2 or activations.shape[0] != concepts.n_images:
        raise ValueError(
            f"activations: expected (image, unit) with {concepts.n_images} images (the concept "
            f"matrix's); got shape {tuple(activations.shape)}. Fix: pool each unit to one value "
            "per image, in probe order."
        )
    if not activations.is_floating_point() or not bool(torch.isfinite(activations).all()):
        raise ValueError(
            f"activations: expected finite floats; got {activations.dtype} with "
            f"{int((~torch.isfinite(activations.float())).sum())} non-finite values. Fix: "
            "check the model's outputs for NaN/inf."
        )
    if concepts.n_concepts == 0:
        raise ValueError(
            "concepts: expected at least one concept; got none. Fix: see concepts_from_probe."
        )
    acts = activations.detach().cpu().float()
    masks, thresholds = unit_masks(acts, config.quantile)
    masks = masks.T.contiguous()  # (unit, image)
    constant = acts.amax(0) == acts.amin(0)
    formulas, ious = search_formulas(masks, concepts, config)
    mask_sizes = masks.sum(1).tolist()
    results = []
    for unit, formula in enumerate(formulas):
        iou = float(ious[unit])
        size = int(mask_sizes[unit])
        reason: str | None = None
        if bool(constant[unit]):
            reason = "constant"
        elif size == 0:
            reason = "empty_mask"
        elif not iou > 0.0:
            reason = "no_overlap"
        label = to_words(formula, concepts.names) if reason is None else ""
        results.append(
            Explanation(
                unit=unit,
                explainer="offline",
                status="ok" if reason is None else "empty",
                reason=reason,
                formula=to_text(formula, concepts.names) if reason is None else "",
                label=label,
                description=_describe(label, iou, size, concepts.n_images, config.quantile, reason),
                iou=iou if reason is None else None,
                mask_size=size,
                threshold=float(thresholds[unit]),
            )
        )
    return results


class OfflineExplainer:
    """The `Explainer` of compositional formulas over the probe's concepts (no network)."""

    name = "offline"

    def __init__(self, config: OfflineExplainerConfig | None = None) -> None:
        self.config = config or OfflineExplainerConfig()

    def explain(self, evidence: LayerEvidence, units: Sequence[int]) -> list[Explanation]:
        """One explanation per unit of `units`, from the evidence's activations and concepts."""
        units = list(units)
        found = explain_units(evidence.activations[:, units], evidence.concepts, self.config)
        return [replace(e, unit=u) for u, e in zip(units, found, strict=True)]
