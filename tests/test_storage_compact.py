"""Compaction (merge, dedupe, idempotent, `has` survives) and the query/compact CLIs end to end."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

import coin_scale.cli
from coin_scale.storage import Warehouse, compact, connect
from coin_scale.storage.examples import example_rows
from coin_scale.storage.schemas import TABLES


def parquet_files(root: Path, table: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / table).rglob("*.parquet"))


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    wh = Warehouse(tmp_path / "wh")
    for key in ("d1", "d2", "d3"):
        wh.write("exemplars", example_rows("exemplars", key=key, n=4), key=key)
        wh.write("exemplars", example_rows("exemplars", key=key, n=2, layer="layer4"), key=key)
    wh.write("runs", example_rows("runs", key="r1", n=1), key="r1")
    return wh


def test_compaction_merges_each_partition_into_one_file(wh: Warehouse, tmp_path: Path) -> None:
    root = tmp_path / "wh"
    before = connect(wh, threads=1).sql("SELECT * FROM exemplars ORDER BY ALL").fetchall()
    reports = {r.table: r for r in compact(wh)}
    assert (reports["exemplars"].files_before, reports["exemplars"].files_after) == (6, 2)
    assert reports["exemplars"].duplicates_dropped == 0
    assert (reports["runs"].files_before, reports["runs"].files_after) == (1, 1)
    files = parquet_files(root, "exemplars")
    assert [f.rsplit("/", 1)[0] for f in files] == [
        "exemplars/model=0/layer=0",
        "exemplars/model=0/layer=layer4",
    ]
    assert all(f.rsplit("/", 1)[1].startswith("compacted-") for f in files)
    assert parquet_files(root, "runs") == ["runs/r1.parquet"]
    after = connect(wh, threads=1).sql("SELECT * FROM exemplars ORDER BY ALL").fetchall()
    assert after == before


def test_has_still_answers_after_compaction(wh: Warehouse) -> None:
    compact(wh, tables=["exemplars"])
    assert all(wh.has("exemplars", k) for k in ("d1", "d2", "d3"))
    assert wh.has("exemplars", "d2", {"layer": "layer4"})
    assert not wh.has("exemplars", "d4")
    assert not wh.has("exemplars", "d1", {"model": "other"})


def test_duplicates_keep_the_newest_row(wh: Warehouse, tmp_path: Path) -> None:
    compact(wh, tables=["exemplars"])
    newer = [
        dataclasses.replace(r, activation=99.0) for r in example_rows("exemplars", key="d1", n=2)
    ]
    wh.write(
        "exemplars", newer, key="d1"
    )  # rewrite of compacted rows: visible twice until compaction
    count = "SELECT count(*) FROM exemplars WHERE layer = '0'"
    assert connect(wh, threads=1).sql(count).fetchall() == [(14,)]
    (report,) = compact(wh, tables=["exemplars"])
    assert report.duplicates_dropped == 2
    conn = connect(wh, threads=1)
    assert conn.sql(count).fetchall() == [(12,)]
    rows = conn.sql(
        "SELECT unit, activation FROM exemplars WHERE layer='0' AND dissection_id='d1' ORDER BY unit"
    )
    assert rows.fetchall() == [(0, 99.0), (1, 99.0), (2, 2.5), (3, 3.5)]


def test_compaction_is_idempotent_and_removes_stale_tmp_files(
    wh: Warehouse, tmp_path: Path
) -> None:
    stale = tmp_path / "wh" / "exemplars" / "model=0" / "layer=0" / "d9.parquet.tmp-0123"
    fresh = tmp_path / "wh" / "runs" / "r2.parquet.tmp-4567"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    os.utime(stale, (1, 1))
    first = {r.table: r for r in compact(wh)}
    assert first["exemplars"].tmp_removed == 1 and first["runs"].tmp_removed == 0
    assert not stale.exists() and fresh.exists()
    files = parquet_files(tmp_path / "wh", "exemplars")
    second = compact(wh)
    assert all(
        r.files_before == r.files_after and r.duplicates_dropped == 0 and r.tmp_removed == 0
        for r in second
    )
    assert parquet_files(tmp_path / "wh", "exemplars") == files


def test_compaction_of_a_corrupt_file_names_it(wh: Warehouse, tmp_path: Path) -> None:
    (tmp_path / "wh" / "exemplars" / "model=0" / "layer=0" / "bad.parquet").write_bytes(
        b"not parquet"
    )
    with pytest.raises(ValueError, match="bad.parquet is not a readable Parquet file"):
        compact(wh, tables=["exemplars"])


@pytest.fixture
def cli(monkeypatch):
    """coin_scale.cli.main with only this work's subcommands (others may not exist yet)."""
    monkeypatch.setattr(coin_scale.cli, "COMMANDS", ("query", "compact"))
    return coin_scale.cli.main


def test_query_cli_end_to_end(cli, wh: Warehouse, capsys) -> None:
    sql = "SELECT layer, count(*) AS n FROM exemplars GROUP BY layer ORDER BY layer"
    assert cli(["query", "--warehouse", wh.root, sql]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("layer ") and out.splitlines()[-1] == "(2 rows)"
    assert cli(["query", "--warehouse", wh.root, "--format", "json", sql]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"layer": "0", "n": 12},
        {"layer": "layer4", "n": 6},
    ]
    assert cli(["query", "--warehouse", wh.root, "--format", "csv", sql]) == 0
    assert capsys.readouterr().out == "layer,n\n0,12\nlayer4,6\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["DROP VIEW runs"], "only read-only queries are allowed"),
        (["SELEC 1"], "Parser Error"),
    ],
)
def test_query_cli_errors_are_one_line(
    cli, wh: Warehouse, capsys, args: list[str], message: str
) -> None:
    assert cli(["query", "--warehouse", wh.root, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coin-scale query: error: ") and message in err and err.count("\n") == 1


def test_query_cli_missing_warehouse(cli, tmp_path: Path, capsys) -> None:
    assert cli(["query", "--warehouse", str(tmp_path / "none"), "SELECT 1"]) == 3
    assert str(tmp_path / "none") in capsys.readouterr().err


def test_compact_cli_end_to_end(cli, wh: Warehouse, capsys) -> None:
    assert cli(["compact", "--warehouse", wh.root, "--table", "exemplars"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "table",
        "|",
        "files_before",
        "|",
        "files_after",
        "|",
        "duplicates_dropped",
        "|",
        "tmp_removed",
    ]
    assert out[2].split(" | ")[:3] == ["exemplars", "           6", "          2"]
    assert out[-1] == "(1 row)"
    assert cli(["compact", "--warehouse", wh.root]) == 0
    assert f"({len(TABLES)} rows)" in capsys.readouterr().out


def test_compact_cli_unwritable_warehouse(cli, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert cli(["compact", "--warehouse", str(tmp_path / "file")]) == 3
    assert "does not exist" in capsys.readouterr().err
