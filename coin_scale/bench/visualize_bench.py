"""Does feature visualization work? On a trained model, each unit's optimised image against its top
probe exemplar, measured the same way, and for colour-labelled units the image's dominant hue.

The units are dissected in process (no Ray): the probe images go through `ActivationCapture`, the
dissection's own hooks and spatial reductions, once with `max` and once with `mean`. A unit's top
exemplar under a reduction is the probe image where that reduction of the unit is largest, and its
visualization (optimised for the channel mean, as `coin-scale visualize` does, then rounded to
8 bits like a saved PNG) is measured by the same capture with the same reduction.
"""

from __future__ import annotations

import colorsys
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from coin_scale.concepts import ConceptMatrix
from coin_scale.explain import OfflineExplainerConfig, explain_units
from coin_scale.models.activations import (
    REDUCTIONS,
    ActivationCapture,
    Reduction,
    decode_batch,
)
from coin_scale.models.layers import LayerInfo
from coin_scale.models.preprocess import Preprocess
from coin_scale.probe import ProbeSet
from coin_scale.visualize import channel, make_param, render, standard_transforms, to_uint8
from coin_scale.visualize.optimize import DEFAULT_POLISH

HUE_MIN_SATURATION = 0.25
"""Pixels less saturated than this (HSV, 0-1) have no reliable hue and are left out."""
HUE_MIN_VALUE = 0.2
"""Pixels darker than this (HSV value, 0-1) are left out for the same reason."""
HUE_MIN_SHARE = 0.05
"""An image with fewer qualifying pixels than this share has no dominant hue."""
HUE_BINS = 36
"""Bins of the hue histogram (10 degrees each)."""
SAME_HUE_DEGREES = 8.0
"""Named colours whose hues are this close (orange and brown) count as one hue."""
TRANSFORMS = ("standard", "none")
"""Transform sets the bench can render under."""


@dataclass(frozen=True, kw_only=True)
class VisualizeBenchConfig:
    """How to render and compare; the model, layer and probe are resolved by the caller."""

    units: tuple[int, ...] | None = None
    """Units of the layer to evaluate (None: every unit)."""
    steps: int = 256
    size: int | None = None
    """Side of the visualizations in pixels (None: the model's crop)."""
    seed: int = 0
    lr: float = 0.05
    param: str = "fft"
    transforms: str = "standard"
    """`standard` (jitter, zoom, rotation, as `coin-scale visualize`) or `none`."""
    polish: float = DEFAULT_POLISH
    """Fraction of the last steps run without the transforms (`render`'s `polish`), as
    `coin-scale visualize`."""
    batch_size: int = 64
    """Probe images per forward pass of the dissection."""
    quantile: float = 0.9
    """Mask quantile of the offline explainer that labels the units."""
    reduction: Reduction = "max"
    """The dissection's reduction: the headline comparison and the offline labels use it."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1; got {self.steps}, "
                             f"{self.batch_size}")  # fmt: skip
        if self.size is not None and self.size < 2:
            raise ValueError(f"size must be at least 2 pixels; got {self.size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive; got {self.lr}")
        if not 0.0 <= self.polish <= 1.0:
            raise ValueError(f"polish must be between 0 and 1; got {self.polish}")
        if self.transforms not in TRANSFORMS:
            raise ValueError(f"transforms must be one of {TRANSFORMS}; got {self.transforms!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}; got {self.reduction!r}")


@dataclass(frozen=True)
class UnitComparison:
    """One unit: its visualization against its top exemplar under each reduction."""

    unit: int
    label: str
    """The offline explainer's formula (`to_text`), "" when not explained."""
    visualization: dict[str, float]
    """Reduction -> the unit's activation on its visualization (8-bit, as saved)."""
    exemplar: dict[str, float]
    """Reduction -> the unit's activation on its top exemplar under that reduction."""
    exemplar_index: dict[str, int]
    """Reduction -> probe index of that top exemplar."""
    seconds: float
    """Wall time of the render."""
    label_colours: tuple[str, ...] = ()
    """Colours the label names positively (`color=X`, not after AND NOT)."""
    dominant_hue: str | None = None
    """Named colour(s) nearest the visualization's dominant hue, e.g. `orange/brown`."""
    colour_match: bool | None = None
    """Whether the dominant hue is one of `label_colours` (None: no chromatic colour label)."""
    colour_only: bool = False
    """Whether every concept the label names positively is a colour: the label *is* a colour
    (`(color=red OR color=pink) AND NOT light=dim`), not a shape or a colour."""

    def beats(self, reduction: str) -> bool:
        return self.visualization[reduction] > self.exemplar[reduction]

    def ratio(self, reduction: str) -> float:
        """Visualization over exemplar activation (inf when the exemplar is not above 0)."""
        top = self.exemplar[reduction]
        return self.visualization[reduction] / top if top > 0 else math.inf


