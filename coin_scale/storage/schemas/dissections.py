"""`dissections`: the registry of finished dissections of one layer, used as a cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One finished dissection: one layer of one model, one unit kind, over one probe set."""

    dissection_id: str
    """Id derived from everything that determines the result (model, weights, layer, unit kind,
    reduction, top_k, quantile, probe set); a dissection whose id is here is not run again."""
    run_id: str
    """The run that produced it (see `runs`)."""
    model: str
    """Model name."""
    weights: str
    """Weights used: a torchvision weights name, a file path, or 'none'."""
    layer: str
    """Layer name, e.g. 'layer4' or '0'."""
    unit_kind: str
    """'neuron' (a channel), 'sae' (an SAE feature) or 'synthetic'."""
    reduction: str
    """How a unit's spatial map becomes one value per image: 'max' or 'mean'."""
    top_k: int
    """Exemplars kept per unit."""
    quantile: float
    """Quantile of a unit's activations used as its threshold, e.g. 0.995."""
    probe_id: str
    """The probe set (see `probe_images`)."""
    probe_path: str
    """Where the probe set was read from."""
    n_images: int
    """Probe images in the set."""
    n_ok: int
    """Probe images that were read and used."""
    n_failed: int
    """Probe images that could not be read."""
    n_units: int
    """Units in the layer (channels or SAE features)."""
    threshold_method: str
    """'exact' (every activation kept) or 'sampled' (quantile estimated from a sample)."""
    seconds: float
    """Wall-clock time of the dissection in seconds."""
    created_at: datetime
    """When it finished (UTC, microseconds)."""


SPEC = TableSpec(
    name="dissections",
    version=1,
    schema=pa.schema(
        [
            pa.field("dissection_id", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("weights", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit_kind", pa.string(), nullable=False),
            pa.field("reduction", pa.string(), nullable=False),
            pa.field("top_k", pa.int32(), nullable=False),
            pa.field("quantile", pa.float64(), nullable=False),
            pa.field("probe_id", pa.string(), nullable=False),
            pa.field("probe_path", pa.string(), nullable=False),
            pa.field("n_images", pa.int64(), nullable=False),
            pa.field("n_ok", pa.int64(), nullable=False),
            pa.field("n_failed", pa.int64(), nullable=False),
            pa.field("n_units", pa.int32(), nullable=False),
            pa.field("threshold_method", pa.string(), nullable=False),
            pa.field("seconds", pa.float64(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("dissection_id",),
    natural_key=("dissection_id",),
    choices={
        "unit_kind": UNIT_KINDS,
        "reduction": ("max", "mean"),
        "threshold_method": ("exact", "sampled"),
    },
    row_type=Row,
    doc="One row per finished dissection (keyed by dissection_id). Written last, after its "
    "unit_stats and exemplars, so a row here means its results are complete: the cache lookup.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
