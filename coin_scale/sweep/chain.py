"""The sweep's chain step: resolve `--layers`, walk the drivers down from the selected units, and
test the chain's faithfulness by ablation."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from coin_scale.chain.attribution import UnitContributions
from coin_scale.chain.faithfulness import (
    AblationScore,
    deletion_ks,
    faithfulness_scores,
    unit_means,
)
from coin_scale.chain.graph import Edge, LayerPathError, check_layer_path
from coin_scale.chain.units import SAEFeatures, UnitView
from coin_scale.errors import UserError
from coin_scale.models import find_layer
from coin_scale.models.layers import LayerInfo, Layout
from coin_scale.models.loading import ModelPayload
from coin_scale.models.sae import SparseAutoencoder
from coin_scale.probe import ProbeSet
from coin_scale.sweep.records import UnitFinding

log = logging.getLogger(__name__)

MEAN_IMAGES = 64
"""Probe images over which mean ablation's unit means are taken."""
CURVE_MAX_K = 16
"""A deletion curve goes up to this many units (or the chain's size in that layer)."""


def resolve_chain(
    names: Sequence[str], layers: list[LayerInfo], payload: ModelPayload, structure: torch.nn.Module
) -> list[LayerInfo]:
    """The chain's layers, checked: known to the model, distinct, in forward order, each feeding
    the next (a dry forward pass of the model's `structure`, on the meta device where it traces:
    the path between layers does not depend on the weights)."""
    found = [find_layer(layers, name, payload.model_id) for name in names]
    size = payload.preprocess.crop
    device = next(structure.parameters(), torch.zeros(0)).device
    zeros = torch.zeros(1, 3, size, size, device=device)
    try:
        check_layer_path(structure, zeros, [layer.name for layer in found])
    except LayerPathError as err:
        raise UserError(str(err)) from None
    return found


def chain_nodes(edges: Sequence[Edge]) -> list[UnitFinding]:
    """One finding per source unit of `edges`: contribution = the sum of its edges' weights,
    ranked within its layer (strongest first)."""
    totals: dict[tuple[str, int], float] = {}
    for edge in edges:
        key = (edge.source_layer, edge.source_unit)
        totals[key] = totals.get(key, 0.0) + edge.weight
    by_layer: dict[str, list[tuple[int, float]]] = {}
    for (layer, unit), total in totals.items():
        by_layer.setdefault(layer, []).append((unit, total))
    nodes = []
    for layer, units in by_layer.items():
        ordered = sorted(units, key=lambda item: (-item[1], item[0]))
        nodes += [
            UnitFinding(layer=layer, unit=unit, rank=rank, contribution=total, share=math.nan)
            for rank, (unit, total) in enumerate(ordered)
        ]
    return nodes


def chain_faithfulness(
    module: torch.nn.Module,
    inputs: torch.Tensor,
    chain: Sequence[LayerInfo],
    contributions: UnitContributions,
    nodes: Sequence[UnitFinding],
    top_k: int,
    *,
    sae: SparseAutoencoder | None = None,
    mean_batches: Sequence[torch.Tensor] = (),
    draws: int = 20,
    seed: int = 0,
) -> list[AblationScore]:
    """Ablation scores of every chain layer: the last layer's units (`sae`'s features when
    given) ranked by contribution to the class, each earlier layer's chain nodes ranked by their
    edge weights. Mean ablation only when `mean_batches` (probe images) are given."""
    views: dict[str, Layout | UnitView] = {layer.name: layer.layout for layer in chain}
    if sae is not None:
        views[chain[-1].name] = SAEFeatures(sae)
    means = unit_means(module, mean_batches, views) if mean_batches else {}
    ranked = {chain[-1].name: [unit for unit, _ in contributions.top(CURVE_MAX_K)]}
    for node in sorted(nodes, key=lambda n: n.rank):
        ranked.setdefault(node.layer, []).append(node.unit)
    scores: list[AblationScore] = []
    for layer in chain:
        units = ranked.get(layer.name, [])
        if not units:
            continue
        ks = deletion_ks(min(len(units), CURVE_MAX_K), also=(top_k,) if layer is chain[-1] else ())
        scores += faithfulness_scores(
            module, inputs, layer.name, views[layer.name], contributions.class_index, units, ks,
            means=means.get(layer.name), draws=draws, seed=seed,
        )  # fmt: skip
    return scores


def probe_batches(probe: ProbeSet, payload: ModelPayload, n: int = MEAN_IMAGES) -> list[torch.Tensor]:
    """Up to `n` readable probe images, preprocessed, in batches of 32 (for mean ablation)."""
    from coin_scale.models.activations import decode_batch

    images = probe.images
    step = max(1, len(images) // n)
    chosen = [(im.index, im.path) for im in images[::step][:n]]
    batches = []
    for start in range(0, len(chosen), 32):
        decoded = decode_batch(chosen[start : start + 32], payload.preprocess)
        if decoded.indices:
            batches.append(payload.preprocess.normalize(decoded.pixels))
    return batches
