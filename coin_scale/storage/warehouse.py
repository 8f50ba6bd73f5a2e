"""`Warehouse`: atomic, idempotent Parquet writes into hive-partitioned tables, and reads back.

Layout: `<root>/<table>/<col>=<value>/.../<key>.parquet`, ZSTD-compressed; partition columns live
only in the directory names. Writing the same key again replaces that key's file, so a retried
task never duplicates rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from coin_scale.errors import ResourceError
from coin_scale.storage.fs import TMP_MARK, FileEntry, WarehouseFS, is_uri
from coin_scale.storage.schemas import TABLES, get_spec
from coin_scale.storage.spec import TableSpec, check_safe_name, conform, rows_to_arrow

log = logging.getLogger(__name__)

COMPACTED_PREFIX = "compacted-"
"""Files written by compaction are `compacted-<id>.parquet`; every other file is `<key>.parquet`."""

Where: TypeAlias = Mapping[str, Any] | pc.Expression | None


class Warehouse:
    """A directory or filesystem URI (`s3://...`, any fsspec one) of Parquet tables described by `TABLES`."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        """Open the warehouse at `root`: a directory, or a URI such as `s3://bucket/prefix`.

        `create=True` (writers) makes the directory and checks up front that a file can be
        written there, so a command fails before doing any work; `create=False` (readers) only
        requires that it exists. Both raise ResourceError with the fix (UserError for a URI no
        filesystem knows).
        """
        self.fs = WarehouseFS(root)
        self.root = str(root) if is_uri(root) else self.fs.url()
        if create:
            self.check_writable()
        elif not self._exists():
            fix = (
                "pass --warehouse DIR with the directory a coin-scale command wrote its results to"
                if self.fs.local
                else "check that the bucket exists and a coin-scale command wrote results under "
                "this prefix, and that the endpoint and credentials are right"
            )
            raise ResourceError(
                f"warehouse {self.fs.display} does not exist or is not a directory; {fix}"
            )

    def __repr__(self) -> str:
        return f"Warehouse({self.fs.display!r})"

    def check_writable(self) -> None:
        """Create the root if needed and write+delete a probe file; ResourceError if that fails."""
        try:
            self.fs.probe_writable()
        except OSError as err:
            raise ResourceError(
                f"warehouse {self.fs.display} is not writable: {_one_line(err)}; {self._fix()}"
            ) from err

    def _exists(self) -> bool:
        """Whether the root is an existing directory; ResourceError if the store cannot be reached."""
        try:
            return self.fs.is_dir()
        except OSError as err:
            raise ResourceError(
                f"warehouse {self.fs.display} cannot be read: {_one_line(err)}; {self._fix()}"
            ) from err

    def _fix(self) -> str:
        """What to do about an unusable warehouse, for local paths and object stores."""
        if self.fs.local:
            return "pass --warehouse DIR with a writable directory"
        return (
            "check that the bucket exists, the endpoint is reachable and the credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or another standard source) allow it, "
            "or pass --warehouse DIR with a writable directory"
        )

    def tables(self) -> list[str]:
        """Names of the registered tables that have a directory in this warehouse."""
        present = set(self.fs.list_dirs())
        return [name for name in TABLES if name in present]

    def parquet_files(self, table: str) -> list[FileEntry]:
        """Every complete Parquet file of `table` (temporary files excluded), sorted by path."""
        get_spec(table)
        return [e for e in self.fs.walk_files(table) if e.rel.endswith(".parquet")]

    def tmp_files(self, table: str) -> list[FileEntry]:
        """Temporary files of `table` left by writes that never finished (or are still running)."""
        return [e for e in self.fs.walk_files(table) if TMP_MARK in e.rel.rpartition("/")[2]]

    def write(self, table: str, data: pa.Table | Sequence[Any], *, key: str) -> list[str]:
        """Write `data` (an Arrow table or `Row`s) as the rows of `key`; return the paths written.

        Every row's key columns (`SPEC.key_by`, joined by '+') must equal `key`. Rows are split by
        the partition columns, one `<key>.parquet` per partition, each written atomically (temp
        file, then rename); writing a key again replaces its files, never duplicates rows.
        """
        spec = get_spec(table)
        check_safe_name(key, "write key")
        arrow = data if isinstance(data, pa.Table) else rows_to_arrow(spec, data)
        arrow = conform(spec, arrow, spec.schema)
        _check_key(spec, arrow, key)
        written = []
        for values, part in _split_partitions(spec, arrow):
            rel = "/".join([table, *(f"{c}={v}" for c, v in values.items()), f"{key}.parquet"])
            body = part.drop_columns(list(spec.partition_by))
            write_parquet_atomic(self.fs, rel, body, spec)
            written.append(self.fs.url(rel))
        if not written:
            log.debug("write %s key=%s: no rows, nothing written", table, key)
        return written

    def has(self, table: str, key: str, partition: Mapping[str, str] | None = None) -> bool:
        """Whether rows of `key` were written to `table` (in `partition` when given).

        Checks for the file `<key>.parquet`, and when compaction merged files, for rows whose key
        columns equal `key` in the compacted files; so the answer survives compaction.
        """
        spec = get_spec(table)
        check_safe_name(key, "key")
        files = _in_partition(spec, self.parquet_files(table), partition)
        if any(e.rel.rpartition("/")[2] == f"{key}.parquet" for e in files):
            return True
        compacted = [e for e in files if e.rel.rpartition("/")[2].startswith(COMPACTED_PREFIX)]
        if not compacted:
            return False
        parts = key.split("+") if len(spec.key_by) > 1 else [key]
        if len(parts) != len(spec.key_by):
            return False
        expr = _where(spec, dict(zip(spec.key_by, parts, strict=True)))
        scan = self._dataset(spec, compacted).scanner(columns=list(spec.key_by[:1]), filter=expr)
        return bool(scan.head(1).num_rows)

    def read(
        self, table: str, where: Where = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Rows of `table` with the full schema (partition columns included), optionally filtered.

        `where` is a dict of column -> value (all must match) or a pyarrow compute expression.
        Returns an empty table with the schema when nothing was written yet.
        """
        spec = get_spec(table)
        files = self.parquet_files(table)
        if not files:
            empty = spec.empty()
            return empty.select(list(columns)) if columns is not None else empty
        expr = where if isinstance(where, pc.Expression) else _where(spec, dict(where or {}))
        cols = list(columns) if columns is not None else None
        return self._dataset(spec, files).to_table(columns=cols, filter=expr)

    def dataset(self, table: str) -> ds.Dataset:
        """A pyarrow dataset over `table`'s files as they are now, with the full schema.

        What DuckDB scans for a warehouse it cannot open by path (an object store, fsspec).
        """
        spec = get_spec(table)
        return self._dataset(spec, self.parquet_files(table))

    def _dataset(self, spec: TableSpec, files: Sequence[FileEntry]) -> ds.Dataset:
        part_schema = pa.schema([spec.schema.field(c) for c in spec.partition_by])
        return ds.dataset(
            [self.fs.path(e.rel) for e in files],
            schema=spec.schema,
            format="parquet",
            filesystem=self.fs.fs,
            partitioning=ds.partitioning(part_schema, flavor="hive") if spec.partition_by else None,
            partition_base_dir=self.fs.path(spec.name),
        )


