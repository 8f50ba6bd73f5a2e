"""The configuration of a whole-layer dissection."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from coin_scale.models.activations import REDUCTIONS, Reduction
from coin_scale.records import LAYER_UNIT_KINDS, LayerUnitKind


@dataclass(frozen=True, kw_only=True)
class DissectConfig:
    """One layer of one model over one probe set; every field is also a CLI flag."""

    model: str
    """torchvision model name or a coin-scale checkpoint path."""
    layer: str
    """Dotted module name (`coin-scale layers` lists them)."""
    probe: str
    """Folder of images (JPEG, PNG, WebP; any depth)."""
    weights: str = "default"
    """default | none | a torchvision weights enum name | a state-dict file."""
    seed: int = 0
    """Seed of the random weights when weights is none."""
    warehouse: str = "warehouse"
    """Directory of the Parquet warehouse."""
    top_k: int = 16
    """Exemplar images kept per unit."""
    quantile: float = 0.99
    """Quantile of a unit's activations used as its threshold."""
    reduction: Reduction = "max"
    """How a unit's spatial map becomes one value per image: max or mean."""
    batch_size: int = 32
    """Images per forward pass."""
    replicas: int | None = None
    """Model replicas; default one per GPU, else one CPU replica using every core."""
    address: str | None = None
    """Ray address: None starts a local Ray, `auto` or `ray://host:10001` joins a cluster."""
    force: bool = False
    """Recompute even when the warehouse already holds this exact dissection."""
    run_id: str | None = None
    """Name of the run in the `runs` table; generated when absent."""
    keep_activations: bool = False
    """Also store the dense (image, unit) float32 activation matrix for explainers (size:
    images x units x 4 bytes; meant for probe sets of thousands of images, not millions)."""
    units: LayerUnitKind = "neuron"
    """neuron: the layer's channels; sae: the latents of the SAE checkpoint `sae` of this layer."""
    sae: str | None = None
    """SAE checkpoint (`train-sae --out`) whose latents are the units; only with units sae."""
    checkpoint_batches: int = 16
    """Save the probe pass's merged state (to resume a killed run) after this many batches, or
    `checkpoint_seconds` since the last save, whichever first; 0 saves none."""
    checkpoint_seconds: float = 30.0
    """Seconds after which a resume checkpoint is saved even before `checkpoint_batches`."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.replicas is not None and self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.checkpoint_batches < 0 or self.checkpoint_seconds < 0:
            raise ValueError(
                "checkpoint_batches and checkpoint_seconds must be >= 0, got "
                f"{self.checkpoint_batches}, {self.checkpoint_seconds}"
            )
        check_units(self.units, self.sae)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_units(units: str, sae: str | None) -> None:
    """ValueError unless `units` is a layer's unit kind and an SAE checkpoint comes with `sae`
    units only."""
    if units not in LAYER_UNIT_KINDS:
        raise ValueError(f"unknown units {units!r}; available: {', '.join(LAYER_UNIT_KINDS)}")
    if units == "sae" and not sae:
        raise ValueError("--units sae needs --sae PATH, the SAE checkpoint of the layer")
    if units != "sae" and sae:
        raise ValueError(f"--sae {sae} is only used with --units sae; pass both or none")
