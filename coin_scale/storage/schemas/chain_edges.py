"""`chain_edges`: the weighted graph class <- units <- earlier units of a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import LAYER_UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One edge: how much a source unit drives its target (a class logit or a later unit)."""

    run_id: str
    """The run (see `runs`); write key."""
    source_layer: str
    """Layer of the source unit."""
    source_unit: int
    """Index of the source unit."""
    target_kind: str
    """'class' (target is a class index) or 'unit' (target is a unit of target_layer)."""
    target_layer: str | None
    """Layer of the target unit; null for a class."""
    target: int
    """Class index or unit index."""
    weight: float
    """Attribution of the target to the source (logit units for a class target)."""
    method: str
    """'exact_linear', 'exact_sae_decoder', 'grad_x_activation' or 'integrated_gradients'."""
    source_kind: str | None = None
    """'neuron' or 'sae' (an SAE feature); null in files written before version 2 (neurons)."""


SPEC = TableSpec(
    name="chain_edges",
    version=2,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("source_layer", pa.string(), nullable=False),
            pa.field("source_unit", pa.int32(), nullable=False),
            pa.field("target_kind", pa.string(), nullable=False),
            pa.field("target_layer", pa.string()),
            pa.field("target", pa.int32(), nullable=False),
            pa.field("weight", pa.float64(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
            pa.field("source_kind", pa.string()),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "source_layer", "source_unit", "target_kind", "target_layer", "target"),
    choices={"target_kind": ("class", "unit"), "source_kind": LAYER_UNIT_KINDS},
    row_type=Row,
    doc="One row per edge of a run's chain (keyed by run_id): source unit -> target class or "
    "unit, with the attribution weight and method.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
