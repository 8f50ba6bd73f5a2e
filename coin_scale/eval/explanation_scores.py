"""Score explanations on a model: for each unit whose explanation is a formula over rendered
attributes, its predictive score (AUC, Cohen's d) and its InterpScore (S, C, R; H needs human
ratings, which a model run does not have), measured on a set of rendered images the explainer
never saw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from coin_scale.chain.attribution import pooled_linear_head
from coin_scale.chain.units import UnitView, as_view, pool_units
from coin_scale.concepts.formula import parse_text
from coin_scale.eval.interpscore import (
    InterpScore,
    InterpWeights,
    causality,
    interp_score,
    relative_change,
    selectivity,
    stability,
)
from coin_scale.eval.interventions import perturbed, scaled_logits
from coin_scale.eval.predictive import PredictiveScore, predictive_score, satisfies
from coin_scale.models.layers import Layout
from coin_scale.models.preprocess import Preprocess
from coin_scale.probe.scoring_set import ScoringSet

MIN_IMAGES = 8
"""Fewest satisfying (and other) images for a score; below it the unit gets a note instead."""

CAUSAL_IMAGES = 16
"""Satisfying images on which the unit is ablated and amplified (C)."""

BATCH = 64

NO_HUMANS = "H not measured: no human ratings in a model run"


@dataclass(frozen=True)
class UnitScores:
    """One explained unit's scores, or why it has none."""

    layer: str
    unit: int
    formula: str | None
    predictive: PredictiveScore | None = None
    interp: InterpScore | None = None
    note: str | None = None
    formula_source: str = "explainer"
    """'explainer' (its own formula) or 'matcher' (read from a free-text label by
    `coin_scale.eval.matcher`)."""


def score_explanations(
    module: nn.Module,
    layer: str,
    units_of: Layout | UnitView,
    preprocess: Preprocess,
    explained: Sequence[tuple[int, str | None]],
    scoring: ScoringSet,
    *,
    weights: InterpWeights | None = None,
    seed: int = 0,
) -> list[UnitScores]:
    """Scores of `explained` (unit, formula text) units of one layer on `scoring`'s images."""
    weights = weights or InterpWeights()
    plans: list[tuple[int, str, np.ndarray] | UnitScores] = []
    for unit, formula_text in explained:
        plans.append(_plan(layer, unit, formula_text, scoring))
    units = sorted({p[0] for p in plans if isinstance(p, tuple)})
    if not units:
        return [p for p in plans if isinstance(p, UnitScores)]
    images = preprocess.normalize(scoring.pixels)
    # One pass gives every image's unit activations, its logits (the base of C) and, when a
    # linear head reads the layer's average, the pooled values that make C exact without more
    # passes: scaling unit u by f moves the logits by (f - 1) * pooled_u * W[:, u].
    head = pooled_linear_head(module, layer) if units_of == "nchw" else None
    acts, all_logits, pooled = _activations_and_logits(
        module, layer, units_of, images, units, pooled=head is not None
    )
    # Robustness and causality use each unit's first CAUSAL_IMAGES satisfying images; perturb
    # their union once for every unit.
    chosen_of = {p[0]: np.flatnonzero(p[2])[:CAUSAL_IMAGES] for p in plans if isinstance(p, tuple)}
    union = np.unique(np.concatenate(list(chosen_of.values())))
    row_of = {int(i): r for r, i in enumerate(union)}
    floats = scoring.pixels[union].float() / 255.0
    shaken_acts = [
        _activations_and_logits(
            module, layer, units_of, _normalize_float(p, preprocess), units, pooled=False
        )[0]
        for p in perturbed(floats, seed=seed).values()
    ]
    out: list[UnitScores] = []
    for plan in plans:
        if isinstance(plan, UnitScores):
            out.append(plan)
            continue
        unit, formula_text, mask = plan
        column = acts[:, units.index(unit)]
        sat, other = column[mask], column[~mask]
        chosen = chosen_of[unit]
        base = all_logits[chosen]
        if head is not None and pooled is not None:
            direction = head.weight[:, unit].detach().double().cpu().numpy()
            moved = pooled[chosen, units.index(unit), None] * direction
            ablated, amplified = base - moved, base + moved  # factors 0 and 2
        else:
            batch = images[chosen]
            ablated = scaled_logits(module, layer, units_of, batch, unit, 0.0).numpy()
            amplified = scaled_logits(module, layer, units_of, batch, unit, 2.0).numpy()
        C = causality(relative_change(ablated, base), relative_change(amplified, base))
        rows = [row_of[int(i)] for i in chosen]
        clean = column[chosen]
        R = float(np.mean([stability(a[rows, units.index(unit)], clean) for a in shaken_acts]))
        interp = interp_score(
            S=selectivity(sat, other), C=C, R=R, H=None, weights=weights, notes=(NO_HUMANS,)
        )
        out.append(UnitScores(layer, unit, formula_text, predictive_score(sat, other), interp))
    return out


def _plan(
    layer: str, unit: int, formula_text: str | None, scoring: ScoringSet
) -> tuple[int, str, np.ndarray] | UnitScores:
    """(unit, formula, satisfying mask) when the explanation can be scored; else why not."""
    if not formula_text:
        return UnitScores(layer, unit, formula_text, note="no formula to score")
    try:
        formula = parse_text(formula_text, scoring.names)
    except ValueError:
        return UnitScores(layer, unit, formula_text, note="formula not over rendered attributes")
    mask = satisfies(formula, scoring.attributes, scoring.names)
    if mask.sum() < MIN_IMAGES or (~mask).sum() < MIN_IMAGES:
        return UnitScores(
            layer, unit, formula_text,
            note=f"{int(mask.sum())} of {mask.size} scoring images satisfy the formula; need "
            f"{MIN_IMAGES} on each side",
        )  # fmt: skip
    return unit, formula_text, mask


def _normalize_float(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """float [0, 1] images -> the model's normalised input."""
    mean = torch.tensor(preprocess.mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def _activations_and_logits(
    module: nn.Module,
    layer: str,
    units_of: Layout | UnitView,
    images: torch.Tensor,
    units: list[int],
    *,
    pooled: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 (image, unit) activations reduced as the dissection reduces them, float64 (image,
    class) logits and, if `pooled`, the float64 (image, unit) spatial means of the layer's own
    channels; one forward pass per BATCH images."""
    view = as_view(units_of)
    acts: list[torch.Tensor] = []
    means: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        acts.append(view.reduced(out, "max")[:, units].float())
        if pooled:
            means.append(pool_units(out, "nchw")[:, units].double())

    handle = dict(module.named_modules())[layer].register_forward_hook(keep)
    try:
        with torch.inference_mode():
            for i in range(0, images.shape[0], BATCH):
                logits.append(module.eval()(images[i : i + BATCH]).float())
    finally:
        handle.remove()
    return (
        torch.cat(acts).numpy().astype(np.float64),
        torch.cat(logits).numpy().astype(np.float64),
        torch.cat(means).numpy() if pooled else None,
    )
