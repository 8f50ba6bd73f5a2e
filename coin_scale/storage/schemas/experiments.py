"""`experiments`: every step of an LLM agent's experiments on a unit, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.records import UNIT_KINDS
from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One step: a tool call the agent made (valid or not), or its final answer."""

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
    llm_model: str
    """The provider's model name."""
    round: int
    """Agent round, from 0; one LLM call per round."""
    step: int
    """Index of the tool call within its round (a reply may hold several)."""
    tool: str | None
    """Tool called (as the model named it); null for a reply without a tool call."""
    arguments_json: str | None
    """The arguments as sent (JSON text, truncated to 4,000 characters)."""
    status: str
    """'ok', 'invalid' (arguments failed validation or the tool is unknown), 'error' (the tool
    failed), 'finished' (a valid finish), 'no_tool' (text without a tool call), 'parse_failure'
    (the final answer did not parse), 'failed' (the unit's loop stopped with an error)."""
    result_summary: str | None
    """What the agent was told, in short (activations, image ids, the error message)."""
    assistant_text: str | None = None
    """The text the model wrote with this round's reply (its hypothesis, when it gives one), on
    the round's first step; null on later steps, when it wrote none, and in files of version 1."""
    input_tokens: int
    """Tokens billed for this round's LLM call (repeated on every step of the round)."""
    output_tokens: int
    """Output tokens of this round's LLM call."""
    cost_usd: float
    """Cost of this round's LLM call (0 when cached or unpriced)."""


SPEC = TableSpec(
    name="experiments",
    version=2,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("unit", pa.int32(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("explainer", pa.string(), nullable=False),
            pa.field("llm_model", pa.string(), nullable=False),
            pa.field("round", pa.int32(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("tool", pa.string()),
            pa.field("arguments_json", pa.string()),
            pa.field("status", pa.string(), nullable=False),
            pa.field("result_summary", pa.string()),
            pa.field("assistant_text", pa.string()),
            pa.field("input_tokens", pa.int64(), nullable=False),
            pa.field("output_tokens", pa.int64(), nullable=False),
            pa.field("cost_usd", pa.float64(), nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "layer", "unit", "explainer", "round", "step"),
    choices={
        "kind": UNIT_KINDS,
        "status": (
            "ok", "invalid", "error", "finished", "no_tool", "parse_failure", "failed",
        ),
    },  # fmt: skip
    row_type=Row,
    doc="One row per step of an LLM agent's experiments on a unit (keyed by run_id): round, tool, "
    "arguments, what it was told, tokens and cost; ORDER BY round, step gives a unit's full "
    "trajectory.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
