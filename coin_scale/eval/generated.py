"""MAIA's predictive evaluation on generated images: does a unit's label predict what drives it?

For a label, images are generated from prompts that depict it (`positive`) and from neutral
prompts that do not (`neutral`); the unit's activation (reduced over space as the dissection
reduces it) is measured on each. A label that explains the unit gives the positive images the
higher activations: the scores are both means, their difference, the AUC of positive against
neutral (the chance that a positive image outscores a neutral one; 0.5 is no better than chance)
and Cohen's d.

The positive prompts are the LLM agent's own when it gave some (`finish`'s `test_prompts`, as
MAIA asks its agent), else templates of the label (`predictive_prompts`), the same for every
explainer, so offline and clip labels are scored too; `prompts_from` says which. The neutral
prompts are shared by every unit of a run, so their images are generated once. Pure functions apart from
`generated_activations`, which a model replica runs (`ModuleCall`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from coin_scale.chain.units import UnitView
from coin_scale.eval.interventions import unit_activations
from coin_scale.models.layers import Layout

POSITIVE_TEMPLATES: tuple[str, ...] = (
    "a photo of {label}",
    "a close-up photo of {label}",
    "a photo showing {label}, clearly visible",
    "{label}",
    "a realistic picture of {label} in a natural setting",
)
"""Prompts that depict a label; `{label}` is replaced by it."""

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "a photo of an empty room with white walls",
    "a photo of a grey concrete floor",
    "a photo of a clear blue sky",
    "a photo of a wooden table top",
    "a photo of an empty parking lot",
)
"""Prompts that depict nothing in particular (MAIA's neutral set), one image each."""

SEED = 1000
"""Seed of the first generated image (each prompt has its own)."""


@dataclass(frozen=True, kw_only=True)
class GeneratedScore:
    """A label's predictive score on generated images."""

    mean_positive: float
    """The unit's mean activation on the images of the label's prompts."""
    mean_neutral: float
    """Its mean activation on the neutral prompts' images."""
    delta: float
    """mean_positive - mean_neutral."""
    auc: float
    """P(a positive image's activation > a neutral one's), ties counted half."""
    cohens_d: float
    """delta over the pooled standard deviation (NaN when both sets are constant)."""
    positive_prompts: tuple[str, ...]
    neutral_prompts: tuple[str, ...]
    prompts_from: str = "template"
    """`agent` (the LLM agent's own test prompts, MAIA's protocol) or `template`."""

    def summary(self) -> str:
        """One line for the output."""
        d = "—" if not math.isfinite(self.cohens_d) else f"{self.cohens_d:.2f}"
        whose = "the agent's" if self.prompts_from == "agent" else "the label's"
        return (
            f"generated images: {whose} {len(self.positive_prompts)} prompts "
            f"{self.mean_positive:.3g} vs {len(self.neutral_prompts)} neutral "
            f"{self.mean_neutral:.3g} (AUC {self.auc:.2f}, d {d})"
        )


def predictive_prompts(label: str) -> tuple[str, ...]:
    """The prompts that depict `label` (its words as given, stripped)."""
    words = " ".join(label.split())
    if not words:
        raise ValueError("an empty label has no prompts")
    return tuple(t.format(label=words) for t in POSITIVE_TEMPLATES)


def unit_prompts(label: str, agent_prompts: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """(the positive prompts, where they came from): the agent's, else the label's templates."""
    if agent_prompts:
        return tuple(agent_prompts), "agent"
    return predictive_prompts(label), "template"


def _auc(positive: np.ndarray, neutral: np.ndarray) -> float:
    greater = (positive[:, None] > neutral[None, :]).sum()
    ties = (positive[:, None] == neutral[None, :]).sum()
    return float((greater + 0.5 * ties) / (positive.size * neutral.size))


def generated_score(
    positive: Sequence[float],
    neutral: Sequence[float],
    positive_prompts: Sequence[str],
    neutral_prompts: Sequence[str],
    *,
    prompts_from: str = "template",
) -> GeneratedScore:
    """The score of a label from the unit's activations on its images and the neutral ones."""
    pos, neu = np.asarray(positive, np.float64), np.asarray(neutral, np.float64)
    if not pos.size or not neu.size:
        raise ValueError("a predictive score needs positive and neutral images")
    delta = float(pos.mean() - neu.mean())
    pooled = math.sqrt((pos.var(ddof=1) if pos.size > 1 else 0.0) / 2
                       + (neu.var(ddof=1) if neu.size > 1 else 0.0) / 2)  # fmt: skip
    return GeneratedScore(
        mean_positive=float(pos.mean()), mean_neutral=float(neu.mean()), delta=delta,
        auc=_auc(pos, neu), cohens_d=delta / pooled if pooled > 0 else math.nan,
        positive_prompts=tuple(positive_prompts), neutral_prompts=tuple(neutral_prompts),
        prompts_from=prompts_from,
    )  # fmt: skip


def generated_activations(
    module: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    layer: str,
    units_of: Layout | UnitView,
    pixels: torch.Tensor,
    units: Sequence[int],
) -> np.ndarray:
    """float64 (image, unit): the units' activations on uint8 (image, channel, crop, crop)
    images, normalised by `mean` / `std` (a `ModuleCall` on a replica)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    parts = [
        unit_activations(module, layer, units_of, (pixels[i : i + 32].float() / 255 - m) / s, units)
        for i in range(0, pixels.shape[0], 32)
    ]
    return torch.cat(parts).numpy().astype(np.float64)
