"""`exemplars`: the top-k probe images of every unit of a dissected layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One of a unit's top-k probe images."""

    dissection_id: str
    """The dissection (see `dissections`); write key."""
    model: str
    """Model name; partition column."""
    layer: str
    """Layer name; partition column (a string even when it looks like a number)."""
    unit: int
    """Unit index within the layer, from 0."""
    kind: str
    """'neuron', 'sae' or 'synthetic'."""
    rank: int
    """0 for the image the unit fires on most strongly, then 1, 2, ... up to top_k - 1."""
    image_index: int
    """The image's index in the probe set (see `probe_images`)."""
    image_path: str
    """The image's path, as in `probe_images`."""
    label: str | None
    """The image's label; null when the probe set has none."""
    activation: float
    """The unit's reduced activation on the image (raw, not normalised; float32)."""


SPEC = TableSpec(
    name="exemplars",
    version=1,
    schema=pa.schema(
        [
            pa.field("dissection_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("image_index", pa.int64(), nullable=False),
            pa.field("image_path", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("activation", pa.float32(), nullable=False),
        ]
    ),
    partition_by=("model", "layer"),
    key_by=("dissection_id",),
    natural_key=("dissection_id", "unit", "rank"),
    choices={"kind": UNIT_KINDS},
    row_type=Row,
    doc="One row per (unit, rank) of a dissected layer (partitioned by model and layer, keyed by "
    "dissection_id): the probe images a unit fires on most, strongest first.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
