"""The warehouse: versioned Parquet tables, atomic idempotent writes, compaction, DuckDB views.

    wh = Warehouse("warehouse")                       # create + check writable
    wh.write("unit_stats", rows, key=dissection_id)   # atomic; same key again replaces
    conn = connect(wh)                                # in-memory DuckDB, one VIEW per table
    run_query(wh, "SELECT * FROM runs")               # read-only SQL -> (columns, rows)

See docs/storage.md for every table and column.
"""

from __future__ import annotations

from coin_scale.storage.compact import CompactionReport, compact
from coin_scale.storage.query import FORMATS, check_read_only, format_result, run_query
from coin_scale.storage.schemas import TABLES, get_spec
from coin_scale.storage.spec import TableSpec
from coin_scale.storage.views import connect
from coin_scale.storage.warehouse import Warehouse

__all__ = [
    "FORMATS",
    "TABLES",
    "CompactionReport",
    "TableSpec",
    "Warehouse",
    "check_read_only",
    "compact",
    "connect",
    "format_result",
    "get_spec",
    "run_query",
]
