"""Configuration of `run_sweep.py`; every field is a flag and a YAML key."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EXPLAINERS = ("offline",)
"""Explainers available to the sweep (LLM explainers arrive with their issue)."""
PROBE_MODEL = "probe"
"""`--model probe`: the CNN coin-scale trains on its rendered scenes (trained once, cached)."""
RENDERED = "rendered"
"""`--probe rendered`: a rendered probe set with ground-truth attributes (rendered once, cached)."""


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """One target image through one model; the defaults run offline with nothing to download."""

    image: str | None = None
    """The image whose prediction is explained; default a rendered scene (saved in the warehouse)."""
    model: str = PROBE_MODEL
    """torchvision model name, a coin-scale checkpoint, or `probe` (trained on first use)."""
    weights: str = "default"
    """default | none | weights enum name | state-dict path (ignored for checkpoints)."""
    seed: int = 0
    """Seed of random weights (weights none) and of the default target scene."""
    layer: str | None = None
    """Layer whose units are selected; default the last block before the classifier."""
    top_k: int = 8
    """Positive contributors explained."""
    negatives: int = 3
    """Strongest negative contributors listed."""
    probe: str | None = RENDERED
    """`rendered`, a probe folder, or None (attribution only, nothing explained)."""
    probe_images: int = 1000
    """Images of the `rendered` probe set."""
    explainer: str = "offline"
    """How units are explained: `offline` (formulas over probe concepts, no network)."""
    warehouse: str = "warehouse"
    """Parquet warehouse directory; reports go to WAREHOUSE/reports/RUN_ID/."""
    exemplars: int = 6
    """Exemplars shown per unit."""
    address: str | None = None
    """Ray address (None: a local Ray)."""
    run_id: str | None = None
    """Name of the run; generated when absent."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.negatives < 0 or self.exemplars < 1:
            raise ValueError(
                f"negatives must be >= 0 and exemplars >= 1, got {self.negatives}, {self.exemplars}"
            )
        if self.explainer not in EXPLAINERS:
            raise ValueError(
                f"unknown explainer {self.explainer!r}; available: {', '.join(EXPLAINERS)} "
                "(LLM explainers are not built yet)"
            )
        if self.probe_images < 50:
            raise ValueError(f"probe_images must be >= 50, got {self.probe_images}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
