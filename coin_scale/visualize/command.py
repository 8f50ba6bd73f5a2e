"""`coin-scale visualize`'s work on one unit as plain picklable data, run on a model replica
(`ModuleCall(visualize_unit, spec)`), so the command's driver holds no model (issue 19).

`UnitVisualization` carries everything the objective and the optimisation need (the unit, or an
SAE feature's decoder direction, the penalties, the parameterisation, the steps); `visualize_unit`
builds the objective on the replica, optimises, encodes each image as an 8-bit PNG and measures
the objective on the PNG as decoded (what a reader of the file gets), as the command always did.
`check_size` is the command's dry pass at a requested image size.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import torch
from torch import nn

from coin_scale.models.layers import Layout
from coin_scale.models.preprocess import Preprocess
from coin_scale.visualize.objectives import Objective, channel, direction, diversity, tv
from coin_scale.visualize.optimize import measure, render
from coin_scale.visualize.param import make_param, to_pil
from coin_scale.visualize.transforms import standard_transforms


@dataclass(frozen=True, kw_only=True)
class UnitVisualization:
    """One unit's visualization run, as the command's flags set it."""

    layer: str
    layout: Layout
    unit: int
    direction: torch.Tensor | None = None
    """An SAE feature's decoder column (d_in,); None for the layer's channel."""
    name: str = ""
    """The objective's name (an SAE feature: 'sae(layer, unit)')."""
    steps: int
    size: int
    batch: int = 1
    param: str = "fft"
    lr: float = 0.05
    polish: float = 0.0
    tv: float = 0.0
    diversity: float = 0.0
    seed: int = 0
    preprocess: Preprocess


@dataclass(frozen=True, slots=True)
class UnitImages:
    """A unit's images as PNG bytes, the objective on each decoded PNG, and the seconds taken."""

    unit: int
    pngs: tuple[bytes, ...]
    values: tuple[float, ...]
    seconds: float


def unit_objective(spec: UnitVisualization) -> Objective:
    """What the unit's images are measured by (the channel, or the SAE feature's direction)."""
    if spec.direction is not None:
        return direction(spec.layer, spec.direction, layout=spec.layout, name=spec.name or None)
    return channel(spec.layer, spec.unit, layout=spec.layout)


def visualize_unit(module: nn.Module, spec: UnitVisualization) -> UnitImages:
    """Optimise `spec.batch` images of the unit on `module` and measure each saved image."""
    start = time.perf_counter()
    measured = unit_objective(spec)
    objective = measured
    if spec.tv:
        objective = objective - spec.tv * tv()
    if spec.diversity and spec.batch > 1:
        objective = objective + spec.diversity * diversity(spec.layer, layout=spec.layout)
    param = make_param(spec.param, spec.size, batch=spec.batch,
                       generator=torch.Generator().manual_seed(spec.seed))  # fmt: skip
    result = render(module, objective, param, steps=spec.steps, lr=spec.lr,
                    transforms=standard_transforms(spec.size), seed=spec.seed,
                    polish=spec.polish, preprocess=spec.preprocess)  # fmt: skip
    pngs, values = [], []
    for image in result.images:
        png = _png(image)
        pngs.append(png)
        values.append(float(measure(module, measured, _decode(png), spec.preprocess)[0]))
    return UnitImages(spec.unit, tuple(pngs), tuple(values), time.perf_counter() - start)


def check_size(module: nn.Module, spec: UnitVisualization) -> str | None:
    """None if the model takes `spec.size` images (one pass of a grey image), else its error's
    first line."""
    try:
        measure(module, unit_objective(spec), torch.full((1, 3, spec.size, spec.size), 0.5),
                spec.preprocess)  # fmt: skip
    except (RuntimeError, ValueError, AssertionError, IndexError) as err:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return None


def _png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(png: bytes) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1], as the PNG reads back."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
