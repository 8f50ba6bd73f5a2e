"""Objectives: what an image should maximise, composable as plain Python.

An `Objective` maps what one forward pass captured to one value per image (batch,); `+`, `-`
and multiplication by a number build new objectives, so

    channel("layer4", 3) - 0.1 * tv()

is the mean of channel 3 of layer4 minus a tenth of the image's total variation. Activations are
read in the layer's layout (`coin_scale.models.layers.Layout`): nchw conv maps, nhwc maps
(Swin), ntc tokens (ViT) or nc vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from coin_scale.models.layers import Layout


@dataclass(frozen=True)
class Captured:
    """What one forward pass saw."""

    image: torch.Tensor
    """The images before transforms and normalisation, (batch, 3, height, width) in [0, 1]."""
    activations: dict[str, torch.Tensor]
    """Output of every hooked layer by name, in the layer's own layout."""


@dataclass(frozen=True, eq=False)
class Objective:
    """A named function of a forward pass, one value per image; larger is better."""

    fn: Callable[[Captured], torch.Tensor]
    """Captured -> (batch,) values."""
    layers: frozenset[str]
    """Layers whose outputs `fn` reads (the optimiser hooks exactly these)."""
    name: str
    """Human-readable formula, e.g. `channel(layer4, 3) - 0.1 * tv()`."""

    def __call__(self, captured: Captured) -> torch.Tensor:
        return self.fn(captured)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            value = float(other)
            return Objective(lambda c: self(c) + value, self.layers, f"{self.name} + {value:g}")
        return Objective(
            lambda c: self(c) + other(c), self.layers | other.layers, f"{self.name} + {other.name}"
        )

    def __radd__(self, other: float) -> Objective:
        # sum([...]) starts from 0
        return self if other == 0 else self + other

    def __neg__(self) -> Objective:
        return Objective(lambda c: -self(c), self.layers, f"-({self.name})")

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            return self + (-float(other))
        return Objective(
            lambda c: self(c) - other(c), self.layers | other.layers, f"{self.name} - {other.name}"
        )

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, int | float):
            raise TypeError(
                f"an objective can be multiplied by a number only; got {type(factor).__name__}"
            )
        value = float(factor)
        return Objective(lambda c: value * self(c), self.layers, f"{value:g} * {self.name}")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def positions(act: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A layer output in `layout` -> (batch, channel, positions)."""
    if layout == "nchw":
        return act.flatten(2)
    if layout == "nhwc":
        return act.flatten(1, 2).transpose(1, 2)
    if layout == "ntc":
        return act.transpose(1, 2)
    if layout == "nc":
        return act.unsqueeze(-1)
    raise ValueError(f"unknown layout {layout!r}; one of nchw, nhwc, ntc, nc")


def _layer(captured: Captured, layer: str) -> torch.Tensor:
    try:
        return captured.activations[layer]
    except KeyError:
        raise ValueError(f"layer {layer!r} was not captured; captured: "
                         f"{', '.join(captured.activations) or 'none'}") from None  # fmt: skip


def channel(layer: str, unit: int, *, layout: Layout = "nchw") -> Objective:
    """The mean of unit `unit` of `layer` over every position (the whole map or every token)."""

    def fn(c: Captured) -> torch.Tensor:
        return positions(_layer(c, layer), layout)[:, unit].mean(dim=-1)

    return Objective(fn, frozenset({layer}), f"channel({layer}, {unit})")


def neuron(
    layer: str, unit: int, x: int | None = None, y: int | None = None, *, layout: Layout = "nchw"
) -> Objective:
    """Unit `unit` of `layer` at one spatial position (column x, row y; default the centre); for
    ntc layouts x is the token index, y is ignored."""

    def fn(c: Captured) -> torch.Tensor:
        act = _layer(c, layer)
        if layout == "nc":
            return act[:, unit]
        if layout == "ntc":
            return act[:, act.shape[1] // 2 if x is None else x, unit]
        maps = act if layout == "nchw" else act.permute(0, 3, 1, 2)
        height, width = maps.shape[-2:]
        return maps[:, unit, height // 2 if y is None else y, width // 2 if x is None else x]

    where = "centre" if x is None and y is None else f"x={x}, y={y}"
    return Objective(fn, frozenset({layer}), f"neuron({layer}, {unit}, {where})")


def direction(
    layer: str, vector: torch.Tensor, *, layout: Layout = "nchw", name: str | None = None
) -> Objective:
    """The dot product of every position's channel vector with `vector` (channel,), averaged over
    positions: e.g. an SAE feature's decoder direction."""
    if vector.dim() != 1:
        raise ValueError(f"direction needs a vector (channel,); got shape {tuple(vector.shape)}")
    vec = vector.detach().float()

    def fn(c: Captured) -> torch.Tensor:
        acts = positions(_layer(c, layer), layout)
        if acts.shape[1] != vec.shape[0]:
            raise ValueError(f"direction of width {vec.shape[0]} for layer {layer!r} with "
                             f"{acts.shape[1]} channels")  # fmt: skip
        return torch.einsum("bcp,c->bp", acts, vec.to(acts)).mean(dim=-1)

    return Objective(fn, frozenset({layer}), name or f"direction({layer})")


def diversity(layer: str, *, layout: Layout = "nchw") -> Objective:
    """Minus each image's mean cosine similarity to the other images of the batch, comparing the
    Gram matrices of `layer`'s channels (style, not position); 0 for a batch of one."""

    def fn(c: Captured) -> torch.Tensor:
        acts = positions(_layer(c, layer), layout)
        batch = acts.shape[0]
        if batch < 2:
            return acts.new_zeros(batch)
        gram = torch.einsum("bcp,bdp->bcd", acts, acts).flatten(1)
        gram = F.normalize(gram, dim=1)
        similarity = gram @ gram.T
        off_diagonal = similarity.sum(dim=1) - similarity.diagonal()
        return -off_diagonal / (batch - 1)

    return Objective(fn, frozenset({layer}), f"diversity({layer})")


def tv() -> Objective:
    """Total variation of each image: the mean absolute difference between neighbouring pixels
    (subtract it to favour smooth images)."""

    def fn(c: Captured) -> torch.Tensor:
        image = c.image
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(dim=1)
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(dim=1)
        return dx + dy

    return Objective(fn, frozenset(), "tv()")
