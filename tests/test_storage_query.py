"""DuckDB views and read-only queries: empty warehouse, VARCHAR partitions, rejection, formats."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coin_scale.errors import ResourceError, UserError
from coin_scale.storage import TABLES, Warehouse, connect, format_result, run_query
from coin_scale.storage.examples import example_rows

DOC = Path(__file__).resolve().parents[1] / "docs" / "storage.md"


@pytest.fixture
def filled(tmp_path: Path) -> Warehouse:
    """A warehouse with a few rows in every table; layers '0' and 'layer4'."""
    wh = Warehouse(tmp_path / "wh")
    for name in TABLES:
        wh.write(name, example_rows(name, key="k1", n=3), key="k1")
    wh.write("exemplars", example_rows("exemplars", key="k2", n=2, layer="layer4"), key="k2")
    return wh


def test_views_on_an_empty_warehouse(tmp_path: Path) -> None:
    conn = connect(Warehouse(tmp_path / "wh"), threads=1)
    for name, spec in TABLES.items():
        rel = conn.sql(f"SELECT * FROM {name}")
        assert rel.columns == spec.schema.names
        assert rel.fetchall() == []
    types = dict(conn.sql("SELECT column_name, column_type FROM (DESCRIBE runs)").fetchall())
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE" and types["layers"] == "VARCHAR[]"


def test_partition_layer_zero_stays_varchar(filled: Warehouse) -> None:
    conn = connect(filled, threads=1)
    rel = conn.sql("SELECT DISTINCT layer FROM exemplars ORDER BY layer")
    assert [str(t) for t in rel.types] == ["VARCHAR"]
    assert rel.fetchall() == [("0",), ("layer4",)]
    assert conn.sql("SELECT count(*) FROM unit_stats WHERE layer = '0'").fetchall() == [(3,)]


def test_views_see_files_written_after_connect(filled: Warehouse) -> None:
    conn = connect(filled, threads=1)
    filled.write("exemplars", example_rows("exemplars", key="k3", n=1), key="k3")
    assert conn.sql("SELECT count(*) FROM exemplars").fetchall() == [(6,)]


def test_run_query_returns_columns_and_rows(filled: Warehouse) -> None:
    columns, rows = run_query(
        filled.root, "SELECT unit, activation FROM exemplars WHERE layer = '0' ORDER BY unit"
    )
    assert columns == ["unit", "activation"]
    assert rows == [(0, 0.5), (1, 1.5), (2, 2.5)]
    _, last = run_query(filled, "SELECT 1; SELECT 2 AS two")
    assert last == [(2,)]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO 'out.csv'",
        "INSERT INTO runs SELECT * FROM runs",
        "CREATE TABLE t AS SELECT 1",
        "ATTACH 'other.duckdb'",
        "SET threads = 1",
        "PRAGMA version",
        "DROP VIEW runs",
        "SELECT 1; DELETE FROM runs",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO 'out.csv'",
        "CALL pragma_version()",
    ],
)
def test_only_reads_are_allowed(filled: Warehouse, sql: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="only read-only queries are allowed"):
        run_query(filled, sql)
    assert not (tmp_path / "out.csv").exists()


def test_files_outside_the_warehouse_cannot_be_read(filled: Warehouse, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(UserError, match="Permission Error"):
        run_query(filled, f"SELECT * FROM read_csv('{secret}')")


@pytest.mark.parametrize(
    "sql",
    ["EXPLAIN SELECT * FROM runs", "DESCRIBE exemplars", "WITH a AS (SELECT 1 x) SELECT * FROM a"],
)
def test_read_statements_run(filled: Warehouse, sql: str) -> None:
    columns, _ = run_query(filled, sql)
    assert columns


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("SELEC * FROM runs", "Parser Error"),
        ("SELECT * FROM nope", "Catalog Error"),
        ("", "no SQL statement"),
    ],
)
def test_invalid_sql_is_a_one_line_user_error(filled: Warehouse, sql: str, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        run_query(filled, sql)
    assert "\n" not in str(info.value)


def test_missing_warehouse_is_named(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match=re.escape(str(tmp_path / "missing"))):
        run_query(tmp_path / "missing", "SELECT 1")


COLUMNS = ["name", "n", "score", "at", "tags", "note"]
ROWS = [
    ("a", 1, 0.5, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), ["x", "y"], None),
    ("bb,c", 22, float("nan"), None, [], "two\nlines"),
]


def test_table_format() -> None:
    text = format_result(COLUMNS, ROWS, "table")
    lines = text.splitlines()
    assert lines[0].split(" | ")[0].strip() == "name" and lines[-1] == "(2 rows)"
    assert lines[2].startswith("a    |  1 |   0.5 | 2024-01-02T03:04:05+00:00")
    assert "NULL" in lines[2] and "two\\nlines" in lines[3]
    rule = [i for i, ch in enumerate(lines[1]) if ch == "+"]
    for line in (lines[0], lines[2]):  # separators line up with the rule
        assert [i for i, ch in enumerate(line) if ch == "|"] == rule
    assert format_result(["x"], [], "table").splitlines()[-1] == "(0 rows)"
    assert format_result(["x"], [(1,)], "table").splitlines()[-1] == "(1 row)"


def test_csv_format() -> None:
    parsed = list(csv.reader(io.StringIO(format_result(COLUMNS, ROWS, "csv"))))
    assert parsed[0] == COLUMNS
    assert parsed[1] == ["a", "1", "0.5", "2024-01-02T03:04:05+00:00", '["x", "y"]', ""]
    assert parsed[2][0] == "bb,c" and parsed[2][5] == "two\nlines"


def test_json_format() -> None:
    objects = json.loads(format_result(COLUMNS, ROWS, "json"))
    assert objects[0] == {
        "name": "a",
        "n": 1,
        "score": 0.5,
        "at": "2024-01-02T03:04:05+00:00",
        "tags": ["x", "y"],
        "note": None,
    }
    assert objects[1]["score"] is None
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        format_result(COLUMNS, ROWS, "xml")  # type: ignore[arg-type]


def test_timestamps_and_intervals_from_duckdb_render_as_text(filled: Warehouse) -> None:
    sql = "SELECT started_at, started_at - TIMESTAMPTZ '2024-01-01 00:00:00+00' AS age FROM runs ORDER BY 1 LIMIT 1"
    columns, rows = run_query(filled, sql)
    expected = [{"started_at": "2024-01-02T03:04:05+00:00", "age": "1 day, 3:04:05"}]
    assert json.loads(format_result(columns, rows, "json")) == expected
    _, rows = run_query(filled, "SELECT INTERVAL 2 MONTH + INTERVAL 90 MINUTE")
    assert "2 months 1:30:00" in format_result(["i"], rows, "table")


def test_example_queries_in_the_docs_run(filled: Warehouse) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    examples = [b for b in blocks if "read_parquet" not in b]
    assert len(examples) >= 4
    for sql in examples:
        run_query(filled, sql)
