"""DuckDB views over the warehouse: one VIEW per registered table, read straight from Parquet.

The connection is in memory and only reads Parquet; workers never write DuckDB files. A local
warehouse is read by DuckDB's `read_parquet`; any other (s3://, fsspec) through pyarrow datasets
registered on the connection, so no DuckDB extension (httpfs) has to be downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa

from coin_scale.storage.schemas import TABLES
from coin_scale.storage.spec import TableSpec
from coin_scale.storage.warehouse import Warehouse

log = logging.getLogger(__name__)

_SIMPLE_TYPES = {
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.date32(): "DATE",
    pa.binary(): "BLOB",
}


def duckdb_type(t: pa.DataType) -> str:
    """The DuckDB SQL type of an Arrow type used in a table spec."""
    if t in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[t]
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{duckdb_type(t.value_type)}[]"
    raise TypeError(
        f"no DuckDB type for Arrow type {t}; add it to coin_scale.storage.views._SIMPLE_TYPES"
    )


def quote_ident(name: str) -> str:
    """`name` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_str(text: str) -> str:
    """`text` as a single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def as_warehouse(wh: Warehouse | str | Path) -> Warehouse:
    """`wh` itself, or the existing warehouse at that path (ResourceError if there is none)."""
    return wh if isinstance(wh, Warehouse) else Warehouse(wh, create=False)


def view_sql(wh: Warehouse, spec: TableSpec, conn: duckdb.DuckDBPyConnection) -> str:
    """The CREATE VIEW statement for one table: all spec columns, in spec order, with spec types.

    Columns no file has yet (a column added by a newer schema version) read as NULL; a table with
    no files is a zero-row view with the right columns.
    """
    name = quote_ident(spec.name)
    if not wh.parquet_files(spec.name):
        cols = ", ".join(
            f"CAST(NULL AS {duckdb_type(f.type)}) AS {quote_ident(f.name)}" for f in spec.schema
        )
        return f"CREATE VIEW {name} AS SELECT {cols} WHERE false"
    source = _source(wh, spec, conn)
    present = {row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    cols = ", ".join(
        f"CAST({quote_ident(f.name) if f.name in present else 'NULL'} AS {duckdb_type(f.type)}) "
        f"AS {quote_ident(f.name)}"
        for f in spec.schema
    )
    return f"CREATE VIEW {name} AS SELECT {cols} FROM {source}"


def _source(wh: Warehouse, spec: TableSpec, conn: duckdb.DuckDBPyConnection) -> str:
    """What a table's view selects from: a `read_parquet` glob (local), or a registered dataset.

    The dataset (object stores, fsspec) lists the files present now; a local glob also sees
    files written after `connect`.
    """
    if wh.fs.local:
        glob = quote_str(f"{wh.fs.path(spec.name)}/**/*.parquet")
        return f"read_parquet({glob}, hive_partitioning=true, union_by_name=true, hive_types_autocast=false)"
    arrow_name = f"_arrow_{spec.name}"
    conn.register(arrow_name, wh.dataset(spec.name))
    return quote_ident(arrow_name)


def connect(
    wh: Warehouse | str | Path, *, threads: int | None = None, sandbox: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one VIEW per registered table of warehouse `wh`.

    `threads` caps DuckDB's worker threads (default: all cores). `sandbox=True` then restricts
    file access to the warehouse directory (to nothing for a warehouse read through pyarrow) and
    locks the configuration (for user-typed SQL).
    """
    warehouse = as_warehouse(wh)
    config: dict[str, str | bool | int | float | list[str]] = {}
    if threads is not None:
        config["threads"] = int(threads)
    conn = duckdb.connect(":memory:", config=config)
    for spec in TABLES.values():
        conn.execute(view_sql(warehouse, spec, conn))
    if sandbox:
        root = warehouse.fs.path().rstrip("/") + "/"
        allowed = quote_str(root) if warehouse.fs.local else ""
        conn.execute(f"SET allowed_directories=[{allowed}]")
        conn.execute("SET enable_external_access=false")
        conn.execute("SET lock_configuration=true")
    log.debug("connected to %s with views %s", warehouse.fs.display, list(TABLES))
    return conn
