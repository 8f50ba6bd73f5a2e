"""The sweep's per-explanation scores: a held-out rendered set, scored unit by unit through
`coin_scale.eval.explanation_scores`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from coin_scale.chain.units import UnitView
from coin_scale.concepts.formula import parse_text
from coin_scale.eval.explanation_scores import MIN_IMAGES, UnitScores, score_explanations
from coin_scale.eval.matcher import text_formula_text
from coin_scale.eval.predictive import satisfies
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload
from coin_scale.probe.scoring_set import SCORING_SEED, ScoringSet
from coin_scale.sweep.records import UnitFinding


def score_findings(
    module: torch.nn.Module,
    payload: ModelPayload,
    views: dict[str, Layout | UnitView],
    findings: Sequence[UnitFinding],
    scoring: ScoringSet,
    *,
    seed: int,
    single_object: bool = True,
) -> list[UnitScores]:
    """Scores of every explained finding, layer by layer (each unit once). An explanation that
    too few scoring scenes satisfy gets scenes rendered to satisfy it (`TOP_UP` of them); the
    narrow explanations of a layer are scored together on the set extended with all of them."""
    out: list[UnitScores] = []
    for layer, units_of in views.items():
        explained: dict[int, str | None] = {}
        from_text: set[int] = set()
        for f in findings:
            if f.layer != layer or f.unit in explained or not (f.formula or f.label):
                continue
            explained[f.unit] = f.formula
            if not f.formula and f.label:  # an LLM's free text: read it as a formula
                explained[f.unit] = text_formula_text(f.label, scoring.names)
                from_text.add(f.unit)
        broad: list[tuple[int, str | None]] = []
        narrow: list[tuple[int, str | None]] = []
        for unit, formula in explained.items():
            (narrow if _too_narrow(formula, scoring) else broad).append((unit, formula))
        scores = score_explanations(
            module, layer, units_of, payload.preprocess, broad, scoring, seed=seed
        ) if broad else []  # fmt: skip
        if narrow:  # one set holding every narrow formula's rendered scenes, scored in one pass
            extended = scoring
            for unit, formula in narrow:
                assert formula is not None
                extended = render_satisfying(
                    formula, extended, payload, seed=seed + unit, single_object=single_object
                )
            scores += score_explanations(
                module, layer, units_of, payload.preprocess, narrow, extended, seed=seed
            )
        order = {unit: i for i, unit in enumerate(explained)}
        scores.sort(key=lambda s: order[s.unit])
        out += [replace(s, formula_source="matcher") if s.unit in from_text else s for s in scores]
    return out


TOP_UP = 32
"""Scenes rendered to satisfy an explanation that fewer than MIN_IMAGES scoring scenes satisfy."""


def _too_narrow(formula: str | None, scoring: ScoringSet) -> bool:
    if not formula:
        return False
    try:
        parsed = parse_text(formula, scoring.names)
    except ValueError:
        return False
    return int(satisfies(parsed, scoring.attributes, scoring.names).sum()) < MIN_IMAGES


def render_satisfying(
    formula: str, scoring: ScoringSet, payload: ModelPayload, *, seed: int, single_object: bool
) -> ScoringSet:
    """`scoring` plus up to TOP_UP scenes rendered to satisfy `formula` (kept only if their
    resolved attributes still do)."""
    import numpy as np

    from coin_scale.eval.predictive import satisfying_targets
    from unity_pool import vocab
    from unity_pool.procedural.draw import render
    from unity_pool.sampling import scene_for

    values: dict[str, Sequence[object]] = {k: tuple(v) for k, v in vocab.ATTRIBUTES.items()}
    if single_object:
        values |= {"n_objects": (1,), "size": ("large",)}
    rng = np.random.default_rng([SCORING_SEED, seed])
    parsed = parse_text(formula, scoring.names)
    targets = satisfying_targets(parsed, scoring.names, TOP_UP, rng, values)
    size = payload.preprocess.crop
    pixels, attributes = [], []
    for target in targets:
        image, resolved = render(scene_for(rng, dict(target), width=size, height=size))
        if satisfies(parsed, [resolved], scoring.names)[0]:
            pixels.append(payload.preprocess.load(image))
            attributes.append(resolved)
    if not pixels:
        return scoring
    return scoring.extended(torch.stack(pixels), attributes)
