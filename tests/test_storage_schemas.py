"""Table specs: every table round-trips Row -> Arrow -> Parquet -> DuckDB view -> Row; docs in sync."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coin_scale.storage import TABLES, TableSpec, Warehouse, connect, get_spec
from coin_scale.storage.docgen import column_docs, update_doc
from coin_scale.storage.examples import example_rows
from coin_scale.storage.schemas import (
    activation_maps,
    agent_images,
    chain_edges,
    class_concepts,
    class_explanations,
    dissections,
    exemplars,
    experiments,
    explanations,
    llm_calls,
    probe_images,
    runs,
    scores,
    unit_stats,
    units,
    visualizations,
)
from coin_scale.storage.spec import arrow_to_rows, rows_to_arrow

MODULES = {
    m.SPEC.name: m
    for m in (
        runs, probe_images, dissections, unit_stats, exemplars,
        units, explanations, chain_edges, class_explanations, class_concepts, scores, experiments,
        agent_images, llm_calls, visualizations, activation_maps,
    )
}  # fmt: skip
DOC = Path(__file__).resolve().parents[1] / "docs" / "storage.md"


def test_registry_holds_every_table_module() -> None:
    assert list(TABLES) == [
        "runs", "probe_images", "dissections", "unit_stats", "exemplars",
        "units", "explanations", "chain_edges", "class_explanations", "class_concepts", "scores",
        "experiments", "agent_images", "llm_calls", "visualizations", "activation_maps",
    ]  # fmt: skip
    assert all(TABLES[name] is module.SPEC for name, module in MODULES.items())


@pytest.mark.parametrize("name", list(TABLES))
def test_spec_is_consistent(name: str) -> None:
    spec = TABLES[name]
    assert [f.name for f in dataclasses.fields(spec.row_type)] == spec.schema.names
    assert spec.row_type.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert set(column_docs(spec)) == set(spec.schema.names), "every Row field needs a docstring"
    assert spec.file_schema.metadata[b"schema_version"] == str(spec.version).encode()
    assert not set(spec.partition_by) & set(spec.file_schema.names)


@pytest.mark.parametrize("name", list(TABLES))
def test_module_converters_round_trip(name: str) -> None:
    module = MODULES[name]
    rows = example_rows(name, n=4)
    table = module.to_arrow(rows)
    assert table.schema.equals(module.SPEC.schema)
    assert module.from_arrow(table) == rows


@pytest.mark.parametrize("name", list(TABLES))
def test_round_trip_through_parquet_and_duckdb(tmp_path: Path, name: str) -> None:
    spec = TABLES[name]
    rows = example_rows(name, key="key-1", n=4)
    wh = Warehouse(tmp_path / "wh")
    written = wh.write(name, rows, key="key-1")
    assert len(written) == 1 and written[0].endswith("/key-1.parquet")
    meta = pq.read_schema(written[0]).metadata
    assert meta[b"schema_version"] == str(spec.version).encode() and meta[b"table"] == name.encode()
    assert pq.ParquetFile(written[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_schema(written[0]).names == spec.file_schema.names

    assert arrow_to_rows(spec, wh.read(name)) == rows
    conn = connect(wh, threads=1)
    view = conn.sql(f"SELECT * FROM {name}")
    assert view.columns == spec.schema.names
    back = arrow_to_rows(spec, view.to_arrow_table())
    assert sorted(back, key=repr) == sorted(rows, key=repr)


def test_rows_to_arrow_rejects_wrong_row_type() -> None:
    with pytest.raises(TypeError, match=r"expected .*runs\.Row"):
        rows_to_arrow(get_spec("runs"), example_rows("exemplars", n=1))


def test_rows_to_arrow_names_the_bad_column() -> None:
    row = dataclasses.replace(example_rows("unit_stats", n=1)[0], unit="seven")
    with pytest.raises(ValueError, match="column unit"):
        unit_stats.to_arrow([row])


def test_get_spec_lists_known_tables() -> None:
    with pytest.raises(ValueError, match="did you mean exemplars"):
        get_spec("exemplar")


def test_table_spec_rejects_inconsistent_definitions() -> None:
    @dataclasses.dataclass(frozen=True)
    class Row:
        a: str

    schema = pa.schema([pa.field("a", pa.string())])
    common = dict(name="t", version=1, schema=schema, doc="", row_type=Row)
    with pytest.raises(ValueError, match="unknown columns"):
        TableSpec(**common, partition_by=("b",), key_by=("a",), natural_key=("a",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one column"):
        TableSpec(**common, partition_by=(), key_by=(), natural_key=("a",))  # type: ignore[arg-type]
    bad_schema = pa.schema([pa.field("a", pa.int64())])
    with pytest.raises(ValueError, match="must be pa.string"):
        TableSpec(  # type: ignore[arg-type]
            **{**common, "schema": bad_schema},
            partition_by=("a",),
            key_by=("a",),
            natural_key=("a",),
        )


def test_docs_table_reference_matches_specs() -> None:
    text = DOC.read_text()
    assert update_doc(text) == text, "run: python -m coin_scale.storage.docgen docs/storage.md"
    for spec in TABLES.values():
        for column in spec.schema.names:
            assert f"| `{column}` |" in text
