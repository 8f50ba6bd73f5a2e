"""Concepts of probe images as a boolean matrix: which image shows which concept.

A concept is a named set of probe images: `shape=star`, `color=red`, `n_objects=2` for a rendered
probe set (its `attributes.parquet`), `label=tabby` for a folder of labelled images (read by `coin_scale.probe.concepts`). Explanations
are formulas over these concepts (see `coin_scale.concepts.formula`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

@dataclass(frozen=True, kw_only=True)
class ConceptMatrix:
    """Named concepts and the probe images each one covers."""

    names: tuple[str, ...]
    """Concept names, `<attribute>=<value>` (e.g. `shape=star`, `label=tabby`); unique."""
    matrix: torch.Tensor
    """bool (concept, image): True where the image shows the concept; images in probe order."""

    def __post_init__(self) -> None:
        if self.matrix.dtype != torch.bool or self.matrix.dim() != 2:
            raise ValueError(
                f"matrix: expected a 2-d bool tensor (concept, image); got {self.matrix.dim()}-d "
                f"{self.matrix.dtype}. Fix: pass `mask.bool()` shaped (concept, image)."
            )
        if self.matrix.shape[0] != len(self.names):
            raise ValueError(
                f"matrix: expected {len(self.names)} rows (one per name); got "
                f"{self.matrix.shape[0]}. Fix: give one name per concept row."
            )
        if len(set(self.names)) != len(self.names):
            dupes = sorted(name for name, count in Counter(self.names).items() if count > 1)
            raise ValueError(
                f"names: expected unique concept names; got duplicates {dupes}. Fix: merge them."
            )

    @property
    def n_concepts(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.matrix.shape[1])


def filter_concepts(
    names: Sequence[str], matrix: torch.Tensor, *, min_count: int = 1
) -> ConceptMatrix:
    """Keep the concepts present in at least `min_count` images and absent from at least one."""
    if min_count < 1:
        raise ValueError(f"min_count: expected >= 1; got {min_count}. Fix: use 1 or more.")
    counts = matrix.sum(dim=1)
    keep = (counts >= min_count) & (counts < matrix.shape[1])
    dropped = len(names) - int(keep.sum())
    if dropped:
        log.debug(
            "dropped %d of %d concepts (rarer than %d or everywhere)",
            dropped,
            len(names),
            min_count,
        )
    index = torch.nonzero(keep).flatten().tolist()
    return ConceptMatrix(names=tuple(names[i] for i in index), matrix=matrix[index].clone())
