"""`class_concepts`: a run's class explanation by concept (`coin_scale.sweep.class_concepts`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One concept's share of the predicted class's logit in one layer of a sweep run."""

    run_id: str
    """The run (see `runs`); write key."""
    model: str
    """Model name."""
    class_name: str
    """The predicted class the run explains."""
    class_index: int
    """Its index."""
    layer: str
    """The layer whose units carry the concept: the explained layer, or an earlier chain layer."""
    part: str
    """'concept' (units labelled with `concept`), 'unexplained' (selected units without a label)
    or 'rest' (the logit minus every selected unit: other units, the head's bias)."""
    concept: str | None
    """The concept in words; null for the other parts."""
    rank: int
    """Order within the layer: concepts by contribution, strongest first, then the other parts."""
    contribution: float
    """Summed contribution of its units (a unit naming several concepts splits its own)."""
    share: float | None
    """`contribution` over the logit (explained layer) or over the layer's drive into the chain
    (earlier layers); null when that total is not positive."""
    units: list[int]
    """The units, strongest first."""
    mean_score: float | None = None
    """Mean of the units' explanation scores."""
    score_name: str | None = None
    """Which score: 'iou', 'soft_wpmi' or 'confidence'; null when mixed or none."""


SPEC = TableSpec(
    name="class_concepts",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("class_name", pa.string(), nullable=False),
            pa.field("class_index", pa.int32(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("part", pa.string(), nullable=False),
            pa.field("concept", pa.string()),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("contribution", pa.float64(), nullable=False),
            pa.field("share", pa.float64()),
            pa.field("units", pa.list_(pa.int32()), nullable=False),
            pa.field("mean_score", pa.float64()),
            pa.field("score_name", pa.string()),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "part", "concept"),
    choices={"part": ("concept", "unexplained", "rest")},
    row_type=Row,
    doc="One row per sweep run, layer and concept: the explained units' contributions to the "
    "predicted class's logit summed per concept they were labelled with, plus the selected units "
    "without a label and the rest of the logit.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
