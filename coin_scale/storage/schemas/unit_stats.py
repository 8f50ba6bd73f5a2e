"""`unit_stats`: activation statistics and threshold of every unit of a dissected layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """Statistics of one unit's reduced activations over the readable probe images."""

    dissection_id: str
    """The dissection (see `dissections`); write key."""
    model: str
    """Model name; partition column."""
    layer: str
    """Layer name; partition column (a string even when it looks like a number)."""
    unit: int
    """Unit index within the layer: channel or SAE feature number, from 0."""
    kind: str
    """'neuron', 'sae' or 'synthetic'."""
    reduction: str
    """'max' or 'mean': how the spatial map became one value per image."""
    count: int
    """Images the statistics are over."""
    mean: float
    """Mean activation."""
    std: float
    """Standard deviation of the activation."""
    min: float
    """Smallest activation."""
    max: float
    """Largest activation."""
    threshold: float
    """The activation at `quantile`: images above it count as the unit firing."""
    quantile: float
    """Quantile the threshold was taken at, e.g. 0.995."""


SPEC = TableSpec(
    name="unit_stats",
    version=1,
    schema=pa.schema(
        [
            pa.field("dissection_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("reduction", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
            pa.field("mean", pa.float64(), nullable=False),
            pa.field("std", pa.float64(), nullable=False),
            pa.field("min", pa.float64(), nullable=False),
            pa.field("max", pa.float64(), nullable=False),
            pa.field("threshold", pa.float64(), nullable=False),
            pa.field("quantile", pa.float64(), nullable=False),
        ]
    ),
    partition_by=("model", "layer"),
    key_by=("dissection_id",),
    natural_key=("dissection_id", "unit"),
    choices={"kind": UNIT_KINDS, "reduction": ("max", "mean")},
    row_type=Row,
    doc="One row per unit of a dissected layer (partitioned by model and layer, keyed by "
    "dissection_id): count, mean, std, min, max and the threshold at the dissection's quantile.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
