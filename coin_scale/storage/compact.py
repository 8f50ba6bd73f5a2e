"""Compaction: merge each partition's many small Parquet files into one, dropping duplicate rows.

Every task writes its own `<key>.parquet`, so a large dissection leaves thousands of small files;
compaction rewrites each partition directory as one `compacted-<id>.parquet`, keeping one row per
natural key (the row from the most recently written file), and removes stale temporary files.
Run it when no writer is running: a key rewritten after its rows were compacted is visible twice
until the next compaction, which keeps the newer rows.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from coin_scale.storage.fs import FileEntry
from coin_scale.storage.schemas import TABLES, get_spec
from coin_scale.storage.spec import TableSpec, conform
from coin_scale.storage.views import as_warehouse
from coin_scale.storage.warehouse import COMPACTED_PREFIX, Warehouse, write_parquet_atomic

log = logging.getLogger(__name__)

_SEQ = "__coin_scale_seq"


@dataclass(frozen=True)
class CompactionReport:
    """What compaction did to one table."""

    table: str
    """Table name."""
    files_before: int
    """Parquet files before compaction."""
    files_after: int
    """Parquet files after compaction (one per partition that had any)."""
    duplicates_dropped: int
    """Rows dropped because a newer file held a row with the same natural key."""
    tmp_removed: int
    """Stale temporary files (from killed writers) removed."""


def compact(
    wh: Warehouse | str | Path,
    *,
    tables: Sequence[str] | None = None,
    tmp_older_than_s: float = 3600.0,
) -> list[CompactionReport]:
    """Compact `tables` (default: all registered) of warehouse `wh`; one report per table.

    Temporary files older than `tmp_older_than_s` seconds are removed (younger ones may belong
    to a write still running). Idempotent: a second run merges and removes nothing.
    """
    warehouse = as_warehouse(wh)
    warehouse.check_writable()
    names = list(tables) if tables else list(TABLES)
    specs = [get_spec(n) for n in names]
    return [_compact_table(warehouse, spec, tmp_older_than_s) for spec in specs]


def _compact_table(wh: Warehouse, spec: TableSpec, tmp_older_than_s: float) -> CompactionReport:
    files = wh.parquet_files(spec.name)
    by_dir: dict[str, list[FileEntry]] = defaultdict(list)
    for entry in files:
        by_dir[entry.rel.rpartition("/")[0]].append(entry)
    dropped = 0
    for directory, entries in sorted(by_dir.items()):
        if len(entries) > 1:
            dropped += _merge(wh, spec, directory, entries)
    cutoff = time.time_ns() - int(tmp_older_than_s * 1e9)
    stale = [e for e in wh.tmp_files(spec.name) if e.mtime_ns <= cutoff]
    for entry in stale:
        log.info("removing stale temporary file %s", entry.rel)
        wh.fs.delete(entry.rel)
    report = CompactionReport(
        table=spec.name,
        files_before=len(files),
        files_after=len(by_dir),
        duplicates_dropped=dropped,
        tmp_removed=len(stale),
    )
    log.debug("%s", report)
    return report


def _merge(wh: Warehouse, spec: TableSpec, directory: str, entries: list[FileEntry]) -> int:
    """Merge `entries` (files of one partition directory) into one file; return rows dropped."""
    parts = []
    for entry in entries:
        try:
            with wh.fs.fs.open_input_file(wh.fs.path(entry.rel)) as handle:
                table = pq.ParquetFile(handle).read()
        except (OSError, pa.ArrowInvalid) as err:
            raise ValueError(
                f"cannot compact {spec.name}: {entry.rel} is not a readable Parquet file ({err}); "
                "move it out of the warehouse and run compact again"
            ) from err
        meta = table.schema.metadata or {}
        written = int(meta.get(b"written_at_ns", entry.mtime_ns))
        parts.append(
            (
                written,
                entry.mtime_ns,
                entry.rel,
                conform(spec, table, spec.file_schema, fill_missing=True),
            )
        )
    parts.sort(key=lambda p: (p[0], p[1], p[2]))
    merged = pa.concat_tables([p[3] for p in parts])
    kept = _dedupe(merged, [c for c in spec.natural_key if c not in spec.partition_by])
    rel = f"{directory}/{COMPACTED_PREFIX}{uuid.uuid4().hex[:12]}.parquet"
    write_parquet_atomic(wh.fs, rel, kept, spec, written_at_ns=max(p[0] for p in parts))
    for entry in entries:
        wh.fs.delete(entry.rel)
    log.info("compacted %d files of %s into %s", len(entries), directory, rel)
    return merged.num_rows - kept.num_rows


def _dedupe(table: pa.Table, key: list[str]) -> pa.Table:
    """One row per value of `key` columns: the last one in `table`'s order; row order kept."""
    if table.num_rows == 0:
        return table
    if not key:
        return table.slice(table.num_rows - 1)
    seq = pa.array(range(table.num_rows), pa.int64())
    grouped = table.select(key).append_column(_SEQ, seq).group_by(key, use_threads=False)
    last = grouped.aggregate([(_SEQ, "max")]).column(f"{_SEQ}_max").to_pylist()
    return table.take(pa.array(sorted(last), pa.int64()))
