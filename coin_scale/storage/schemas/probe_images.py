"""`probe_images`: every image of a probe set, with whether it could be read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from coin_scale.storage.spec import TableSpec, arrow_to_rows, rows_to_arrow


@dataclass(frozen=True, kw_only=True)
class Row:
    """One image of a probe set."""

    probe_id: str
    """Id of the probe set; partition column and write key."""
    image_index: int
    """Position of the image in the probe set, from 0; the `image_index` of exemplars."""
    image_path: str
    """Path of the image as the probe set lists it."""
    label: str | None
    """Label from the folder or file name; null when the probe set has none."""
    status: str
    """'ok' if the image decoded, 'unreadable' if it did not (it is then skipped, never faked)."""
    error: str | None
    """Why the image could not be read; null when status is 'ok'."""
    bytes: int
    """File size in bytes."""


SPEC = TableSpec(
    name="probe_images",
    version=1,
    schema=pa.schema(
        [
            pa.field("probe_id", pa.string(), nullable=False),
            pa.field("image_index", pa.int64(), nullable=False),
            pa.field("image_path", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("status", pa.string(), nullable=False),
            pa.field("error", pa.string()),
            pa.field("bytes", pa.int64(), nullable=False),
        ]
    ),
    partition_by=("probe_id",),
    key_by=("probe_id",),
    natural_key=("probe_id", "image_index"),
    choices={"status": ("ok", "unreadable")},
    row_type=Row,
    doc="One row per image of a probe set (partitioned and keyed by probe_id), including the "
    "images that could not be read and why.",
)


def to_arrow(rows: Sequence[Row]) -> pa.Table:
    """Rows -> an Arrow table with `SPEC.schema`."""
    return rows_to_arrow(SPEC, rows)


def from_arrow(table: pa.Table) -> list[Row]:
    """An Arrow table with the columns of `SPEC.schema` -> rows."""
    return arrow_to_rows(SPEC, table)
