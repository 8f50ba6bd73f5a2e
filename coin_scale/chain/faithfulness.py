"""Does the chain matter to the model? Ablate a layer's chain units and measure what the predicted
class loses, against k random units and the k most active units. Pure torch; no Ray.

Zero ablation sets a unit's whole map to 0; mean ablation sets it to the unit's mean activation
over a reference set (probe images), at every position. The effect is measured on the predicted
class's logit, its probability, and its logit margin (its logit minus the best other logit).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from coin_scale.chain.attribution import pooled_linear_head
from coin_scale.chain.units import UnitView, as_view
from coin_scale.models.layers import Layout

Ablation = Literal["zero", "mean"]
ABLATIONS: tuple[Ablation, ...] = ("zero", "mean")
Selection = Literal["chain", "random", "activation"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The predicted class's logit, probability and margin for one (ablated) forward pass."""

    logit: float
    probability: float
    margin: float


@dataclass(frozen=True, slots=True)
class AblationScore:
    """What ablating k units of one layer cost the predicted class (drops: before - after)."""

    layer: str
    ablation: Ablation
    selection: Selection
    k: int
    logit_drop: float
    probability_drop: float
    margin_drop: float
    draws: int = 1
    """Random selections averaged (selection 'random'), else 1."""
    margin_drop_std: float = 0.0
    """Standard deviation of the margin drop over the draws."""


def predicted_outcome(logits: torch.Tensor, class_index: int) -> Outcome:
    """Outcome of class `class_index` from one image's logits (classes,)."""
    logits = logits.double()
    others = torch.cat([logits[:class_index], logits[class_index + 1 :]])
    return Outcome(
        logit=float(logits[class_index]),
        probability=float(logits.softmax(dim=0)[class_index]),
        margin=float(logits[class_index] - others.max()) if others.numel() else float("inf"),
    )


