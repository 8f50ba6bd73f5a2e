"""The agent's `visualize(n)` tool backend: n feature visualizations of the unit it explains.

Exemplars show what drives a unit among images that exist; a visualization shows what drives it
most, free of the probe set's correlations (Olah et al., Distill 2017). `TorchUnitVisualizer`
optimises images for the unit with `coin_scale.visualize` (decorrelated Fourier parameterisation,
transformation robustness, a diversity term when n > 1), a few dozen steps so an agent can afford
it on a CPU, under the module's lock, since meters of the same module share it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image
from torch import nn

from coin_scale.agent.subject import module_lock
from coin_scale.models.layers import Layout
from coin_scale.models.preprocess import Preprocess
from coin_scale.visualize.optimize import DEFAULT_POLISH

MAX_VISUALIZATIONS = 4
"""Images one `visualize` call may ask for."""


class Visualizer(Protocol):
    """Synthesises images that drive one unit."""

    def visualize(self, n: int, seed: int) -> list[Image.Image]:
        """`n` images, deterministic for `seed`."""
        ...


@dataclass(frozen=True, kw_only=True)
class VisualizationSpec:
    """What a `TorchUnitVisualizer` optimises, as plain picklable data: a replica builds the
    visualizer from it on its own copy of the model (`render_pngs`)."""

    layer: str
    layout: Layout
    unit: int
    direction: torch.Tensor | None = None
    """An SAE feature's decoder column (d_in,), or None for the channel."""
    steps: int = 48
    size: int | None = None
    lr: float = 0.05
    diversity_weight: float = 0.05
    polish: float = DEFAULT_POLISH


def render_pngs(
    module: nn.Module, preprocess: Preprocess, spec: VisualizationSpec, n: int, seed: int
) -> tuple[list[bytes], list[float]]:
    """`n` visualizations of `spec` through `module` (the caller holds whatever lock keeps other
    hooks off the module), PNG-encoded, and the objective's value on each (as `coin-scale
    visualize` records it)."""
    visualizer = TorchUnitVisualizer.from_spec(module, preprocess, spec)
    images, values = visualizer.render(n, seed, locked=False)
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out, values


class TorchUnitVisualizer:
    """A channel of a layer (or, with `direction`, a direction in its activation space such as an
    SAE feature's decoder column), visualised through a torch module."""

    def __init__(
        self,
        module: nn.Module,
        preprocess: Preprocess,
        layer_name: str,
        layout: Layout,
        unit: int,
        *,
        direction: torch.Tensor | None = None,
        steps: int = 48,
        size: int | None = None,
        lr: float = 0.05,
        diversity_weight: float = 0.05,
        polish: float = DEFAULT_POLISH,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps: expected >= 1; got {steps}")
        self.module = module
        self.preprocess = preprocess
        self.layer_name = layer_name
        self.layout = layout
        self.unit = unit
        self.direction = direction
        self.steps = steps
        self.size = size or preprocess.crop
        self.lr = lr
        self.diversity_weight = diversity_weight
        self.polish = polish

    @classmethod
    def from_spec(
        cls, module: nn.Module, preprocess: Preprocess, spec: VisualizationSpec
    ) -> TorchUnitVisualizer:
        """The visualizer of `spec` through `module`."""
        return cls(
            module, preprocess, spec.layer, spec.layout, spec.unit, direction=spec.direction,
            steps=spec.steps, size=spec.size, lr=spec.lr, diversity_weight=spec.diversity_weight,
            polish=spec.polish,
        )  # fmt: skip

    def spec(self) -> VisualizationSpec:
        """This visualizer as plain data (what a replica needs to rebuild it)."""
        return VisualizationSpec(
            layer=self.layer_name, layout=self.layout, unit=self.unit, direction=self.direction,
            steps=self.steps, size=self.size, lr=self.lr, diversity_weight=self.diversity_weight,
            polish=self.polish,
        )  # fmt: skip

    def objective(self, n: int = 1):  # type: ignore[no-untyped-def]
        """What the images maximise: the unit (channel mean or direction), plus diversity for n > 1."""
        from coin_scale.visualize import channel, direction, diversity

        if self.direction is not None:
            objective = direction(self.layer_name, self.direction, layout=self.layout)
        else:
            objective = channel(self.layer_name, self.unit, layout=self.layout)
        if n > 1 and self.diversity_weight > 0:
            objective = objective + self.diversity_weight * diversity(
                self.layer_name, layout=self.layout
            )
        return objective

    def visualize(self, n: int, seed: int, *, locked: bool = True) -> list[Image.Image]:
        """`n` images optimised for the unit, 8-bit RGB at `size` pixels; under the module's lock
        unless `locked` is False (the caller keeps other hooks off the module)."""
        return self.render(n, seed, locked=locked)[0]

    def render(self, n: int, seed: int, *, locked: bool = True) -> tuple[list[Image.Image], list[float]]:
        """`visualize`'s images and the objective's value on each (of n = 1: the unit's)."""
        import contextlib

        from coin_scale.visualize import make_param, render, standard_transforms, to_pil

        if not 1 <= n <= MAX_VISUALIZATIONS:
            raise ValueError(f"n: expected 1 to {MAX_VISUALIZATIONS}; got {n}")
        param = make_param("fft", self.size, batch=n, generator=torch.Generator().manual_seed(seed))
        lock = module_lock(self.module) if locked else contextlib.nullcontext()
        with lock:
            result = render(
                self.module, self.objective(n), param, steps=self.steps, lr=self.lr,
                transforms=standard_transforms(self.size), seed=seed, preprocess=self.preprocess,
                polish=self.polish,
            )  # fmt: skip
        return [to_pil(image) for image in result.images], [float(v) for v in result.values]