def write_parquet_atomic(
    fs: WarehouseFS, rel: str, body: pa.Table, spec: TableSpec, written_at_ns: int | None = None
) -> None:
    """Write `body` to `rel` atomically, ZSTD, with table name, schema_version and written_at_ns."""
    meta = dict(spec.file_schema.metadata or {})
    meta[b"written_at_ns"] = str(written_at_ns or time.time_ns()).encode()
    body = body.replace_schema_metadata(meta)

    def write(tmp: str, filesystem: pafs.FileSystem) -> None:
        pq.write_table(body, tmp, filesystem=filesystem, compression="zstd")

    fs.write_atomic(rel, write)


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (AWS errors span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def _check_key(spec: TableSpec, table: pa.Table, key: str) -> None:
    if table.num_rows == 0:
        return
    cols = [pc.cast(table.column(c), pa.string()) for c in spec.key_by]
    joined = cols[0] if len(cols) == 1 else pc.binary_join_element_wise(*cols, "+")
    bad = pc.unique(pc.filter(joined, pc.not_equal(joined, key))).to_pylist()
    if bad:
        raise ValueError(
            f"table {spec.name}: write key {key!r} must equal the rows' {'+'.join(spec.key_by)}, "
            f"but rows carry {bad[:5]}; write each key's rows separately"
        )


def _split_partitions(spec: TableSpec, table: pa.Table) -> list[tuple[dict[str, str], pa.Table]]:
    """(partition values, rows) per distinct combination of the partition columns."""
    if not spec.partition_by:
        return [({}, table)]
    cols = list(spec.partition_by)
    combos = table.select(cols).group_by(cols).aggregate([]).to_pylist()
    out = []
    for combo in sorted(combos, key=lambda c: tuple(c[k] for k in cols)):
        values = {c: check_safe_name(combo[c], f"partition value of {spec.name}.{c}") for c in cols}
        mask = None
        for c, v in values.items():
            eq = pc.equal(table.column(c), v)
            mask = eq if mask is None else pc.and_(mask, eq)
        out.append((values, table.filter(mask)))
    return out


def _in_partition(
    spec: TableSpec, files: list[FileEntry], partition: Mapping[str, str] | None
) -> list[FileEntry]:
    if not partition:
        return files
    unknown = [c for c in partition if c not in spec.partition_by]
    if unknown:
        raise ValueError(
            f"table {spec.name}: {unknown} are not partition columns; those are {list(spec.partition_by)}"
        )
    wanted = {f"{c}={check_safe_name(v, f'partition value of {c}')}" for c, v in partition.items()}
    return [e for e in files if wanted <= set(e.rel.split("/")[1:-1])]


def _where(spec: TableSpec, where: dict[str, Any]) -> pc.Expression | None:
    expr = None
    for col, value in where.items():
        if col not in spec.schema.names:
            raise ValueError(
                f"table {spec.name}: cannot filter on unknown column {col!r}; columns are {spec.schema.names}"
            )
        term = pc.field(col) == value
        expr = term if expr is None else expr & term
    return expr
