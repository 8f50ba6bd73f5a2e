"""A layer's evidence over a probe set: every readable image's activations and its concepts."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.pipeline import DissectResult, dissect, load_activations, plan_dissection
from coin_scale.explain import ConceptMatrix, concepts_from_probe
from coin_scale.models import ModelPayload
from coin_scale.probe import ProbeSet, scan_probe
from coin_scale.storage import Warehouse


@dataclass(frozen=True, slots=True)
class LayerEvidence:
    """What explainers read: activations and concepts over the same readable probe images."""

    dissection_id: str
    activations: torch.Tensor
    """float32 (image, unit) of the readable images, in probe order."""
    concepts: ConceptMatrix
    """Concepts of the same images."""
    probe: ProbeSet
    result: DissectResult | None = None
    """The dissection's summary (run id, images, timing)."""


def layer_evidence(
    config: DissectConfig, payload: ModelPayload, *, progress: bool, probe: ProbeSet | None = None
) -> LayerEvidence:
    """Dissect (or reuse the cached dissection of) `config.layer`, keeping dense activations.
    `probe` is `config.probe` already scanned (a caller explaining several layers scans once)."""
    config = replace(config, keep_activations=True)
    probe = probe or scan_probe(config.probe)
    plan = plan_dissection(config, payload=payload, probe=probe)
    result = dissect(config, progress=progress, plan=plan)
    dense = torch.from_numpy(load_activations(Warehouse(config.warehouse), result.dissection_id)).float()
    keep = (~torch.isnan(dense[:, 0])).nonzero().flatten()
    concepts = concepts_from_probe(probe)
    return LayerEvidence(
        dissection_id=result.dissection_id,
        activations=dense[keep],
        concepts=replace(concepts, matrix=concepts.matrix[:, keep]),
        probe=probe,
        result=result,
    )
