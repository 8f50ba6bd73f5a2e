"""Offline explainer on a synthetic layer with planted formulas: speed and recovery.

The concept matrix is shaped like a rendered probe set's attributes (every image gets one value
of each attribute of `unity_pool.vocab.ATTRIBUTES`, uniformly). Each unit fires on the images of a
planted formula (one concept, A AND B, A OR B or A AND NOT B, covering 5-20% of the images) plus
Gaussian noise times `explain_units` on the whole layer and counts the units whose
recovered formula is the planted one.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from coin_scale.concepts.formula import OPERATORS, Formula, Leaf, evaluate, parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.eval.metrics import covers_same_images, exact_match
from coin_scale.explain.offline import OfflineExplainerConfig, explain_units

log = logging.getLogger(__name__)

PLANTED_KINDS = ("single", "and", "or", "and_not")
"""Shapes of planted formulas, assigned to units round-robin."""


@dataclass(frozen=True, kw_only=True)
class ExplainBenchConfig:
    """What `coin-scale bench explain` measures."""

    units: int = 512
    """Units of the synthetic layer."""
    images: int = 1500
    """Probe images (columns of the concept matrix)."""
    seed: int = 0
    """Seed of the concept matrix, the planted formulas and the noise."""
    noise: float = 0.3
    """Standard deviation of the Gaussian noise added to the 0/1 planted activations."""
    repeats: int = 3
    """Timed runs of the whole layer; the median is reported."""
    explainer: OfflineExplainerConfig = OfflineExplainerConfig(quantile=0.85)
    """Beam search settings; a quantile of 0.85 (15% masks) fits the coverage of planted ORs
    (two ~10% attribute values: ~18%) as well as of single values (9-11%)."""
    coverage: tuple[float, float] = (0.6, 1.4)
    """Planted formulas cover between these multiples of (1 - quantile) of the images."""

    def __post_init__(self) -> None:
        for name in ("units", "images", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name}: expected >= 1; got {getattr(self, name)}. Fix: use 1 or more."
                )
        if self.noise < 0:
            raise ValueError(f"noise: expected >= 0; got {self.noise}. Fix: e.g. 0.3.")


def synthetic_concepts(n_images: int, generator: torch.Generator) -> ConceptMatrix:
    """One uniformly drawn value per attribute per image, as `<attribute>=<value>` concepts."""
    from unity_pool import vocab

    names: list[str] = []
    rows: list[torch.Tensor] = []
    for attribute, values in vocab.ATTRIBUTES.items():
        drawn = torch.randint(0, len(values), (n_images,), generator=generator)
        for index, value in enumerate(values):
            names.append(f"{attribute}={value}")
            rows.append(drawn == index)
    return ConceptMatrix(names=tuple(names), matrix=torch.stack(rows))


def plant_formula(
    kind: str,
    concepts: ConceptMatrix,
    generator: torch.Generator,
    *,
    coverage: tuple[float, float],
    tries: int = 200,
) -> Formula:
    """A random formula of `kind` covering a fraction of the images within `coverage`
    (the last one tried if none does)."""
    formula: Formula = Leaf(0)
    for _ in range(tries):
        a, b = torch.randint(0, concepts.n_concepts, (2,), generator=generator).tolist()
        if kind == "single":
            formula = Leaf(a)
        else:
            attribute = [concepts.names[i].partition("=")[0] for i in (a, b)]
            if attribute[0] == attribute[1]:  # same attribute: empty, or a disguised single
                continue
            formula = OPERATORS[kind].node(Leaf(a), Leaf(b))
        covered = float(evaluate(formula, concepts.matrix).float().mean())
        if coverage[0] <= covered <= coverage[1]:
            break
    return formula


def synthetic_layer(
    config: ExplainBenchConfig,
) -> tuple[ConceptMatrix, list[Formula], torch.Tensor]:
    """(concepts, planted formula per unit, float (image, unit) activations)."""
    generator = torch.Generator().manual_seed(config.seed)
    concepts = synthetic_concepts(config.images, generator)
    share = 1.0 - config.explainer.quantile
    window = (config.coverage[0] * share, config.coverage[1] * share)
    planted = [
        plant_formula(
            PLANTED_KINDS[unit % len(PLANTED_KINDS)], concepts, generator, coverage=window
        )
        for unit in range(config.units)
    ]
    signal = torch.stack([evaluate(f, concepts.matrix) for f in planted], dim=1).float()
    noise = torch.randn(signal.shape, generator=generator) * config.noise
    return concepts, planted, signal + noise


def run_explain_bench(config: ExplainBenchConfig) -> dict[str, Any]:
    """Median seconds for the whole layer, units/s, and the planted-formula recovery rate."""
    concepts, planted, activations = synthetic_layer(config)
    runs = []
    for repeat in range(config.repeats):
        start = time.perf_counter()
        results = explain_units(activations, concepts, config.explainer)
        runs.append(time.perf_counter() - start)
        log.info("repeat %d: %.3fs", repeat, runs[-1])
    names = concepts.names
    exact = same_images = 0
    by_kind: dict[str, list[int]] = {kind: [0, 0] for kind in PLANTED_KINDS}
    for unit, (formula, result) in enumerate(zip(planted, results, strict=True)):
        kind = PLANTED_KINDS[unit % len(PLANTED_KINDS)]
        found = parse_text(result.formula, names) if result.formula else None
        hit = exact_match(found, formula, names)
        exact += hit
        by_kind[kind][0] += hit
        by_kind[kind][1] += 1
        same_images += (result.iou or 0.0) > 0 and covers_same_images(found, formula, concepts.matrix)
    seconds = statistics.median(runs)
    return {
        "benchmark": "explain",
        "units": config.units,
        "images": config.images,
        "concepts": concepts.n_concepts,
        "noise": config.noise,
        "beam_size": config.explainer.beam_size,
        "max_length": config.explainer.max_length,
        "quantile": config.explainer.quantile,
        "threads": torch.get_num_threads(),
        "repeats": config.repeats,
        "seconds": round(seconds, 4),
        "units_per_s": round(config.units / seconds, 1),
        "recovered_fraction": round(exact / config.units, 4),
        "same_images_fraction": round(same_images / config.units, 4),
        "recovered_by_kind": {k: round(h / max(n, 1), 4) for k, (h, n) in by_kind.items()},
        "mean_iou": round(statistics.fmean(r.iou or 0.0 for r in results), 4),
        "runs": [round(r, 4) for r in runs],
    }
