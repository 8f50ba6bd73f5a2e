"""`visualizations`: images optimised to drive one unit (`coin-scale visualize`), one per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from coin_scale.records import LAYER_UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow

UTC_US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, kw_only=True)
class Row:
    """One feature-visualization image of one unit."""

    run_id: str
    """The run (see `runs`); write key."""
    model: str
    """Model name."""
    weights: str
    """Identity of the weights: the enum name, `none-seed<N>` (random) or `file-<sha256 prefix>`."""
    layer: str
    """Layer name (a string even when it looks like a number)."""
    unit: int
    """Unit index within the layer (kind 'neuron') or SAE latent index (kind 'sae'), from 0."""
    kind: str
    """'neuron' (a channel of the layer) or 'sae' (an SAE latent's decoder direction)."""
    param: str
    """Image parameterisation: 'fft' (decorrelated-colour Fourier) or 'pixel'."""
    steps: int
    """Optimisation steps."""
    size: int
    """Side of the square image, in pixels."""
    seed: int
    """Seed of the initial image and of the random transforms."""
    batch_index: int
    """Position of the image in its optimised batch, from 0."""
    image_path: str
    """Path of the PNG as written."""
    activation: float
    """The unit's objective on the saved PNG, re-measured by one plain forward pass: the mean of
    the channel over positions ('neuron'), or the mean over positions of the dot product with the
    latent's decoder direction ('sae'); raw, not normalised; float32."""
    created_at: datetime
    """When the image was written (UTC, microseconds)."""


SPEC = TableSpec(
    name="visualizations",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("weights", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("param", pa.string(), nullable=False),
            pa.field("steps", pa.int32(), nullable=False),
            pa.field("size", pa.int32(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),
            pa.field("batch_index", pa.int32(), nullable=False),
            pa.field("image_path", pa.string(), nullable=False),
            pa.field("activation", pa.float32(), nullable=False),
            pa.field("created_at", UTC_US, nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "kind", "unit", "batch_index"),
    choices={"kind": LAYER_UNIT_KINDS, "param": ("fft", "pixel")},
    row_type=Row,
    doc="One row per feature-visualization image (keyed by run_id): the unit it was optimised "
    "for, how (parameterisation, steps, size, seed), where the PNG is, and the unit's activation "
    "on it.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