@dataclass(frozen=True)
class VisualizeBenchResult:
    """Per-unit comparisons and what the bench needs to draw them."""

    layer: str
    reduction: Reduction
    size: int
    """Side of the visualizations in pixels."""
    units: list[UnitComparison]
    images: dict[int, torch.Tensor] = field(repr=False)
    """Unit -> its visualization, uint8 (3, size, size)."""
    exemplars: dict[int, torch.Tensor] = field(repr=False)
    """Unit -> its top exemplar under `reduction`, uint8 (3, crop, crop)."""

    def summary(self) -> dict[str, Any]:
        """The headline figures, JSON-ready."""
        out: dict[str, Any] = {"layer": self.layer, "units_evaluated": len(self.units),
                               "headline_reduction": self.reduction}  # fmt: skip
        for reduction in REDUCTIONS:
            ratios = [u.ratio(reduction) for u in self.units]
            wins = sum(u.beats(reduction) for u in self.units)
            out[f"beats_top_exemplar_{reduction}"] = {
                "fraction": round(wins / len(self.units), 4) if self.units else None,
                "count": wins,
                "median_ratio": _round(statistics.median(ratios)) if ratios else None,
            }
        out["colour_units"] = _colour_summary([u for u in self.units if u.colour_only], self.units)
        out["colour_mentioning_units"] = _colour_summary(self.units, self.units)
        seconds = [u.seconds for u in self.units]
        out["seconds_per_visualization"] = {
            "median": round(statistics.median(seconds), 3) if seconds else None,
            "total": round(sum(seconds), 1),
        }
        return out


def _colour_summary(
    units: Sequence[UnitComparison], population: Sequence[UnitComparison]
) -> dict[str, Any]:
    """How many of `units` with a chromatic colour in their label show that hue, and the chance
    rate: the mean share of all of `population`'s visualizations that show each label's hue."""
    coloured = [u for u in units if u.colour_match is not None]
    matched = sum(bool(u.colour_match) for u in coloured)
    chromatic = named_hues()
    hues = [set((p.dominant_hue or "").split("/")) for p in population]
    chance = [
        sum(bool(h & {c for c in u.label_colours if c in chromatic}) for h in hues) / len(hues)
        for u in coloured
    ]
    return {
        "evaluated": len(coloured),
        "hue_matches_label": matched,
        "fraction": round(matched / len(coloured), 4) if coloured else None,
        "chance_fraction": round(statistics.fmean(chance), 4) if chance else None,
        "achromatic_labels_skipped": sum(
            1 for u in units if u.label_colours and u.colour_match is None
        ),
    }


def _round(value: float) -> float | str:
    return round(value, 3) if math.isfinite(value) else "inf"


