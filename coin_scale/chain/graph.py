"""The chain across layers: class <- top units of the last layer <- for each, the units of the
layer before that drive its pooled activation most, and so on down. Pure torch; no Ray.

A unit's pooled activation is the mean of its map over space (what a pooled head reads). Its
drivers in the layer before are ranked by gradient x activation (summed over space), or by
integrated gradients from a zero baseline, both of that pooled activation with respect to the
earlier layer's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from coin_scale.chain.units import UnitView, as_view
from coin_scale.models.layers import SPATIAL_DIMS, Layout

EdgeMethod = Literal["grad_x_activation", "integrated_gradients"]
EDGE_METHODS: tuple[EdgeMethod, ...] = ("grad_x_activation", "integrated_gradients")


OUTPUT = "<output>"
"""Key of the model's output among captured layer outputs."""


class LayerPathError(ValueError):
    """The layers cannot form a chain: wrong order, repeated, or one does not feed the next."""


@dataclass(frozen=True, slots=True)
class Edge:
    """Source unit (earlier layer) -> target unit (later layer), with its attribution."""

    source_layer: str
    source_unit: int
    target_layer: str
    target_unit: int
    weight: float
    method: EdgeMethod


def execution_order(module: nn.Module, inputs: torch.Tensor, names: Sequence[str]) -> list[str]:
    """`names` in the order their modules first produce an output for `inputs`."""
    order: list[str] = []
    named = dict(module.named_modules())
    handles = [
        named[name].register_forward_hook(
            lambda _m, _i, _o, name=name: order.append(name) if name not in order else None
        )
        for name in names
    ]
    try:
        with torch.inference_mode():
            module.eval()(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return order


def check_layer_path(module: nn.Module, inputs: torch.Tensor, layers: Sequence[str]) -> None:
    """Raise LayerPathError unless `layers` are distinct, in forward order, each one's output
    feeds the next one's, and the last one's feeds the model's output (autograd on `inputs`)."""
    seen = [name for i, name in enumerate(layers) if name in layers[:i]]
    if seen:
        raise LayerPathError(f"layer {seen[0]} appears twice in --layers; list each layer once")
    order = execution_order(module, inputs, layers)
    missing = [name for name in layers if name not in order]
    if missing:
        raise LayerPathError(f"layer {missing[0]} does not run in the forward pass")
    if order != list(layers):
        raise LayerPathError(
            f"--layers must go from the input towards the output: the model runs them in the "
            f"order {','.join(order)}"
        )
    kept = _capture(module, inputs, layers, grad=True)
    for earlier, later in zip(layers, [*layers[1:], OUTPUT], strict=True):
        grad = None
        if kept[later].requires_grad:
            (grad,) = torch.autograd.grad(
                kept[later].sum(), kept[earlier], retain_graph=True, allow_unused=True
            )
        if grad is None:
            target = "the model's output" if later == OUTPUT else f"layer {later}"
            raise LayerPathError(
                f"layer {earlier} does not feed {target}: no path between them in the model's "
                "graph, so no chain can link them"
            )


def _capture(
    module: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str],
    *,
    grad: bool,
    scale: tuple[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of `layers` for one forward pass, kept in the autograd graph when `grad`.

    With `scale = (layer, alphas)` that layer's output is multiplied per batch element by
    `alphas` (batch,) before the rest of the model runs (integrated gradients' path)."""
    kept: dict[str, torch.Tensor] = {}
    named = dict(module.named_modules())

    def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str) -> torch.Tensor | None:
        if scale is not None and name == scale[0]:
            alphas = scale[1].view(-1, *([1] * (out.dim() - 1)))
            scaled = out.detach() * alphas
            scaled.requires_grad_(True)
            kept[name] = scaled
            return scaled
        if grad and name == layers[0] and not out.requires_grad:
            out = out.detach().requires_grad_(True)
            kept[name] = out
            return out
        kept[name] = out
        return None

    handles = [
        named[name].register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))
        for name in layers
    ]
    try:
        with torch.enable_grad() if grad else torch.inference_mode():
            kept[OUTPUT] = module.eval()(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return kept


def unit_drivers(
    module: nn.Module,
    inputs: torch.Tensor,
    source: tuple[str, Layout],
    target: tuple[str, Layout | UnitView],
    target_units: Sequence[int],
    method: EdgeMethod = "grad_x_activation",
    steps: int = 16,
) -> torch.Tensor:
    """(len(target_units), source units) float64: each source unit's attribution to each target
    unit's pooled activation, for one image `inputs` (1, C, H, W)."""
    if inputs.shape[0] != 1:
        raise ValueError(f"unit_drivers takes one image, got a batch of {inputs.shape[0]}")
    if method not in EDGE_METHODS:
        raise ValueError(f"method must be one of {EDGE_METHODS}, got {method!r}")
    (source_name, source_layout), (target_name, target_units_of) = source, target
    target_view = as_view(target_units_of)
    dims = tuple(d - 1 for d in SPATIAL_DIMS[source_layout])
    rows = []
    if method == "grad_x_activation":
        kept = _capture(module, inputs, [source_name, target_name], grad=True)
        acts, pooled = kept[source_name], target_view.pooled(kept[target_name])[0]
        for unit in target_units:
            (grad,) = torch.autograd.grad(pooled[unit], acts, retain_graph=True)
            product = (grad * acts).detach()[0].double()
            rows.append(product.sum(dim=dims) if dims else product)
        return torch.stack(rows)
    alphas = (torch.arange(steps, dtype=inputs.dtype) + 0.5) / steps  # midpoint rule on [0, 1]
    kept = _capture(
        module, inputs.expand(steps, *inputs.shape[1:]), [source_name, target_name], grad=True,
        scale=(source_name, alphas),
    )  # fmt: skip
    acts, pooled = kept[source_name], target_view.pooled(kept[target_name])
    for unit in target_units:
        (grad,) = torch.autograd.grad(pooled[:, unit].sum(), acts, retain_graph=True)
        # element i holds alpha_i x the activation (alpha_last close to 1): the mean gradient
        # along the path times the activation itself
        product = (grad.mean(dim=0) * acts[-1] / alphas[-1]).detach().double()
        rows.append(product.sum(dim=dims) if dims else product)
    return torch.stack(rows)


def chain_edges(
    module: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[tuple[str, Layout | UnitView]],
    last_units: Sequence[int],
    fanout: int,
    method: EdgeMethod = "grad_x_activation",
    steps: int = 16,
) -> list[Edge]:
    """Edges from each layer's units to the chosen units of the next, walking down from
    `last_units` of the last layer: each target keeps its `fanout` strongest positive drivers,
    and those become the targets one layer down. The last layer may be read as SAE features."""
    if fanout < 1:
        raise ValueError(f"fanout must be >= 1, got {fanout}")
    edges: list[Edge] = []
    targets = list(dict.fromkeys(last_units))
    for source, target in zip(reversed(layers[:-1]), reversed(layers[1:]), strict=True):
        if not targets:
            break
        name, source_layout = source
        if not isinstance(source_layout, str):
            raise ValueError(f"chain layer {name} below the last must be read as its channels")
        weights = unit_drivers(module, inputs, (name, source_layout), target, targets, method, steps)
        next_targets: dict[int, None] = {}
        for row, unit in zip(weights, targets, strict=True):
            order = torch.argsort(row, descending=True, stable=True)[:fanout]
            for s in order.tolist():
                if row[s] > 0:
                    edges.append(Edge(source[0], s, target[0], unit, float(row[s]), method))
                    next_targets[s] = None
        targets = list(next_targets)
    return edges
