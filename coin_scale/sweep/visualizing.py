"""The sweep's optional visualization step (`run_sweep.py --visualize STEPS`): one feature
visualization per explained unit, shown in the report beside its exemplars and recorded in the
`visualizations` table.

Each image is optimised for the unit (its channel, or an SAE feature's decoder direction) with the
defaults of `coin-scale visualize`, on a model replica (`ModelReplica.visualize`: the driver holds
no model for it), saved as a PNG next to the report, and measured on the same replicas like the
exemplars (the dissection's hooks and reduction), so the two activations in a card compare; the
table's `activation` is the objective, as `coin-scale visualize` records it.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from coin_scale.agent.visualizer import VisualizationSpec
from coin_scale.models.activations import SAEUnits
from coin_scale.models.batches import ReplicaWork
from coin_scale.models.layers import LayerInfo
from coin_scale.models.loading import ModelPayload
from coin_scale.runtime.pools import replica_pool
from coin_scale.sweep.records import Exemplar, UnitFinding

VIS_SEED = 0
REDUCTION = "max"
"""The sweep's dissections' reduction (their default), so a visualization's activation compares
with its exemplars'."""


def visualize_findings(
    payload: ModelPayload,
    layers: dict[str, LayerInfo],
    findings: list[UnitFinding],
    *,
    steps: int,
    out_dir: Path,
    sae_layer: str | None = None,
    sae: SAEUnits | None = None,
    address: str | None = None,
) -> tuple[list[UnitFinding], list[dict[str, Any]]]:
    """(`findings` with their `visualization` set, one `visualizations` row dict per image, less
    the run's id). Units of `sae_layer` are the features of `sae`. Every visualization is
    optimised, and then measured, on model replicas of `layers` (a local Ray unless `address`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo: dict[tuple[str, int], VisualizationSpec] = {}
    for f in findings:
        if (f.layer, f.unit) in todo or f.layer not in layers:
            continue
        layer = layers[f.layer]
        on_sae = sae is not None and f.layer == sae_layer
        direction = sae.state["w_dec"][f.unit].detach().clone() if on_sae and sae else None
        todo[(f.layer, f.unit)] = VisualizationSpec(
            layer=layer.name, layout=layer.layout, unit=f.unit, direction=direction, steps=steps
        )
    if not todo:
        return list(findings), []
    keys = list(todo)
    work = ReplicaWork(
        payload, {name: info.layout for name, info in layers.items()}, (REDUCTION,),
        {sae_layer: sae} if sae is not None and sae_layer else None,
    )  # fmt: skip
    with replica_pool(work, address=address, replicas=None) as pool:
        made = {r.batch_id: r for r in pool.visualize([(todo[k], 1, VIS_SEED) for k in keys])}
        pngs = [made[i].pngs[0] for i in range(len(keys))]
        images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
        pixels = np.stack([payload.preprocess.load(image).numpy() for image in images])
        (measured,) = pool.run_pixels([pixels])
    done: dict[tuple[str, int], Exemplar] = {}
    rows: list[dict[str, Any]] = []
    for i, (layer_name, unit) in enumerate(keys):
        path = out_dir / f"{layer_name}_{unit}.png"
        path.write_bytes(pngs[i])
        activation = float(measured.activations[layer_name][REDUCTION][i, unit])
        done[(layer_name, unit)] = Exemplar(image_path=str(path), activation=activation, label="visualization")
        spec = todo[(layer_name, unit)]
        rows.append({
            "model": payload.model_id, "weights": payload.weights_id, "layer": layer_name,
            "unit": unit, "kind": "sae" if spec.direction is not None else "neuron", "param": "fft",
            "steps": steps, "size": images[i].size[0], "seed": VIS_SEED, "batch_index": 0,
            "image_path": str(path), "activation": made[i].values[0], "created_at": datetime.now(UTC),
        })  # fmt: skip
    out = [replace(f, visualization=done.get((f.layer, f.unit))) for f in findings]
    return out, rows