def dissect_in_process(
    module: nn.Module,
    preprocess: Preprocess,
    layer: LayerInfo,
    probe: ProbeSet,
    *,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """({reduction: float (image, unit)}, probe indices) over the readable probe images: the
    dissection's decode, hooks and reductions, in this process."""
    capture = ActivationCapture(module, {layer.name: layer.layout}, REDUCTIONS)
    items = [(image.index, image.path) for image in probe.images]
    parts: dict[str, list[torch.Tensor]] = {r: [] for r in REDUCTIONS}
    indices: list[int] = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            decoded = decode_batch(items[start : start + batch_size], preprocess)
            if decoded.indices:
                values = capture(preprocess.normalize(decoded.pixels))[layer.name]
                for reduction in REDUCTIONS:
                    parts[reduction].append(values[reduction])
                indices.extend(decoded.indices)
            if progress is not None:
                progress(len(decoded.indices) + len(decoded.failures))
    if not indices:
        raise ValueError(f"none of the {len(items)} probe images under {probe.root} could be read")
    return {r: torch.cat(parts[r]) for r in REDUCTIONS}, indices


def measure_pixels(
    module: nn.Module, preprocess: Preprocess, layer: LayerInfo, unit: int, pixels: torch.Tensor
) -> dict[str, float]:
    """Reduction -> unit `unit`'s activation on uint8 `pixels` (3, h, w), through the same
    capture and normalisation as the dissection."""
    capture = ActivationCapture(module, {layer.name: layer.layout}, REDUCTIONS)
    with torch.inference_mode():
        values = capture(preprocess.normalize(pixels.unsqueeze(0)))[layer.name]
    return {r: float(values[r][0, unit]) for r in REDUCTIONS}


_CONCEPT = re.compile(r"(AND NOT )?([A-Za-z_]+)=([^\s()]+)")


def positive_concepts(formula: str) -> tuple[str, ...]:
    """Concepts a formula names positively: `(color=red AND NOT shape=star)` -> ('color=red',).
    Beam search only negates single concepts, so `AND NOT ` right before a leaf negates it."""
    found = [f"{m.group(2)}={m.group(3)}" for m in _CONCEPT.finditer(formula) if not m.group(1)]
    return tuple(dict.fromkeys(found))


def label_colours(formula: str) -> tuple[str, ...]:
    """Colours a formula names positively: `(color=red AND NOT color=blue)` -> ('red',)."""
    return tuple(c.split("=", 1)[1] for c in positive_concepts(formula) if c.startswith("color="))


def named_hues() -> dict[str, float]:
    """Hue in degrees of each chromatic named colour of the renderer (not white or black)."""
    from unity_pool import vocab

    hues = {}
    for name, (r, g, b) in vocab.COLOR_RGB.items():
        hue, saturation, _ = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        if saturation >= HUE_MIN_SATURATION:
            hues[name] = hue * 360.0
    return hues


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def dominant_hue(pixels: torch.Tensor) -> float | None:
    """Centre (degrees) of the fullest bin of the hue histogram of uint8 `pixels` (3, h, w) over
    saturated, non-dark pixels; None when too few pixels qualify."""
    array = pixels.permute(1, 2, 0).contiguous().numpy()
    hsv = torch.from_numpy(np.array(Image.fromarray(array).convert("HSV")))
    hue = hsv[..., 0].float() * (360.0 / 256.0)
    keep = (hsv[..., 1] >= HUE_MIN_SATURATION * 255) & (hsv[..., 2] >= HUE_MIN_VALUE * 255)
    if int(keep.sum()) < HUE_MIN_SHARE * keep.numel():
        return None
    counts = torch.histc(hue[keep], bins=HUE_BINS, min=0.0, max=360.0)
    return (int(counts.argmax()) + 0.5) * 360.0 / HUE_BINS


def hue_names(hue: float | None) -> tuple[str, ...]:
    """The chromatic named colours nearest `hue`, with any others within SAME_HUE_DEGREES of the
    nearest (orange and brown share a hue); () for None."""
    if hue is None:
        return ()
    hues = named_hues()
    nearest = min(hues, key=lambda name: _hue_distance(hue, hues[name]))
    return tuple(
        name for name, h in hues.items() if _hue_distance(h, hues[nearest]) <= SAME_HUE_DEGREES
    )


def _colour_fields(formula: str, pixels: torch.Tensor) -> dict[str, Any]:
    colours = label_colours(formula)
    chromatic = [c for c in colours if c in named_hues()]
    names = hue_names(dominant_hue(pixels))
    return {
        "label_colours": colours,
        "dominant_hue": "/".join(names) or None,
        "colour_match": bool(set(names) & set(chromatic)) if chromatic else None,
        "colour_only": bool(colours) and len(colours) == len(positive_concepts(formula)),
    }


def visualize_bench(
    module: nn.Module,
    preprocess: Preprocess,
    layer: LayerInfo,
    probe: ProbeSet,
    concepts: ConceptMatrix,
    config: VisualizeBenchConfig,
    *,
    on_unit: Callable[[UnitComparison], None] | None = None,
) -> VisualizeBenchResult:
    """Dissect `layer` over `probe`, label its units offline, render each unit of `config.units`
    and compare it with its top exemplar under both reductions."""
    units = list(config.units) if config.units is not None else list(range(layer.units))
    bad = [u for u in units if not 0 <= u < layer.units]
    if bad:
        raise ValueError(f"unit {bad[0]} is out of range: {layer.name} has {layer.units} units")
    module.eval()
    acts, indices = dissect_in_process(module, preprocess, layer, probe,
                                       batch_size=config.batch_size)  # fmt: skip
    readable = set(indices)
    keep = torch.tensor([i for i, image in enumerate(probe.images) if image.index in readable])
    labels = explain_units(acts[config.reduction], replace(concepts, matrix=concepts.matrix[:, keep]),
                           OfflineExplainerConfig(quantile=config.quantile))  # fmt: skip
    size = config.size or preprocess.crop
    path_of = {image.index: image.path for image in probe.images}
    comparisons, images, exemplars = [], {}, {}
    for unit in units:
        top: dict[str, int] = {r: indices[int(acts[r][:, unit].argmax())] for r in REDUCTIONS}
        pixels = {r: _load(path_of[top[r]], preprocess) for r in REDUCTIONS}
        comparison, image = _compare_unit(
            module, preprocess, layer, unit, pixels, config, size, labels[unit].formula
        )
        comparison = replace(comparison, exemplar_index=top)
        comparisons.append(comparison)
        images[unit], exemplars[unit] = image, pixels[config.reduction]
        if on_unit is not None:
            on_unit(comparison)
    return VisualizeBenchResult(layer=layer.name, reduction=config.reduction, size=size,
                                units=comparisons, images=images, exemplars=exemplars)  # fmt: skip


def _compare_unit(
    module: nn.Module,
    preprocess: Preprocess,
    layer: LayerInfo,
    unit: int,
    exemplar_pixels: dict[Reduction, torch.Tensor],
    config: VisualizeBenchConfig,
    size: int,
    formula: str,
) -> tuple[UnitComparison, torch.Tensor]:
    """Render `unit` (channel mean) and measure it and its top exemplars under each reduction;
    also returns the 8-bit visualization."""
    param = make_param(config.param, size, batch=1,
                       generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    result = render(module, channel(layer.name, unit, layout=layer.layout), param,
                    steps=config.steps, lr=config.lr,
                    transforms=standard_transforms(size) if config.transforms == "standard" else (),
                    seed=config.seed, preprocess=preprocess, polish=config.polish)  # fmt: skip
    image = to_uint8(result.images[0])
    exemplar: dict[str, float] = {
        r: measure_pixels(module, preprocess, layer, unit, exemplar_pixels[r])[r]
        for r in REDUCTIONS
    }
    comparison = UnitComparison(
        unit=unit, label=formula, visualization=measure_pixels(module, preprocess, layer, unit, image),
        exemplar=exemplar, exemplar_index={}, seconds=result.seconds,
        **_colour_fields(formula, image),
    )  # fmt: skip
    return comparison, image


def _load(path: str, preprocess: Preprocess) -> torch.Tensor:
    """A probe image as the dissection saw it: uint8 (3, crop, crop)."""
    with Image.open(path) as image:
        return preprocess.load(image)


def _pil(pixels: torch.Tensor, tile: int) -> Image.Image:
    image = Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    return (
        image
        if image.size == (tile, tile)
        else image.resize((tile, tile), Image.Resampling.LANCZOS)
    )


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def contact_sheet(
    result: VisualizeBenchResult, units: Sequence[int], *, columns: int = 4, tile: int = 96
) -> Image.Image:
    """A grid of cells, each a unit's visualization beside its top exemplar, captioned with the
    unit, the activation of both and the offline label."""
    by_unit = {u.unit: u for u in result.units}
    chosen = [u for u in units if u in by_unit]
    if not chosen:
        raise ValueError("a contact sheet needs at least one evaluated unit")
    gap, caption = 6, 30
    cell_w, cell_h = 2 * tile + 2 + gap, tile + caption + gap
    rows = -(-len(chosen) // columns)
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), "white")
    draw, font = ImageDraw.Draw(sheet), _font(11)
    r = result.reduction
    for i, unit in enumerate(chosen):
        x, y = gap + (i % columns) * cell_w, gap + (i // columns) * cell_h
        sheet.paste(_pil(result.images[unit], tile), (x, y))
        sheet.paste(_pil(result.exemplars[unit], tile), (x + tile + 2, y))
        u = by_unit[unit]
        line = (
            f"{result.layer}/{unit}  vis {u.visualization[r]:.1f} vs ex {u.exemplar[r]:.1f} ({r})"
        )
        draw.text((x, y + tile + 2), line, fill=(30, 30, 30), font=font)
        draw.text((x, y + tile + 15), _short(u.label or "(no label)", 2 * tile), fill=(90, 40, 40),
                  font=font)  # fmt: skip
    return sheet


def _short(text: str, width: int) -> str:
    """`text` cut to fit about `width` pixels of an 11 px font."""
    most = max(4, width // 6)
    return text if len(text) <= most else text[: most - 1] + "…"


def save_png(image: Image.Image, path: str | Path) -> Path:
    """`image` as an optimised PNG at `path` (folders created), written atomically."""
    from coin_scale.sae.cache import write_atomic

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda tmp: image.save(tmp, format="PNG", optimize=True))
    return target


def report(
    result: VisualizeBenchResult, config: VisualizeBenchConfig, **extra: Any
) -> dict[str, Any]:
    """The JSON the bench prints: settings, the headline figures, then every unit."""
    per_unit = []
    for u in result.units:
        row = asdict(u)
        row["label_colours"] = list(u.label_colours)
        row["ratio"] = {r: _round(u.ratio(r)) for r in REDUCTIONS}
        row["visualization"] = {r: round(v, 4) for r, v in u.visualization.items()}
        row["exemplar"] = {r: round(v, 4) for r, v in u.exemplar.items()}
        row["seconds"] = round(u.seconds, 3)
        per_unit.append(row)
    return {
        "benchmark": "visualize",
        **extra,
        "steps": config.steps, "size": result.size, "seed": config.seed, "lr": config.lr,
        "param": config.param, "transforms": config.transforms, "polish": config.polish, "objective": "channel mean (what coin-scale visualize maximises)",
        "measured": "both images through the dissection's hooks, 8-bit pixels, same normalisation; "
                    "each reduction compares against the top exemplar under that reduction",
        **result.summary(),
        "per_unit": per_unit,
    }  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class VisualizeBenchRun:
    """What `coin-scale bench visualize` resolves: model, layer, probe set and outputs."""

    model: str
    """A checkpoint or model name (the CLI turns `probe` into the cached probe CNN's path)."""
    weights: str = "default"
    layer: str | None = None
    """Layer of the units (None: the model's last block)."""
    probe: str | None = None
    """Probe folder (None: the cached rendered single-object set the sweep-quality bench uses)."""
    probe_images: int = 1000
    out: str | None = None
    """Folder for each unit's visualization, `<layer>_<unit>.png`."""
    sheet: str | None = None
    """Path of the contact sheet PNG."""
    sheet_units: int = 32
    """Units on the contact sheet (the first evaluated ones)."""
    progress: bool = True


def run_visualize_bench(run: VisualizeBenchRun, config: VisualizeBenchConfig) -> dict[str, Any]:
    """Resolve the model, layer and probe of `run`, run `visualize_bench`, write the PNGs and
    the contact sheet, and return the report."""
    import sys

    from coin_scale.models import (
        ModelSource,
        build_module,
        describe_layers,
        find_layer,
        resolve_model,
    )
    from coin_scale.models.layers import last_block
    from coin_scale.probe import scan_probe
    from coin_scale.probe.concepts import concepts_from_probe
    from coin_scale.probe.rendered import rendered_probe

    payload = resolve_model(ModelSource(model=run.model, weights=run.weights))
    module = build_module(payload)
    layers = describe_layers(module, payload.arch, payload.preprocess.crop)
    layer = (
        find_layer(layers, run.layer, payload.model_id) if run.layer else last_block(module, layers)
    )
    root = run.probe or rendered_probe(
        run.probe_images, payload.preprocess.crop, progress=run.progress, single_object=True
    )
    probe = scan_probe(root)

    def on_unit(u: UnitComparison) -> None:
        if run.progress:
            r = config.reduction
            print(f"{layer.name}/{u.unit}: vis {u.visualization[r]:.2f} vs exemplar "
                  f"{u.exemplar[r]:.2f} ({r}), {u.seconds:.1f}s  {u.label}", file=sys.stderr)  # fmt: skip

    result = visualize_bench(module, payload.preprocess, layer, probe, concepts_from_probe(probe),
                             config, on_unit=on_unit)  # fmt: skip
    if run.out:
        for unit, pixels in result.images.items():
            save_png(_pil(pixels, result.size), Path(run.out) / f"{layer.name}_{unit}.png")
    if run.sheet:
        save_png(
            contact_sheet(result, [u.unit for u in result.units][: run.sheet_units]), run.sheet
        )
    return report(result, config, model=payload.model_id, probe=probe.root,
                  probe_images=len(probe.images), out=run.out, sheet=run.sheet)  # fmt: skip