def ablated_logits(
    module: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    units_of: Layout | UnitView,
    units: Sequence[int] | torch.Tensor,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits (batch, classes) with `units` of `layer` (read as `units_of`: a layout for its
    channels, or SAEFeatures) replaced by `values` (unit,) at every position (mean ablation), or
    by 0 when `values` is None. `units` may be a (batch, k) tensor: a set per batch element."""
    view = as_view(units_of)
    index = torch.as_tensor(units, dtype=torch.long)
    if index.dim() == 1:
        index = index.unsqueeze(0).expand(inputs.shape[0], -1)
    handle = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: view.ablate(out, index, values)
    )
    try:
        with torch.inference_mode():
            return module.eval()(inputs)
    finally:
        handle.remove()


def linear_head_ablation(
    logits: torch.Tensor,
    pooled: torch.Tensor,
    weight: torch.Tensor,
    units: Sequence[int] | torch.Tensor,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 logits (batch, classes) of one image whose layer feeds a linear head through its
    spatial mean, with `units` replaced by `values` (or 0) at every position: the logits move by
    weight[:, u] x (value_u - pooled_u) for each replaced unit u. Equal to `ablated_logits` on
    such a layer (`attribution.pooled_linear_head`) up to float rounding, without its passes.
    `units` as in `ablated_logits`: a set, or a (batch, k) tensor of sets."""
    index = torch.as_tensor(units, dtype=torch.long)
    if index.dim() == 1:
        index = index.unsqueeze(0)
    pooled = pooled.detach().double().cpu()
    target = torch.zeros_like(pooled) if values is None else values.detach().double().cpu()
    delta = torch.zeros(index.shape[0], pooled.numel(), dtype=torch.float64)
    delta.scatter_(1, index, (target - pooled)[index])
    head = weight.detach().double().cpu()
    return logits.detach().double().cpu() + delta @ head.T


def unit_means(
    module: nn.Module, batches: Sequence[torch.Tensor], layers: Mapping[str, Layout | UnitView]
) -> dict[str, torch.Tensor]:
    """Per layer, the (unit,) float32 mean activation of every unit over all positions of all
    `batches` (one forward pass per batch for all layers)."""
    totals: dict[str, torch.Tensor] = {}
    count = 0
    named = dict(module.named_modules())

    def hook(out: torch.Tensor, name: str) -> None:
        summed = as_view(layers[name]).pooled(out).double().sum(dim=0)
        totals[name] = totals[name] + summed if name in totals else summed

    handles = [
        named[name].register_forward_hook(lambda _m, _i, out, name=name: hook(out, name))
        for name in layers
    ]
    try:
        with torch.inference_mode():
            for batch in batches:
                module.eval()(batch)
                count += batch.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise ValueError("unit_means needs at least one image")
    return {name: (total / count).float() for name, total in totals.items()}


def deletion_ks(n: int, also: Sequence[int] = ()) -> list[int]:
    """The k of a deletion curve over n ranked units: 1, 2, 4, ... up to n, n itself, and `also`."""
    ks = {k for k in (2**i for i in range(max(n, 1).bit_length())) if k <= n} | {n}
    ks |= {k for k in also if 1 <= k <= n}
    return sorted(k for k in ks if k >= 1)


def faithfulness_scores(
    module: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    units_of: Layout | UnitView,
    class_index: int,
    chain_units: Sequence[int],
    ks: Sequence[int],
    *,
    means: torch.Tensor | None = None,
    draws: int = 20,
    seed: int = 0,
) -> list[AblationScore]:
    """For every k in `ks`: the drops from ablating the chain's first k units (`chain_units`,
    strongest first), k random units (mean over `draws`), and the k units of largest pooled
    activation on this image; zero ablation, plus mean ablation when `means` is given."""
    if inputs.shape[0] != 1:
        raise ValueError(f"faithfulness_scores takes one image, got a batch of {inputs.shape[0]}")
    captured: list[torch.Tensor] = []
    handle = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: captured.append(as_view(units_of).pooled(out)[0].detach())
    )
    try:
        with torch.inference_mode():
            base_logits = module.eval()(inputs)[0]
    finally:
        handle.remove()
    base = predicted_outcome(base_logits, class_index)
    n_units = captured[0].numel()
    # A layer read by avgpool -> fc: replacing units at every position moves their pooled values
    # only, so the ablated logits follow from this one pass, exactly, with no pass per ablation.
    head = pooled_linear_head(module, layer) if units_of == "nchw" else None

    def ablated(units: torch.Tensor, values: torch.Tensor | None, batch: int) -> torch.Tensor:
        if head is None:
            repeated = inputs.expand(batch, *inputs.shape[1:]) if batch > 1 else inputs
            return ablated_logits(module, repeated, layer, units_of, units, values)
        return linear_head_ablation(base_logits, captured[0], head.weight, units, values)

    by_activation = torch.argsort(captured[0], descending=True, stable=True)
    generator = torch.Generator().manual_seed(seed)
    ablations: list[tuple[Ablation, torch.Tensor | None]] = [("zero", None)]
    if means is not None:
        ablations.append(("mean", means))
    scores = []
    for k in ks:
        if not 1 <= k <= min(len(chain_units), n_units):
            raise ValueError(f"k must be between 1 and {min(len(chain_units), n_units)}, got {k}")
        random_sets = torch.stack([torch.randperm(n_units, generator=generator)[:k] for _ in range(draws)])
        for ablation, values in ablations:
            fixed: list[tuple[Selection, torch.Tensor]] = [
                ("chain", torch.tensor(list(chain_units[:k]))),
                ("activation", by_activation[:k]),
            ]
            for selection, units in fixed:
                after = predicted_outcome(ablated(units, values, 1)[0], class_index)
                scores.append(_score(layer, ablation, selection, k, base, [after]))
            logits = ablated(random_sets, values, draws)
            outcomes = [predicted_outcome(row, class_index) for row in logits]
            scores.append(_score(layer, ablation, "random", k, base, outcomes))
    return scores


def _score(
    layer: str, ablation: Ablation, selection: Selection, k: int, base: Outcome, after: list[Outcome]
) -> AblationScore:
    margins = [base.margin - a.margin for a in after]
    return AblationScore(
        layer=layer, ablation=ablation, selection=selection, k=k,
        logit_drop=statistics.fmean(base.logit - a.logit for a in after),
        probability_drop=statistics.fmean(base.probability - a.probability for a in after),
        margin_drop=statistics.fmean(margins), draws=len(after),
        margin_drop_std=statistics.pstdev(margins) if len(margins) > 1 else 0.0,
    )  # fmt: skip


def margin_ratio(scores: Sequence[AblationScore], k: int, ablation: Ablation = "zero") -> float:
    """Chain margin drop / random margin drop at `k` (how much more the chain matters)."""
    found = {s.selection: s for s in scores if s.k == k and s.ablation == ablation}
    if "chain" not in found or "random" not in found:
        raise ValueError(f"no chain and random scores for k={k}, ablation {ablation}")
    random = found["random"].margin_drop
    return found["chain"].margin_drop / random if random > 0 else float("inf")
