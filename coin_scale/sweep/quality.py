"""Do the sweep's labels name what defines the predicted class? Measured on the probe CNN,
whose classes are defined by rendered attributes (e.g. the main object's shape)."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

from coin_scale.chain.attribution import unit_contributions
from coin_scale.models import ModelSource, build_module, describe_layers, resolve_model
from coin_scale.models.layers import last_block

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class QualityConfig:
    """One evaluation of label quality on rendered targets."""

    model: str
    """A probe CNN checkpoint (classes are values of one attribute, e.g. shapes)."""
    attribute: str = "shape"
    """The attribute whose value defines each class."""
    targets: int = 50
    """Rendered single-object target images (a seed apart from the probe set's)."""
    top_k: int = 3
    """Units per target whose labels are checked."""
    probe: str | None = None
    """Probe folder; default the cached rendered probe set."""
    probe_images: int = 1000
    warehouse: str = "warehouse"
    seed: int = 1
    quantile: float = 0.9
    """Mask quantile of the offline explainer."""
    progress: bool = False


def evaluate_label_quality(config: QualityConfig) -> dict[str, Any]:
    """Fraction of targets whose top units' formulas mention `attribute=<predicted class>`."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.explain import OfflineExplainerConfig, explain_units
    from coin_scale.probe.rendered import rendered_probe
    from coin_scale.sweep.evidence import layer_evidence
    from coin_scale.training.probe_cnn import get_task, render_dataset

    start = time.perf_counter()
    payload = resolve_model(ModelSource(model=config.model))
    module = build_module(payload)
    layer = last_block(module, describe_layers(module, payload.arch, payload.preprocess.crop))
    size = payload.preprocess.crop
    probe = config.probe or rendered_probe(
        config.probe_images, size, progress=config.progress, single_object=True
    )
    evidence = layer_evidence(
        DissectConfig(
            model=config.model, layer=layer.name, probe=probe, warehouse=config.warehouse
        ),
        payload,
        progress=config.progress,
    )
    explained = explain_units(
        evidence.activations, evidence.concepts, OfflineExplainerConfig(quantile=config.quantile)
    )

    # Targets from the model's own distribution (one large object), from a seed it never saw.
    images, labels = render_dataset(get_task("shape"), config.targets, 20_000 + config.seed, size)
    top1 = anyk = correct = 0
    ious: list[float] = []
    examples: list[dict[str, Any]] = []
    for image, label in zip(images, labels, strict=True):
        x = payload.preprocess.normalize(image.unsqueeze(0).contiguous())
        c = unit_contributions(module, layer.name, layer.layout, x)
        predicted = payload.class_names[c.class_index]
        correct += c.class_index == int(label)
        concept = f"{config.attribute}={predicted}"
        units = [u for u, _ in c.top(config.top_k)]
        hits = [concept in explained[u].formula for u in units]
        if not any(hits):
            examples.append({"predicted": predicted, "labels": [explained[u].label for u in units]})
        top1 += bool(hits and hits[0])
        anyk += any(hits)
        ious.extend(explained[u].iou or 0.0 for u in units)
    n = len(images)
    return {
        "benchmark": "sweep_label_quality",
        "model": config.model,
        "layer": layer.name,
        "attribute": config.attribute,
        "targets": n,
        "top_k": config.top_k,
        "prediction_accuracy": round(correct / n, 3),
        "top1_label_names_class": round(top1 / n, 3),
        "any_topk_label_names_class": round(anyk / n, 3),
        "mean_iou_topk": round(statistics.fmean(ious), 3) if ious else None,
        "quantile": config.quantile,
        "examples": examples[:5],
        "probe": probe,
        "seconds": round(time.perf_counter() - start, 1),
    }
