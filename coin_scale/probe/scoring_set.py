"""The held-out scoring set: rendered scenes the explainer never saw (another seed than the
probe's), with their ground-truth attributes, preprocessed for the model; explanations are
scored on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coin_scale.models.loading import ModelPayload
from coin_scale.probe.concepts import PATH_COLUMN
from coin_scale.probe.rendered import OpenRenderer, rendered_probe


@dataclass(frozen=True)
class ScoringSet:
    """Rendered images (uint8, model crop) with their ground-truth attributes."""

    pixels: torch.Tensor
    attributes: tuple[dict[str, Any], ...]
    names: tuple[str, ...]
    """Concept names `<attribute>=<value>` that formulas may use."""
    source: str
    """Where the images came from (a probe set directory)."""

    def extended(self, pixels: torch.Tensor, attributes: Sequence[dict[str, Any]]) -> ScoringSet:
        """This set plus more images (rendered for one explanation)."""
        return ScoringSet(
            pixels=torch.cat([self.pixels, pixels]),
            attributes=self.attributes + tuple(attributes),
            names=self.names,
            source=f"{self.source} + {len(attributes)} rendered to satisfy a formula",
        )



SCORING_SEED = 7
"""Seed of the scoring set's scenes: not the probe's (0), so explanations are scored on images
their explainer never saw."""

SCORING_IMAGES = 256


def load_scoring_set(
    payload: ModelPayload,
    *,
    single_object: bool,
    progress: bool,
    n: int = SCORING_IMAGES,
    open_renderer: OpenRenderer | None = None,
) -> ScoringSet:
    """A rendered set like the sweep's probe (rendered once, cached, on `open_renderer`'s pool
    when given), preprocessed for the model."""
    import pyarrow.parquet as pq

    from coin_scale.models.activations import decode_batch
    from unity_pool import vocab

    root = Path(rendered_probe(
        n, payload.preprocess.crop, progress=progress, single_object=single_object, seed=SCORING_SEED,
        open_renderer=open_renderer,
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
