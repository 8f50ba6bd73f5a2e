"""`llm_calls`: the ledger of every LLM request: tokens, dollars, latency, retries, outcome."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow

UTC_US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, kw_only=True)
class Row:
    """One logical request (its retries included) through the gateway."""

    run_id: str
    """The run (see `runs`); write key."""
    call_id: str
    """Unique id of the request within the run."""
    provider: str
    """'openai', 'anthropic' or 'gemini'."""
    model: str
    """The provider's model name."""
    layer: str | None
    """Layer of the unit the call was for (null for calls not about one unit)."""
    unit: int | None
    """Unit the call was for."""
    round: int | None
    """Agent round of the call."""
    status: str
    """'ok', 'cached' (answered from the request cache, nothing paid) or 'failed'."""
    error_kind: str | None
    """For a failure: rate_limit, spend_limit, server, timeout, connection, bad_request, auth,
    malformed."""
    http_status: int | None
    """HTTP status of the last failed attempt."""
    input_tokens: int
    """Input tokens billed, prompt-cache hits and writes included (0 when answered from the
    request cache)."""
    output_tokens: int
    """Output tokens billed (0 when answered from the request cache)."""
    cached_input_tokens: int | None
    """Of `input_tokens`: read from the provider's prompt cache, billed at its cached price (null
    in rows written before schema version 2)."""
    cache_write_tokens: int | None
    """Of `input_tokens`: written to the provider's prompt cache (Anthropic bills them at 1.25x
    input; null before schema version 2)."""
    cost_usd: float
    """Dollars, from the price table in configs/llm.yaml (0 when cached or unpriced)."""
    latency_ms: float
    """Wall time from the first attempt to the reply, waits and retries included."""
    wait_ms: float
    """Of which: time spent waiting for the rate limiter."""
    retries: int
    """Attempts after the first."""
    cache_key: str
    """sha256 of the request (never contains a key): the request cache's key."""
    started_at: datetime
    """When the call started (UTC)."""


SPEC = TableSpec(
    name="llm_calls",
    version=2,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("call_id", pa.string(), nullable=False),
            pa.field("provider", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("layer", pa.string()),
            pa.field("unit", pa.int32()),
            pa.field("round", pa.int32()),
            pa.field("status", pa.string(), nullable=False),
            pa.field("error_kind", pa.string()),
            pa.field("http_status", pa.int32()),
            pa.field("input_tokens", pa.int64(), nullable=False),
            pa.field("output_tokens", pa.int64(), nullable=False),
            pa.field("cached_input_tokens", pa.int64()),
            pa.field("cache_write_tokens", pa.int64()),
            pa.field("cost_usd", pa.float64(), nullable=False),
            pa.field("latency_ms", pa.float64(), nullable=False),
            pa.field("wait_ms", pa.float64(), nullable=False),
            pa.field("retries", pa.int32(), nullable=False),
            pa.field("cache_key", pa.string(), nullable=False),
            pa.field("started_at", UTC_US, nullable=False),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id", "call_id"),
    choices={
        "provider": ("openai", "anthropic", "gemini"),
        "status": ("ok", "cached", "failed"),
    },
    row_type=Row,
    doc="One row per LLM request through the gateway (keyed by run_id): provider, model, tokens "
    "in and out (prompt-cache reads and writes among the input), dollars, latency, rate-limit "
    "wait, retries and outcome. API keys never appear.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
