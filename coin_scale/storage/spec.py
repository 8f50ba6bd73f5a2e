"""`TableSpec`: the versioned pyarrow schema of one warehouse table, and Row <-> Arrow converters.

Every table module under `coin_scale.storage.schemas` defines a frozen `Row` dataclass and a
`SPEC`; the generic helpers here turn rows into Arrow tables and back, and validate incoming
Arrow tables against the spec, so the table modules stay declarative.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
"""Partition values and write keys become path components, so they are limited to these characters."""


def check_safe_name(value: object, what: str) -> str:
    """Return `value` if it is a non-empty string of `[A-Za-z0-9._+-]`; ValueError naming it otherwise."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or value in (".", ".."):
        raise ValueError(
            f"{what} {value!r} is not a safe path component: expected a non-empty string of "
            "letters, digits and '._+-' (not '.' or '..'); rename it"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class TableSpec:
    """One warehouse table: its name, schema version, columns, layout and keys."""

    name: str
    """Table name: the directory under the warehouse root and the DuckDB view name."""
    version: int
    """Schema version, stored as `schema_version` in every Parquet file's metadata."""
    schema: pa.Schema
    """All columns, partition columns included, in view order."""
    partition_by: tuple[str, ...]
    """Hive partition columns (`col=value` directories); strings, not stored inside the files."""
    key_by: tuple[str, ...]
    """Columns whose values, joined by '+', equal the `key` of a `Warehouse.write` (one file per key)."""
    natural_key: tuple[str, ...]
    """Columns that identify one row; compaction keeps one row per natural key (the newest)."""
    doc: str
    """One paragraph for docs/storage.md: what a row is and who writes it."""
    row_type: type
    """The frozen dataclass of one row; its fields are the schema's columns in the same order."""
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Allowed values of enumerated string columns, checked on write."""

    def __post_init__(self) -> None:
        check_safe_name(self.name, "table name")
        names = self.schema.names
        for what, cols in (
            ("partition_by", self.partition_by),
            ("key_by", self.key_by),
            ("natural_key", self.natural_key),
            ("choices", tuple(self.choices)),
        ):
            unknown = [c for c in cols if c not in names]
            if unknown:
                raise ValueError(
                    f"table {self.name}: {what} names unknown columns {unknown}; columns are {names}"
                )
        if not self.key_by or not self.natural_key:
            raise ValueError(
                f"table {self.name}: key_by and natural_key must each name at least one column"
            )
        for col in self.partition_by:
            if self.schema.field(col).type != pa.string():
                raise ValueError(f"table {self.name}: partition column {col} must be pa.string()")
        fields = [f.name for f in dataclasses.fields(self.row_type)]
        if fields != names:
            raise ValueError(
                f"table {self.name}: Row fields {fields} differ from schema columns {names}"
            )

    @property
    def file_schema(self) -> pa.Schema:
        """The schema of the Parquet files: every column but the partition columns, plus metadata."""
        keep = [f for f in self.schema if f.name not in self.partition_by]
        meta = {b"table": self.name.encode(), b"schema_version": str(self.version).encode()}
        return pa.schema(keep, metadata=meta)

    def empty(self) -> pa.Table:
        """A zero-row table with the full schema."""
        return self.schema.empty_table()

    def from_dicts(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """Dict rows as Arrow with the spec's columns (a column a row leaves out is null: nullable
        ones added by a newer schema version); an empty table when there are none (so a rerun of
        the same key still replaces what an earlier attempt wrote)."""
        if not rows:
            return self.empty()
        blank = dict.fromkeys(self.schema.names)
        return pa.Table.from_pylist([blank | dict(row) for row in rows])


def rows_to_arrow(spec: TableSpec, rows: Sequence[Any]) -> pa.Table:
    """Convert `Row` instances of `spec` into an Arrow table with the full schema."""
    for row in rows:
        if not isinstance(row, spec.row_type):
            raise TypeError(
                f"table {spec.name}: expected {spec.row_type.__module__}.Row instances, got "
                f"{type(row).__name__}; build rows with that class or pass a pyarrow.Table"
            )
    arrays = []
    for f in spec.schema:
        values = [getattr(r, f.name) for r in rows]
        if pa.types.is_list(f.type):
            values = [None if v is None else list(v) for v in values]
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as err:
            raise ValueError(
                f"table {spec.name}, column {f.name}: cannot store values as {f.type}: {err}"
            ) from err
    return pa.Table.from_arrays(arrays, schema=spec.schema)


def arrow_to_rows(spec: TableSpec, table: pa.Table) -> list[Any]:
    """Convert an Arrow table with the columns of `spec` into `Row` instances (lists become tuples)."""
    table = conform(spec, table, spec.schema)
    out = []
    for rec in table.to_pylist():
        for f in spec.schema:
            if pa.types.is_list(f.type) and rec[f.name] is not None:
                rec[f.name] = tuple(rec[f.name])
        out.append(spec.row_type(**rec))
    return out


def conform(
    spec: TableSpec, table: pa.Table, schema: pa.Schema, *, fill_missing: bool = False
) -> pa.Table:
    """Cast `table` to `schema` column by column; ValueError naming the column on any mismatch.

    `fill_missing` adds absent nullable columns as nulls (files written by an older schema version).
    """
    got = set(table.column_names)
    missing = [n for n in schema.names if n not in got]
    if fill_missing:
        missing = [n for n in missing if not schema.field(n).nullable]
    extra = sorted(got - set(schema.names))
    if missing or extra:
        raise ValueError(
            f"table {spec.name}: columns do not match the schema (missing {missing}, unexpected {extra}); "
            f"expected columns {schema.names}"
        )
    arrays = []
    for f in schema:
        if f.name not in got:
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        try:
            col = col.cast(f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            raise ValueError(
                f"table {spec.name}, column {f.name}: expected {f.type}, got {col.type} that does not "
                f"cast ({err}); convert the column before writing"
            ) from err
        if not f.nullable and col.null_count:
            raise ValueError(
                f"table {spec.name}, column {f.name}: {col.null_count} null values in a non-null column"
            )
        allowed = spec.choices.get(f.name)
        if allowed is not None:
            bad = pc.filter(col, pc.invert(pc.is_in(col, value_set=pa.array(allowed, pa.string()))))
            bad_values = sorted({v for v in bad.to_pylist() if v is not None})
            if bad_values:
                raise ValueError(
                    f"table {spec.name}, column {f.name}: values {bad_values} not in {list(allowed)}"
                )
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)
