"""Gathering a layer's evidence over a probe set (`coin_scale.explain.evidence.LayerEvidence`):
dissect the layer, keep every readable image's activations, read its concepts."""

from __future__ import annotations

from dataclasses import replace

import torch

from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.pipeline import load_activations, plan_dissection
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.models import ModelPayload
from coin_scale.probe import ProbeSet, scan_probe
from coin_scale.probe.concepts import concepts_from_probe
from coin_scale.runtime.dissect import run_dissection
from coin_scale.storage import Warehouse


def layer_evidence(
    config: DissectConfig, payload: ModelPayload, *, progress: bool, probe: ProbeSet | None = None
) -> LayerEvidence:
    """Dissect (or reuse the cached dissection of) `config.layer`, keeping dense activations.
    `probe` is `config.probe` already scanned (a caller explaining several layers scans once)."""
    config = replace(config, keep_activations=True)
    probe = probe or scan_probe(config.probe)
    plan = plan_dissection(config, payload=payload, probe=probe)
    result = run_dissection(config, progress=progress, plan=plan)
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
