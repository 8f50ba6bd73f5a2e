"""Configuration of `run_sweep.py`; every field is a flag and a YAML key."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """One target image through one model."""

    image: str
    """The image whose prediction is explained."""
    model: str
    """torchvision model name or a coin-scale checkpoint."""
    weights: str = "default"
    """default | none | weights enum name | state-dict path."""
    seed: int = 0
    """Seed of random weights (weights none)."""
    layer: str | None = None
    """Layer whose units are selected; default the last block before the classifier."""
    top_k: int = 8
    """Positive contributors explained."""
    negatives: int = 3
    """Strongest negative contributors listed."""
    probe: str | None = None
    """Probe folder for exemplars; without it only the attribution is computed."""
    warehouse: str = "warehouse"
    """Parquet warehouse directory."""
    exemplars: int = 5
    """Exemplars shown per unit."""
    address: str | None = None
    """Ray address (None: a local Ray)."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.negatives < 0 or self.exemplars < 1:
            raise ValueError(
                f"negatives must be >= 0 and exemplars >= 1, got {self.negatives}, {self.exemplars}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
