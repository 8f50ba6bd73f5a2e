"""Gathering a layer's evidence over a probe set (`coin_scale.explain.evidence.LayerEvidence`):
dissect the layer, keep every readable image's activations, read its concepts."""

from __future__ import annotations

from dataclasses import replace

import torch

from coin_scale.dissect.config import DissectConfig
from coin_scale.dissect.pipeline import DissectPlan, load_activations, plan_dissection
from coin_scale.errors import UserError
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.models import ModelPayload
from coin_scale.probe import ProbeSet, scan_probe
from coin_scale.probe.concepts import concepts_from_probe
from coin_scale.runtime.dissect import run_dissection
from coin_scale.storage import Warehouse


def layer_evidence(
    config: DissectConfig,
    payload: ModelPayload,
    *,
    progress: bool,
    probe: ProbeSet | None = None,
    plan: DissectPlan | None = None,
) -> LayerEvidence:
    """Dissect (or reuse the cached dissection of) `config.layer`, keeping dense activations.
    `probe` is `config.probe` already scanned (a caller explaining several layers scans once);
    `plan`, the dissection already planned with `keep_activations`."""
    config = replace(config, keep_activations=True)
    if plan is None:
        plan = plan_dissection(config, payload=payload, probe=probe or scan_probe(config.probe))
    probe = plan.probe
    result = run_dissection(config, progress=progress, plan=plan)
    dense = torch.from_numpy(load_activations(Warehouse(config.warehouse), result.dissection_id))
    keep = (~torch.isnan(dense).all(dim=1)).nonzero().flatten()  # unreadable images: all NaN
    check_finite(dense[keep], config.layer, result.dissection_id)
    concepts = concepts_from_probe(probe)
    return LayerEvidence(
        dissection_id=result.dissection_id,
        activations=dense[keep],
        concepts=replace(concepts, matrix=concepts.matrix[:, keep]),
        probe=probe,
        result=result,
        rows=tuple(int(i) for i in keep),
    )


def check_finite(activations: torch.Tensor, layer: str, dissection_id: str) -> None:
    """A one-line `UserError` when the layer's own activations over the readable probe images
    hold NaN or inf (the model overflows there): no explainer can read them."""
    bad = ~torch.isfinite(activations)
    if bool(bad.any()):
        units = int(bad.any(dim=0).sum())
        images = int(bad.any(dim=1).sum())
        raise UserError(
            f"layer {layer} gave {int(bad.sum())} non-finite activations (NaN or inf) in {units} "
            f"units over {images} probe images (dissection {dissection_id}): the model overflows "
            "at this layer, so its units cannot be explained; try another layer or other weights"
        )
