"""`units`: the units a sweep selected, with their contribution to the predicted class logit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One selected unit of one sweep run."""

    run_id: str
    """The sweep run (see `runs`); write key."""
    model: str
    """Model name."""
    layer: str
    """Layer of the unit."""
    unit: int
    """Unit index within the layer."""
    kind: str
    """'neuron', 'sae' or 'synthetic'."""
    contribution: float
    """Contribution to the predicted class logit, in logit units."""
    share: float
    """contribution / the predicted class logit (NaN when that logit is not positive)."""
    rank: int
    """0 = strongest within its sign."""
    sign: str
    """'positive' (explained) or 'negative' (listed)."""
    method: str
    """'exact_linear' (fc weight x pooled activation), 'exact_sae_decoder' (fc weight x SAE
    decoder direction x mean code) or 'grad_x_activation'."""


SPEC = TableSpec(
    name="units",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("contribution", pa.float64(), nullable=False),
            pa.field("share", pa.float64(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("sign", pa.string(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "unit"),
    choices={
        "kind": UNIT_KINDS,
        "sign": ("positive", "negative"),
        "method": ("exact_linear", "exact_sae_decoder", "grad_x_activation"),
    },
    row_type=Row,
    doc="One row per unit a sweep selected (keyed by run_id): its contribution to the predicted "
    "class logit, its share, rank and the attribution method.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
