"""Valid example rows for any registered table, for tests and demos that need a filled warehouse.

Values are derived from each column's type, so a newly added table gets examples for free.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from coin_scale.storage.schemas import get_spec

_EPOCH = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def example_value(table: str, column: str, i: int) -> Any:
    """The example value of `column` in row `i`: nullable columns are null on odd rows."""
    spec = get_spec(table)
    field = spec.schema.field(column)
    t = field.type
    if column in spec.partition_by:
        return "0"
    if field.nullable and i % 2:
        return None
    if column in spec.choices:
        return spec.choices[column][0]
    if pa.types.is_string(t):
        return f"{column}-{i}"
    if pa.types.is_integer(t):
        return i
    if pa.types.is_floating(t):
        return i + 0.5
    if pa.types.is_timestamp(t):
        return _EPOCH + timedelta(seconds=i, microseconds=i)
    if pa.types.is_list(t) and pa.types.is_floating(t.value_type):
        return (i + 0.5, i + 1.5)
    if pa.types.is_list(t) and pa.types.is_integer(t.value_type):
        return (i, i + 1)
    if pa.types.is_list(t):
        return (f"{column}-{i}", f"{column}-{i + 1}")
    if pa.types.is_boolean(t):
        return bool(i % 2)
    raise TypeError(f"no example value for {table}.{column} of type {t}; extend example_value")


def example_rows(table: str, *, key: str = "k1", n: int = 3, **fixed: Any) -> list[Any]:
    """`n` valid `Row`s of `table` whose write-key column is `key`; `fixed` overrides columns.

    Integer columns count 0..n-1, so natural keys are distinct; partition columns default to "0".
    """
    spec = get_spec(table)
    if len(spec.key_by) != 1:
        raise ValueError(f"table {table}: example_rows supports one key column, got {spec.key_by}")
    unknown = sorted(set(fixed) - set(spec.schema.names))
    if unknown:
        raise ValueError(
            f"table {table}: unknown columns {unknown}; columns are {spec.schema.names}"
        )
    values = {spec.key_by[0]: key, **fixed}
    rows = []
    for i in range(n):
        rec = {
            c: values[c] if c in values else example_value(table, c, i) for c in spec.schema.names
        }
        rows.append(spec.row_type(**rec))
    return rows
