"""`coin-scale eval synthetic`: label accuracy of an explainer on synthetic units of a probe set.

Probe set -> concepts -> synthetic units (spec file or random) -> their activations -> the
explainer -> one `UnitScore` per unit -> a `KindSummary` per kind and overall. This increment
scores the offline explainer on activations taken straight from the probe's ground-truth
concepts; dissection of the synthetic units through Ray and LLM explainers come later (issue 8).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from coin_scale.eval.metrics import KindSummary, UnitScore, score_unit, summarize
from coin_scale.eval.synthetic import (
    DEFAULT_COVERAGE,
    DEFAULT_NOISE,
    FORMULA_KINDS,
    FormulaKind,
    SyntheticUnit,
    load_spec,
    random_units,
    synthetic_activations,
)
from coin_scale.explain.concepts import ConceptMatrix
from coin_scale.explain.formula import parse_text
from coin_scale.explain.offline import OfflineExplainerConfig, UnitExplanation, explain_units
from coin_scale.sweep.config import EXPLAINERS

log = logging.getLogger(__name__)

RENDERED = "rendered"
"""`probe`: the cached rendered probe set (`coin_scale.sweep.inputs.rendered_probe`)."""

PROBE_SIZE = 64
"""Side of the rendered probe images, pixels: the probe model's input size. Synthetic units read
the ground-truth attributes, not the pixels, so the size only picks the cached set."""

Explain = Callable[[torch.Tensor, ConceptMatrix, float], list[UnitExplanation]]
"""(float (image, unit) activations, concepts, quantile) -> one explanation per unit."""


def _offline(
    activations: torch.Tensor, concepts: ConceptMatrix, quantile: float
) -> list[UnitExplanation]:
    return explain_units(activations, concepts, OfflineExplainerConfig(quantile=quantile))


EVAL_EXPLAINERS: Mapping[str, Explain] = MappingProxyType({"offline": _offline})
"""Explainers `eval synthetic` can score, by `--explainer` name."""

LATER_EXPLAINERS = tuple(name for name in EXPLAINERS if name not in EVAL_EXPLAINERS)
"""The sweep's other (LLM) explainers: scoring their free-text labels (through a documented
matcher of text to concepts) is a later increment of issue 8."""


@dataclass(frozen=True, kw_only=True)
class SyntheticEvalConfig:
    """What `coin-scale eval synthetic` measures."""

    n: int = 100
    """Random units (ignored with `spec`)."""
    seed: int = 0
    """Seed of the random formulas and of the activation noise."""
    spec: str | None = None
    """YAML spec file of the units (see `coin_scale.eval.synthetic.parse_spec`); None: random."""
    kinds: tuple[FormulaKind, ...] = FORMULA_KINDS
    """Kinds of random unit, in equal shares."""
    noise: float = DEFAULT_NOISE
    """Standard deviation of the noise on the 0/1 formula indicator (spec units may override)."""
    probe: str = RENDERED
    """`rendered` (rendered once at `PROBE_SIZE` px and cached) or a probe set directory."""
    probe_images: int = 1000
    """Images of the rendered probe set."""
    explainer: str = "offline"
    """Name in `EVAL_EXPLAINERS`."""
    quantile: float = 0.85
    """The explainer's mask quantile; 0.85 (15% masks), as in `coin-scale bench explain`, leaves
    room for ORs of two ~10% concepts; random formulas are drawn to fit it (`coverage`)."""
    coverage: tuple[float, float] = DEFAULT_COVERAGE
    """Random formulas cover between these multiples of (1 - quantile) of the probe images."""
    progress: bool = False
    """Show the progress bar while rendering the probe set."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n: expected >= 1 units; got {self.n}. Fix: e.g. 100.")
        if self.probe_images < 1:
            raise ValueError(
                f"probe_images: expected >= 1; got {self.probe_images}. Fix: e.g. 1000."
            )
        if not self.noise >= 0:
            raise ValueError(f"noise: expected >= 0; got {self.noise}. Fix: e.g. {DEFAULT_NOISE}.")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile: expected in (0, 1); got {self.quantile}. Fix: e.g. 0.85.")
        bad = [k for k in self.kinds if k not in FORMULA_KINDS]
        if bad or not self.kinds:
            raise ValueError(
                f"kinds: expected some of {', '.join(FORMULA_KINDS)}; got "
                f"{', '.join(self.kinds) or 'none'}. Fix: e.g. mono,or."
            )
        if self.explainer in LATER_EXPLAINERS:
            raise ValueError(
                f"explainer {self.explainer!r}: not yet; label accuracy of LLM explainers (their "
                "free-text labels matched to concepts) is a later increment of issue 8. Fix: use "
                "--explainer offline."
            )
        if self.explainer not in EVAL_EXPLAINERS:
            raise ValueError(
                f"explainer: expected one of {', '.join(EVAL_EXPLAINERS)}; got "
                f"{self.explainer!r}. Fix: use --explainer offline."
            )


@dataclass(frozen=True, kw_only=True)
class SyntheticEvalResult:
    """Label accuracy of one explainer on one set of synthetic units."""

    probe: str
    """The probe set directory."""
    n_images: int
    """Probe images."""
    n_concepts: int
    """Concepts of the probe set."""
    units: tuple[SyntheticUnit, ...]
    """The synthetic units, in score order."""
    scores: tuple[UnitScore, ...]
    """One per unit."""
    summary: tuple[KindSummary, ...]
    """One row per kind present, then `all`."""
    seconds: float
    """Wall time of the explainer on all units."""


def probe_concepts(config: SyntheticEvalConfig) -> tuple[str, ConceptMatrix]:
    """(probe directory, its concepts): the cached rendered set, or the given directory."""
    from coin_scale.explain.concepts import concepts_from_probe
    from coin_scale.probe import scan_probe

    if config.probe == RENDERED:
        from coin_scale.sweep.inputs import rendered_probe

        root = rendered_probe(config.probe_images, PROBE_SIZE, progress=config.progress)
    else:
        root = config.probe
    return root, concepts_from_probe(scan_probe(root))


def run_synthetic_eval(config: SyntheticEvalConfig) -> SyntheticEvalResult:
    """Build the units, explain them, score each one against its true formula."""
    root, concepts = probe_concepts(config)
    if config.spec is not None:
        units = load_spec(config.spec, concepts, default_noise=config.noise)
    else:
        units = random_units(
            config.n,
            config.seed,
            concepts,
            mix={kind: 1.0 for kind in config.kinds},
            quantile=config.quantile,
            coverage=config.coverage,
            noise=config.noise,
        )
    activations = synthetic_activations(units, concepts, config.seed)
    start = time.perf_counter()
    explanations = EVAL_EXPLAINERS[config.explainer](activations, concepts, config.quantile)
    seconds = time.perf_counter() - start
    names = concepts.names
    scores = tuple(
        score_unit(
            name=unit.name,
            kind=unit.kind,
            true=parse_text(unit.formula, names),
            predicted=parse_text(e.formula, names) if e.formula else None,
            names=names,
            matrix=concepts.matrix,
            status=e.status,
            iou=e.iou,
        )
        for unit, e in zip(units, explanations, strict=True)
    )
    return SyntheticEvalResult(
        probe=root,
        n_images=concepts.n_images,
        n_concepts=concepts.n_concepts,
        units=units,
        scores=scores,
        summary=summarize(scores),
        seconds=seconds,
    )
