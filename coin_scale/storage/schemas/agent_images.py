"""`agent_images`: the images each step of an LLM agent's experiments showed it, one per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One image shown to an agent at one step (an exemplar, a render, an edit, a generated
    image, a visualization), as a thumbnail file beside the warehouse's tables."""

    run_id: str
    """The run (see `runs`); write key."""
    model: str
    """Model whose unit is explained."""
    layer: str
    """Layer of the unit."""
    unit: int
    """Unit index within the layer."""
    kind: str
    """'neuron', 'sae' or 'synthetic'."""
    explainer: str
    """Provider: 'openai', 'anthropic' or 'gemini'."""
    round: int
    """Agent round of the step (joins `experiments` on run_id, layer, unit, explainer, round,
    step)."""
    step: int
    """Index of the tool call within its round."""
    position: int
    """Order of the image within the step's result, from 0."""
    image_id: str
    """`ex-N` (the unit's N-th exemplar) or the id a tool gave the image (`img-000003`)."""
    activation: float | None
    """The unit's activation on the image as the agent was told it; null when not measured."""
    image_path: str
    """The thumbnail as the agent saw it (PNG or JPEG, at most the agent's image size)."""


SPEC = TableSpec(
    name="agent_images",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("explainer", pa.string(), nullable=False),
            pa.field("round", pa.int32(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("position", pa.int32(), nullable=False),
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("activation", pa.float64()),
            pa.field("image_path", pa.string(), nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "unit", "explainer", "round", "step", "position"),
    choices={"kind": UNIT_KINDS},
    row_type=Row,
    doc="One row per image an LLM agent was shown at a step (keyed by run_id), with the unit's "
    "activation on it and the thumbnail's path: with `experiments`, a unit's trajectory round by "
    "round.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
