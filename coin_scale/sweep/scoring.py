"""The sweep's per-explanation scores: a held-out rendered set, scored unit by unit through
`coin_scale.eval.explanation_scores`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from coin_scale.chain.units import UnitView
from coin_scale.eval.explanation_scores import ScoringSet, UnitScores, score_explanations
from coin_scale.models.layers import Layout
from coin_scale.models.loading import ModelPayload
from coin_scale.sweep import inputs
from coin_scale.sweep.records import UnitFinding

SCORING_SEED = 7
"""Seed of the scoring set's scenes: not the probe's (0), so explanations are scored on images
their explainer never saw."""

SCORING_IMAGES = 256


def load_scoring_set(
    payload: ModelPayload, *, single_object: bool, progress: bool, n: int = SCORING_IMAGES
) -> ScoringSet:
    """A rendered set like the sweep's probe (rendered once, cached), preprocessed for the model."""
    import pyarrow.parquet as pq

    from coin_scale.dissect.activations import decode_batch
    from coin_scale.explain.concepts import PATH_COLUMN
    from unity_pool import vocab

    root = Path(inputs.rendered_probe(
        n, payload.preprocess.crop, progress=progress, single_object=single_object, seed=SCORING_SEED,
    ))  # fmt: skip
    rows = pq.read_table(root / "attributes.parquet").to_pylist()
    decoded = decode_batch(
        [(i, str(root / r[PATH_COLUMN])) for i, r in enumerate(rows)], payload.preprocess
    )
    attributes = tuple(
        {k: v for k, v in rows[i].items() if k != PATH_COLUMN} for i in decoded.indices
    )
    names = tuple(f"{a}={v}" for a, values in vocab.ATTRIBUTES.items() for v in values)
    return ScoringSet(pixels=decoded.pixels, attributes=attributes, names=names, source=str(root))


def score_findings(
    module: torch.nn.Module,
    payload: ModelPayload,
    views: dict[str, Layout | UnitView],
    findings: Sequence[UnitFinding],
    scoring: ScoringSet,
    *,
    seed: int,
) -> list[UnitScores]:
    """Scores of every explained finding, layer by layer (each unit once)."""
    out: list[UnitScores] = []
    for layer, units_of in views.items():
        explained: dict[int, str | None] = {}
        for f in findings:
            if f.layer == layer and f.unit not in explained and (f.formula or f.label):
                explained[f.unit] = f.formula
        if explained:
            out += score_explanations(
                module,
                layer,
                units_of,
                payload.preprocess,
                list(explained.items()),
                scoring,
                seed=seed,
            )
    return out
