"""The sweep's optional visualization step (`run_sweep.py --visualize STEPS`): one feature
visualization per explained unit, shown in the report beside its exemplars and recorded in the
`visualizations` table.

Each image is optimised for the unit (its channel, or an SAE feature's decoder direction) with the
defaults of `coin-scale visualize`, saved as a PNG next to the report, and measured like the
exemplars (the dissection's hooks and reduction), so the two activations in a card compare; the
table's `activation` is the objective, as `coin-scale visualize` records it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coin_scale.agent.subject import TorchUnitMeter
from coin_scale.agent.visualizer import TorchUnitVisualizer
from coin_scale.models.activations import sae_code_maps
from coin_scale.models.layers import LayerInfo
from coin_scale.models.loading import ModelPayload
from coin_scale.sweep.records import Exemplar, UnitFinding
from coin_scale.visualize import measure

VIS_SEED = 0


def visualize_findings(
    module: torch.nn.Module,
    payload: ModelPayload,
    layers: dict[str, LayerInfo],
    findings: list[UnitFinding],
    *,
    steps: int,
    out_dir: Path,
    sae_layer: str | None = None,
    sae_model: Any = None,
) -> tuple[list[UnitFinding], list[dict[str, Any]]]:
    """(`findings` with their `visualization` set, one `visualizations` row dict per image, less
    the run's id). Units of `sae_layer` are the features of `sae_model`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, int], Exemplar] = {}
    rows: list[dict[str, Any]] = []
    for f in findings:
        key = (f.layer, f.unit)
        if key in done or f.layer not in layers:
            continue
        layer = layers[f.layer]
        sae = sae_model if f.layer == sae_layer else None
        visualizer = TorchUnitVisualizer(
            module, payload.preprocess, layer.name, layer.layout, f.unit, steps=steps,
            direction=sae.w_dec[f.unit].detach() if sae is not None else None,
        )  # fmt: skip
        (image,) = visualizer.visualize(1, seed=VIS_SEED)
        path = out_dir / f"{layer.name}_{f.unit}.png"
        image.save(path, format="PNG")
        meter = TorchUnitMeter(
            module, payload.preprocess, layer.name, layer.layout, f.unit,
            transform=sae_code_maps(sae) if sae is not None else None,
        )  # fmt: skip
        (activation,) = meter.measure([image])  # as the exemplars' (dissection reduction)
        done[key] = Exemplar(image_path=str(path), activation=activation, label="visualization")
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        objective = float(measure(module, visualizer.objective(), pixels[None], payload.preprocess)[0])
        rows.append({
            "model": payload.model_id, "weights": payload.weights_id, "layer": layer.name,
            "unit": f.unit, "kind": "sae" if sae is not None else "neuron", "param": "fft",
            "steps": steps, "size": visualizer.size, "seed": VIS_SEED, "batch_index": 0,
            "image_path": str(path), "activation": objective, "created_at": datetime.now(UTC),
        })  # fmt: skip
    out = [replace(f, visualization=done.get((f.layer, f.unit))) for f in findings]
    return out, rows
