"""`runs`: one row per coin-scale command run, written when it starts and again when it ends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow

UTC_US = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, kw_only=True)
class Row:
    """One run of a coin-scale command."""

    run_id: str
    """Unique id of the run; also the write key, so the end-of-run row replaces the start row."""
    command: str
    """The subcommand that ran, e.g. 'dissect'."""
    status: str
    """'running' while it works, then 'complete' or 'failed'."""
    model: str
    """Model name as given to --model."""
    weights: str
    """Weights used: a torchvision weights name, a file path, or 'none' for random weights."""
    layers: tuple[str, ...]
    """Layer names the run looked at, in the order given."""
    probe: str
    """The probe set: an image folder path or a rendered set's name."""
    config_json: str
    """The full run config as JSON; never contains secrets (API keys stay in the environment)."""
    coin_scale_version: str
    """coin_scale.__version__ of the code that ran."""
    started_at: datetime
    """When the run started (UTC, microseconds)."""
    finished_at: datetime | None
    """When the run ended (UTC); null while running."""
    n_images: int | None
    """Probe images seen; null until known."""
    n_failed: int | None
    """Probe images that could not be read; null until known."""
    message: str | None
    """Why a run failed, or a one-line note; null when there is nothing to say."""


SPEC = TableSpec(
    name="runs",
    version=1,
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("command", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("weights", pa.string(), nullable=False),
            pa.field("layers", pa.list_(pa.string()), nullable=False),
            pa.field("probe", pa.string(), nullable=False),
            pa.field("config_json", pa.string(), nullable=False),
            pa.field("coin_scale_version", pa.string(), nullable=False),
            pa.field("started_at", UTC_US, nullable=False),
            pa.field("finished_at", UTC_US),
            pa.field("n_images", pa.int64()),
            pa.field("n_failed", pa.int64()),
            pa.field("message", pa.string()),
        ]
    ),
    partition_by=(),
    key_by=("run_id",),
    natural_key=("run_id",),
    choices={"status": ("running", "complete", "failed")},
    row_type=Row,
    doc="One row per command run (keyed by run_id): what ran, on which model, weights, layers and "
    "probe set, with its status. Written when the run starts and rewritten when it ends.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
