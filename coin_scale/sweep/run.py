"""Sweep steps built so far: prediction, unit selection by contribution, exemplars of each unit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from coin_scale.chain.attribution import UnitContributions, unit_contributions
from coin_scale.errors import UserError
from coin_scale.models import ModelSource, build_module, describe_layers, find_layer, resolve_model
from coin_scale.models.layers import last_block
from coin_scale.sweep.config import SweepConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What the sweep found for one image."""

    model: str
    random_weights: bool
    top_classes: list[tuple[str, float]]
    """(class name, probability), best first."""
    contributions: UnitContributions
    positive: list[tuple[int, float]]
    negative: list[tuple[int, float]]
    exemplars: dict[int, list[tuple[float, str, str | None]]]
    """unit -> (activation, image path, label), strongest first; empty without a probe set."""


def load_image(path: str) -> Image.Image:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"image {file} does not exist")
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise UserError(f"cannot read image {file}: {str(err).splitlines()[0]}") from None


def run_sweep(config: SweepConfig) -> SweepResult:
    """Predict, select the layer's units by their contribution to the predicted logit."""
    image = load_image(config.image)
    payload = resolve_model(ModelSource(model=config.model, weights=config.weights, seed=config.seed))
    module = build_module(payload)
    layers = describe_layers(module, payload.arch, payload.preprocess.crop)
    layer = (
        find_layer(layers, config.layer, payload.model_id) if config.layer else last_block(module, layers)
    )
    inputs = payload.preprocess.normalize(payload.preprocess.load(image).unsqueeze(0))
    with torch.inference_mode():
        probs = module(inputs).softmax(dim=1)[0]
    top = torch.topk(probs, k=min(5, probs.numel()))
    top_classes = [(payload.class_names[int(i)], float(p)) for p, i in zip(top.values, top.indices, strict=True)]
    contributions = unit_contributions(module, layer.name, layer.layout, inputs)
    positive = contributions.top(config.top_k)
    negative = contributions.top(config.negatives, negative=True) if config.negatives else []
    exemplars: dict[int, list[tuple[float, str, str | None]]] = {}
    if config.probe:
        units = [u for u, _ in positive + negative]
        exemplars = _exemplars(config, config.probe, layer.name, units)
    return SweepResult(
        model=payload.model_id, random_weights=payload.random_weights, top_classes=top_classes,
        contributions=contributions, positive=positive, negative=negative, exemplars=exemplars,
    )  # fmt: skip


def _exemplars(
    config: SweepConfig, probe: str, layer: str, units: list[int]
) -> dict[int, list[tuple[float, str, str | None]]]:
    """Dissect the layer over the probe set (reusing a cached dissection) and read the exemplars."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.dissect.pipeline import dissect
    from coin_scale.storage import connect

    result = dissect(
        DissectConfig(
            model=config.model, weights=config.weights, seed=config.seed, layer=layer,
            probe=probe, warehouse=config.warehouse, top_k=max(config.exemplars, 16),
            address=config.address,
        )
    )  # fmt: skip
    con = connect(config.warehouse)
    rows = con.execute(
        "SELECT unit, activation, image_path, label FROM exemplars "
        "WHERE dissection_id = ? AND rank < ? ORDER BY unit, rank",
        [result.dissection_id, config.exemplars],
    ).fetchall()
    wanted = set(units)
    found: dict[int, list[tuple[float, str, str | None]]] = {}
    for unit, activation, path, label in rows:
        if unit in wanted:
            found.setdefault(unit, []).append((activation, path, label))
    return found
