"""InterpScore: selectivity, causality, robustness and human alignment of a unit for its concept.

The four parts follow the InterpScore framework (Bocini et al.), each mapped to [0, 1]:
- S, selectivity: Hedges' g between the unit's activations on clean images of its concept and on
  clean images of other concepts, mapped through the normal CDF as Phi(g / sqrt(2)) (the chance
  that a random concept image out-activates a random other image under normality; 0.5 = none).
- C, causality: how much the model's output moves when the unit is ablated (x0) and amplified
  (x2): C_raw = (mean delta_0 + mean delta_2) / 2 with delta the relative L2 change of the logit
  vector, bounded as 1 - exp(-C_raw). It needs the model and images.
- R, robustness: for each perturbation strength, r = mean |activation| on perturbed concept images
  (those humans still recognise, when ratings exist) / the same on clean ones, scored
  min(r, 1/r); R is the mean over strengths.
- H, human alignment: the share of the concept's images that fire the unit above a threshold
  (a quantile of its clean non-concept activations) which humans recognised as the concept.
The aggregate is the weighted mean of the parts that could be measured, the weights renormalised
over them; which parts went in is recorded beside it, so a missing C is never silently a 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coin_scale.errors import UserError

PARTS = ("S", "C", "R", "H")


@dataclass(frozen=True)
class InterpWeights:
    """Weights of S, C, R and H in the aggregate (normalised to sum 1)."""

    S: float = 0.3
    C: float = 0.3
    R: float = 0.2
    H: float = 0.2

    @classmethod
    def parse(cls, text: str) -> InterpWeights:
        """'0.3 0.3 0.2 0.2' (spaces or commas) -> weights; a clear error for anything else."""
        pieces = text.replace(",", " ").split()
        try:
            values = [float(p) for p in pieces]
        except ValueError:
            raise UserError(f"--weights must be four numbers for S C R H, got {text!r}") from None
        if len(values) != 4:
            raise UserError(f"--weights must be four numbers for S C R H, got {len(values)}")
        if any(v < 0 or not math.isfinite(v) for v in values) or sum(values) <= 0:
            raise UserError(f"--weights must be non-negative with a positive sum, got {text!r}")
        return cls(*values)

    def as_dict(self) -> dict[str, float]:
        return {"S": self.S, "C": self.C, "R": self.R, "H": self.H}


@dataclass(frozen=True)
class InterpScore:
    """One unit's parts (None where not measurable) and their aggregate."""

    S: float | None
    C: float | None
    R: float | None
    H: float | None
    score: float | None
    """Weighted mean over the measured parts; None if none was."""
    parts: tuple[str, ...]
    """The parts that went into `score`."""
    notes: tuple[str, ...] = field(default=())

    def part(self, name: str) -> float | None:
        return {"S": self.S, "C": self.C, "R": self.R, "H": self.H}[name]


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def cohens_d(target: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray) -> float:
    """Standardised mean difference with the pooled sample SD; +-inf when both sets are constant
    and differ, 0 when they are equal."""
    x = np.asarray(target, dtype=np.float64)
    y = np.asarray(other, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Cohen's d needs two values per set, got {x.size} and {y.size}")
    pooled = math.sqrt(
        ((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2)
    )
    diff = float(x.mean() - y.mean())
    if pooled <= 1e-12:
        return 0.0 if abs(diff) <= 1e-12 else math.copysign(math.inf, diff)
    return diff / pooled


def selectivity(target: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray) -> float:
    """S in [0, 1]: Phi(g / sqrt 2) with g Hedges' small-sample-corrected Cohen's d; 0.5 when a
    set has fewer than two images (nothing can be said)."""
    x = np.asarray(target, dtype=np.float64)
    y = np.asarray(other, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        return 0.5
    d = cohens_d(x, y)
    if math.isinf(d):
        return 1.0 if d > 0 else 0.0
    g = d * (1.0 - 3.0 / (4.0 * (x.size + y.size) - 9.0))
    return normal_cdf(g / math.sqrt(2.0))


def stability(
    perturbed: Sequence[float] | np.ndarray, clean: Sequence[float] | np.ndarray
) -> float:
    """min(r, 1/r) of r = mean |perturbed| / mean |clean|: 1 = unchanged, towards 0 = lost."""
    eps = 1e-8
    p = float(np.mean(np.abs(np.asarray(perturbed, dtype=np.float64))))
    c = float(np.mean(np.abs(np.asarray(clean, dtype=np.float64))))
    r = max((p + eps) / (c + eps), eps)
    return min(r, 1.0 / r)


def robustness(
    clean: Sequence[float] | np.ndarray,
    perturbed_by_strength: Mapping[Any, Sequence[float] | np.ndarray],
) -> float | None:
    """R: the mean stability over the perturbation strengths that have images; None without any."""
    if len(clean) == 0:
        return None
    parts = [stability(v, clean) for v in perturbed_by_strength.values() if len(v) > 0]
    return float(np.mean(parts)) if parts else None


def causality(
    ablated_changes: Sequence[float] | np.ndarray, amplified_changes: Sequence[float] | np.ndarray
) -> float | None:
    """C = 1 - exp(-(mean ablated + mean amplified) / 2) over relative output changes."""
    if len(ablated_changes) == 0 or len(amplified_changes) == 0:
        return None
    raw = 0.5 * (float(np.mean(ablated_changes)) + float(np.mean(amplified_changes)))
    return 1.0 - math.exp(-raw)


def relative_change(changed: np.ndarray, base: np.ndarray) -> np.ndarray:
    """||changed - base|| / ||base|| per row (the output's relative move under an intervention)."""
    base = np.asarray(base, dtype=np.float64)
    diff = np.asarray(changed, dtype=np.float64) - base
    norm = np.linalg.norm(base, axis=-1)
    return np.linalg.norm(diff, axis=-1) / np.maximum(norm, 1e-12)


def human_alignment(
    activations: Sequence[float] | np.ndarray,
    recognised: Sequence[float] | np.ndarray,
    threshold: float,
) -> tuple[float, int]:
    """H and how many images it rests on: the share recognised by humans among the concept images
    whose activation exceeds `threshold` (0.0 when none does: the unit never fires for them).
    Images without a rating (NaN) are left out."""
    acts = np.asarray(activations, dtype=np.float64)
    humans = np.asarray(recognised, dtype=np.float64)
    high = (acts > threshold) & np.isfinite(humans)
    if not high.any():
        return 0.0, 0
    return float(humans[high].mean()), int(high.sum())


def aggregate(
    parts: Mapping[str, float | None], weights: InterpWeights
) -> tuple[float | None, tuple[str, ...]]:
    """The weighted mean over the measured parts (weights renormalised) and the parts used."""
    w = weights.as_dict()
    measured = {p: v for p, v in parts.items() if v is not None and w.get(p, 0.0) > 0}
    used = tuple(p for p in PARTS if p in measured)
    total = sum(w[p] for p in used)
    if not used or total <= 0:
        return None, used
    return sum(w[p] * measured[p] for p in used) / total, used


def interp_score(
    *,
    S: float | None,
    C: float | None,
    R: float | None,
    H: float | None,
    weights: InterpWeights,
    notes: Sequence[str] = (),
) -> InterpScore:
    """Bundle the parts with their aggregate."""
    value, used = aggregate({"S": S, "C": C, "R": R, "H": H}, weights)
    return InterpScore(S=S, C=C, R=R, H=H, score=value, parts=used, notes=tuple(notes))
