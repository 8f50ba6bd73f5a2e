"""Does the chain matter, and does it read right? On the probe CNN, over rendered targets:
ablating the last layer's top-k chain units vs k random units (the logit margin's drop), and
whether the chain's labels name the predicted class's defining attribute."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

from coin_scale.chain.attribution import unit_contributions
from coin_scale.chain.faithfulness import faithfulness_scores, margin_ratio, unit_means
from coin_scale.chain.graph import EdgeMethod, chain_edges
from coin_scale.models import ModelSource, build_module, describe_layers, find_layer, resolve_model
from coin_scale.probe import scan_probe
from coin_scale.sweep.chain import chain_nodes, probe_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ChainBenchConfig:
    """One faithfulness evaluation of chains on rendered targets."""

    model: str
    """A probe CNN checkpoint (classes are values of `attribute`)."""
    layers: tuple[str, ...] = ("layer2", "layer3", "layer4")
    attribute: str = "shape"
    targets: int = 50
    top_k: int = 8
    """Chain units of the last layer (ablated together, against as many random units)."""
    fanout: int = 3
    method: EdgeMethod = "grad_x_activation"
    draws: int = 20
    probe: str | None = None
    """Probe folder for the explanations and mean ablation; default the cached rendered set."""
    probe_images: int = 1000
    warehouse: str = "warehouse"
    seed: int = 2
    target_ratio: float = 5.0
    progress: bool = False


def run_chain_bench(config: ChainBenchConfig) -> dict[str, Any]:
    """Figures over `config.targets` rendered single-object targets (a seed the model never saw)."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.explain import OfflineExplainerConfig, explain_units
    from coin_scale.probe.rendered import rendered_probe
    from coin_scale.sweep.evidence import layer_evidence
    from coin_scale.training.probe_cnn import get_task, render_dataset

    start = time.perf_counter()
    payload = resolve_model(ModelSource(model=config.model))
    module = build_module(payload).eval()
    described = describe_layers(module, payload.arch, payload.preprocess.crop)
    chain = [find_layer(described, name, payload.model_id) for name in config.layers]
    size = payload.preprocess.crop
    probe = config.probe or rendered_probe(
        config.probe_images, size, progress=config.progress, single_object=True
    )
    probe_set = scan_probe(probe)
    labels: dict[str, list[str]] = {}
    for layer in chain:  # every unit of every chain layer explained once, over the probe set
        evidence = layer_evidence(
            DissectConfig(model=config.model, layer=layer.name, probe=probe, warehouse=config.warehouse),
            payload,
            progress=config.progress,
            probe=probe_set,
        )
        labels[layer.name] = [
            e.formula for e in explain_units(evidence.activations, evidence.concepts, OfflineExplainerConfig())
        ]
    means = unit_means(module, probe_batches(probe_set, payload), {c.name: c.layout for c in chain})
    last = chain[-1]
    images, truth = render_dataset(get_task(config.attribute), config.targets, 30_000 + config.seed, size)
    rows = []
    for image, label in zip(images, truth, strict=True):
        x = payload.preprocess.normalize(image.unsqueeze(0).contiguous())
        c = unit_contributions(module, last.name, last.layout, x)
        top = [unit for unit, _ in c.top(config.top_k)]
        edges = chain_edges(
            module, x, [(layer.name, layer.layout) for layer in chain], top, config.fanout,
            config.method,
        )  # fmt: skip
        nodes = chain_nodes(edges)
        scores = faithfulness_scores(
            module, x, last.name, last.layout, c.class_index, top, [len(top)], means=means[last.name],
            draws=config.draws, seed=config.seed,
        )  # fmt: skip
        concept = f"{config.attribute}={payload.class_names[c.class_index]}"
        names = {
            last.name: any(concept in labels[last.name][u] for u in top),
            **{
                layer.name: any(concept in labels[layer.name][n.unit] for n in nodes if n.layer == layer.name)
                for layer in chain[:-1]
            },
        }
        by = {(s.ablation, s.selection): s for s in scores}
        rows.append({
            "correct": c.class_index == int(label), "k": len(top),
            "ratio_zero": margin_ratio(scores, len(top), "zero"),
            "ratio_mean": margin_ratio(scores, len(top), "mean"),
            **{f"{a}_{s}": by[(a, s)].margin_drop for a in ("zero", "mean")
               for s in ("chain", "random", "activation")},
            "names": names,
        })  # fmt: skip
    return _summary(config, rows, probe, time.perf_counter() - start)


def _summary(config: ChainBenchConfig, rows: list[dict[str, Any]], probe: str, seconds: float) -> dict[str, Any]:
    n = len(rows)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    return {
        "benchmark": "chain_faithfulness",
        "model": config.model,
        "layers": list(config.layers),
        "targets": n,
        "k": config.top_k,
        "method": config.method,
        "fanout": config.fanout,
        "random_draws": config.draws,
        "prediction_accuracy": round(sum(r["correct"] for r in rows) / n, 3),
        "median_margin_drop": {
            f"{a}_ablation": {s: median(f"{a}_{s}") for s in ("chain", "random", "activation")}
            for a in ("zero", "mean")
        },
        "median_ratio_chain_vs_random": {"zero": median("ratio_zero"), "mean": median("ratio_mean")},
        f"targets_with_ratio_at_least_{config.target_ratio:g}": {
            a: round(sum(r[f"ratio_{a}"] >= config.target_ratio for r in rows) / n, 3)
            for a in ("zero", "mean")
        },
        "chain_names_class_by_layer": {
            layer: round(sum(r["names"][layer] for r in rows) / n, 3) for layer in config.layers
        },
        "probe": probe,
        "seconds": round(seconds, 1),
    }
