"""`explanations`: what each explained unit seems to detect, by which explainer, how well."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One unit's explanation within one run."""

    run_id: str
    """The run (see `runs`); write key."""
    model: str
    """Model name."""
    layer: str
    """Layer of the unit."""
    unit: int
    """Unit index within the layer."""
    kind: str
    """'neuron', 'sae' or 'synthetic'."""
    explainer: str
    """'offline' (compositional formulas over probe concepts) or an LLM provider."""
    status: str
    """'ok' (labelled), 'empty' (nothing to explain or nothing matched) or 'failed' (the
    explainer could not answer); never a label unless 'ok'."""
    label: str | None
    """Short label in words, e.g. 'red star'; null unless status is 'ok'."""
    description: str | None
    """One or two sentences of evidence."""
    formula: str | None
    """Machine-readable formula over probe concepts, e.g. '(shape=star AND color=red)'."""
    score: float | None
    """The explainer's own score (offline: IoU of the unit's mask with the formula)."""
    score_name: str | None
    """What `score` is, e.g. 'iou'."""
    error: str | None
    """Why it failed, when status is 'failed'."""
    dissection_id: str | None
    """The dissection whose probe pass the evidence came from."""
    reason: str | None = None
    """Why the status is not 'ok': for 'empty' `constant` (the same activation on every probe
    image), `empty_mask` (no image above the threshold) or `no_overlap` (no concept shares an
    image with the unit's mask); for 'failed' `parse_failure`, `agent_error` or `no_label`.
    Null when 'ok' (and in files written before schema version 2)."""


SPEC = TableSpec(
    name="explanations",
    version=2,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("explainer", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("description", pa.string()),
            pa.field("formula", pa.string()),
            pa.field("score", pa.float64()),
            pa.field("score_name", pa.string()),
            pa.field("error", pa.string()),
            pa.field("dissection_id", pa.string()),
            pa.field("reason", pa.string()),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "unit", "explainer"),
    choices={
        "kind": UNIT_KINDS,
        "status": ("ok", "empty", "failed"),
        "reason": (
            "constant",
            "empty_mask",
            "no_overlap",
            "parse_failure",
            "agent_error",
            "no_label",
        ),
    },
    row_type=Row,
    doc="One row per explained unit and explainer (keyed by run_id): label, description, "
    "formula, score, and a status (ok, empty, failed) with its reason; a failed unit is stored with its error, never a fake label.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
