"""`class_explanations`: why the model predicted what it did for a run's target image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from coin_scale.records import LAYER_UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """The class-level explanation of one sweep run."""

    run_id: str
    """The run (see `runs`); write key."""
    model: str
    """Model name."""
    weights: str
    """Weights identity (enum name, none-seed<N>, file-<sha256 prefix>)."""
    random_weights: bool
    """True when the weights were random: the explanation then means nothing."""
    image_path: str
    """The target image."""
    class_name: str
    """Predicted class."""
    class_index: int
    """Index of the predicted class."""
    probability: float
    """Softmax probability of the predicted class."""
    logit: float
    """Logit of the predicted class."""
    layer: str
    """Layer whose units explain it."""
    method: str
    """Attribution method of the units."""
    text: str
    """The readable paragraph."""
    created_at: datetime
    """When the explanation was made (UTC)."""
    unit_kind: str | None = None
    """'neuron' or 'sae' (SAE features); null in files written before version 2 (neurons)."""
    head_bias: float | None = None
    """The class head's bias (exact methods): part of the logit that belongs to no unit."""
    sae_sha256: str | None = None
    """sha256 of the SAE checkpoint whose features are the units (unit_kind 'sae')."""
    sae_decoder_bias: float | None = None
    """The SAE decoder bias's contribution to the logit (unit_kind 'sae')."""
    sae_error: float | None = None
    """The SAE reconstruction error's contribution to the logit (unit_kind 'sae'): what the
    features leave unexplained."""


SPEC = TableSpec(
    name="class_explanations",
    version=2,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("weights", pa.string(), nullable=False),
            pa.field("random_weights", pa.bool_(), nullable=False),
            pa.field("image_path", pa.string(), nullable=False),
            pa.field("class_name", pa.string(), nullable=False),
            pa.field("class_index", pa.int32(), nullable=False),
            pa.field("probability", pa.float64(), nullable=False),
            pa.field("logit", pa.float64(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("unit_kind", pa.string()),
            pa.field("head_bias", pa.float64()),
            pa.field("sae_sha256", pa.string()),
            pa.field("sae_decoder_bias", pa.float64()),
            pa.field("sae_error", pa.float64()),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id",),
    choices={"unit_kind": LAYER_UNIT_KINDS},
    row_type=Row,
    doc="One row per sweep run (keyed by run_id): the predicted class, its probability and the "
    "paragraph that explains it through the selected units.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
