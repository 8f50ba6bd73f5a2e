"""A unit's offline explanation as a detector: F1, IoU and AUPRC of its activations against the
probe images its formula covers, so scores with no concept of their own (MIS) get the metrics that
hold up when labels are missing or extra (issue 8) beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from coin_scale.concepts.formula import evaluate, parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.eval.detection import Detection, detection
from coin_scale.explain.offline import OfflineExplainerConfig, explain_units


@dataclass(frozen=True)
class ExplainedDetection:
    """One unit: the offline explainer's formula and how well the unit detects its images."""

    unit: int
    formula: str
    """Machine form; "" when the explainer found none (then `detection` is None)."""
    label: str
    """The formula in words."""
    detection: Detection | None


def explained_detections(
    activations: np.ndarray,
    concepts: ConceptMatrix,
    units: Sequence[int],
    quantile: float = OfflineExplainerConfig.quantile,
) -> list[ExplainedDetection]:
    """Explain each of `units` (columns of the (image, unit) `activations`, rows aligned with the
    concepts' images) offline, then measure F1/IoU at the explainer's threshold and AUPRC."""
    chosen = torch.from_numpy(np.ascontiguousarray(activations[:, list(units)], dtype=np.float32))
    explanations = explain_units(chosen, concepts, OfflineExplainerConfig(quantile=quantile))
    out = []
    for column, (unit, e) in enumerate(zip(units, explanations, strict=True)):
        found = None
        if e.formula and e.threshold is not None:
            labels = evaluate(parse_text(e.formula, concepts.names), concepts.matrix).numpy()
            found = detection(chosen[:, column].numpy(), labels, e.threshold)
        out.append(ExplainedDetection(unit=unit, formula=e.formula, label=e.label, detection=found))
    return out


def concepts_of_images(concepts: ConceptMatrix, images: Sequence[int]) -> ConceptMatrix:
    """The concept matrix restricted to `images` (probe indices), in that order: the images a
    pass could read."""
    return ConceptMatrix(names=concepts.names, matrix=concepts.matrix[:, list(images)].clone())
