"""Read-only SQL over the warehouse views, and the text, CSV and JSON renderings of a result.

Pure library functions: the `coin-scale query` command only parses flags and prints.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from coin_scale.errors import UserError
from coin_scale.storage.views import as_warehouse, connect
from coin_scale.storage.warehouse import Warehouse

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")

_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_EXPLAIN_PREFIX = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(?:\([^()]*\)\s*)?", re.IGNORECASE)


def sql_error(err: Exception) -> UserError:
    """A UserError with DuckDB's message on one line (its SQL excerpt and caret dropped)."""
    lines = []
    for line in str(err).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    return UserError(" ".join(lines) or type(err).__name__)


def check_read_only(conn: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of `sql`, if every one is a SELECT or an EXPLAIN of one; UserError otherwise."""
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as err:
        raise sql_error(err) from None
    if not statements:
        raise UserError('no SQL statement given; pass a query such as "SELECT * FROM runs"')
    out = []
    for st in statements:
        kind = st.type
        text = st.query
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs its statement: look inside, so it cannot smuggle a COPY in.
            text = _EXPLAIN_PREFIX.sub("", st.query, count=1)
            inner = conn.extract_statements(text) if text != st.query else []
            kind = inner[0].type if len(inner) == 1 else duckdb.StatementType.INVALID
        if kind not in _READ_TYPES or kind == duckdb.StatementType.EXPLAIN:
            verb = (text.split(None, 1) or ["?"])[0].upper()
            raise UserError(
                f"only read-only queries are allowed (SELECT, WITH, EXPLAIN, DESCRIBE), got {verb}; "
                "the warehouse is written by coin-scale commands only"
            )
        out.append(st.query)
    return out


def run_query(
    wh: Warehouse | str | Path, sql: str, *, threads: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only `sql` over the views of warehouse `wh`; return (column names, rows).

    Several statements may be given (all must be reads); the result is the last one's.
    Raises UserError for a missing warehouse, a write statement or invalid SQL.
    """
    conn = connect(as_warehouse(wh), threads=threads, sandbox=True)
    try:
        statements = check_read_only(conn, sql)
        columns: list[str] = []
        rows: list[tuple[Any, ...]] = []
        for stmt in statements:
            rel = conn.sql(stmt)
            if rel is None:
                continue
            table = rel.to_arrow_table()
            columns = list(rel.columns)
            rows = list(zip(*(col.to_pylist() for col in table.columns), strict=True))
        return columns, rows
    except duckdb.Error as err:
        raise sql_error(err) from None
    finally:
        conn.close()


def _text(value: Any, *, null: str) -> str:
    """One value as text: ISO timestamps in UTC, lists as JSON, shortest float repr."""
    if value is None:
        return null
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, pa.MonthDayNano):
        return _interval_text(value)
    return str(value)


def _interval_text(value: pa.MonthDayNano) -> str:
    """A DuckDB INTERVAL as text: '[N months ]<timedelta>', e.g. '1 day, 3:04:05'."""
    rest = str(timedelta(days=value.days, microseconds=value.nanoseconds // 1000))
    return f"{value.months} months {rest}" if value.months else rest


def _jsonable(value: Any) -> Any:
    """`value` with timestamps as ISO strings, non-finite floats as null, decimals as floats."""
    if isinstance(value, datetime | date | time | bytes | pa.MonthDayNano):
        return _text(value, null="")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    return value


def format_result(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Format = "table"
) -> str:
    """Render a query result as an aligned text table, CSV with a header, or a JSON array of objects."""
    if fmt == "table":
        if list(columns) == ["explain_key", "explain_value"]:
            return "".join(f"{value}\n" for _, value in rows)
        return _format_table(columns, rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_text(v, null="") for v in row] for row in rows)
        return buf.getvalue()
    if fmt == "json":
        objects = [dict(zip(columns, (_jsonable(v) for v in row), strict=True)) for row in rows]
        return json.dumps(objects, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_text(v, null="NULL").replace("\n", "\\n") for v in row] for row in rows]

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float | Decimal) and not isinstance(v, bool)

    numeric = [
        any(is_number(r[i]) for r in rows) and all(is_number(r[i]) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return " | ".join(parts).rstrip()

    out = [line(columns), "-+-".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out) + "\n"
