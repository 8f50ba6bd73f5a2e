"""Warehouse writes: validation, partition splitting, atomic and idempotent files, has/read."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pyarrow as pa
import pytest

from coin_scale.errors import ResourceError
from coin_scale.storage import Warehouse, connect
from coin_scale.storage.examples import example_rows
from coin_scale.storage.schemas import dissections, exemplars, unit_stats


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "wh")


def test_create_makes_directory_and_leaves_no_probe_file(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and files(tmp_path) == []
    assert wh.tables() == []
    assert repr(wh).startswith("Warehouse(")


def test_path_under_a_regular_file_is_a_resource_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    with pytest.raises(ResourceError, match=r"is not writable: .*pass --warehouse DIR"):
        Warehouse(tmp_path / "plain" / "wh")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_read_only_directory_is_a_resource_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ResourceError, match="is not writable"):
            Warehouse(locked)
    finally:
        locked.chmod(0o700)


def test_missing_warehouse_without_create(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="does not exist"):
        Warehouse(tmp_path / "nope", create=False)


def test_write_splits_partitions_and_drops_partition_columns(wh: Warehouse, tmp_path: Path) -> None:
    rows = [
        *example_rows("unit_stats", key="d1", n=2, model="resnet18", layer="layer4"),
        *example_rows("unit_stats", key="d1", n=3, model="resnet18", layer="0"),
    ]
    written = wh.write("unit_stats", rows, key="d1")
    assert files(tmp_path / "wh") == [
        "unit_stats/model=resnet18/layer=0/d1.parquet",
        "unit_stats/model=resnet18/layer=layer4/d1.parquet",
    ]
    assert len(written) == 2
    assert "layer" not in pa.parquet.read_schema(written[0]).names
    assert wh.read("unit_stats", {"layer": "0"}).num_rows == 3
    assert wh.read("unit_stats", columns=["unit"]).column_names == ["unit"]
    assert wh.tables() == ["unit_stats"]


def test_same_key_twice_replaces_rows(wh: Warehouse) -> None:
    rows = example_rows("exemplars", key="d1", n=5)
    wh.write("exemplars", rows, key="d1")
    wh.write("exemplars", rows[:4], key="d1")
    wh.write("exemplars", exemplars.to_arrow(rows[:4]), key="d1")
    conn = connect(wh, threads=1)
    assert conn.sql("SELECT count(*) FROM exemplars").fetchall() == [(4,)]
    assert wh.has("exemplars", "d1") and not wh.has("exemplars", "d2")
    assert wh.has("exemplars", "d1", {"layer": "0"}) and not wh.has(
        "exemplars", "d1", {"layer": "1"}
    )


def test_arrow_input_is_cast_to_the_schema(wh: Warehouse) -> None:
    table = unit_stats.to_arrow(example_rows("unit_stats", key="d1", n=2))
    table = table.set_column(3, "unit", table.column("unit").cast(pa.int64()))
    wh.write("unit_stats", table, key="d1")
    assert wh.read("unit_stats").schema.field("unit").type == pa.int32()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.drop_columns(["mean"]), r"missing \['mean'\]"),
        (lambda t: t.append_column("extra", pa.array([1, 2])), r"unexpected \['extra'\]"),
        (lambda t: t.set_column(7, "mean", pa.array(["a", "b"])), "column mean: expected double"),
        (lambda t: t.set_column(7, "mean", pa.array([None, 1.0])), "column mean: 1 null values"),
        (
            lambda t: t.set_column(4, "kind", pa.array(["neuron", "pixel"])),
            r"column kind: values \['pixel'\]",
        ),
        (lambda t: t.set_column(2, "layer", pa.array(["a/b", "a/b"])), "'a/b' is not a safe path"),
        (
            lambda t: t.set_column(0, "dissection_id", pa.array(["d1", "d2"])),
            r"rows carry \['d2'\]",
        ),
    ],
)
def test_invalid_data_is_rejected_and_nothing_is_written(
    wh: Warehouse, tmp_path: Path, change, match
) -> None:
    table = unit_stats.to_arrow(example_rows("unit_stats", key="d1", n=2))
    with pytest.raises(ValueError, match=match):
        wh.write("unit_stats", change(table), key="d1")
    assert files(tmp_path / "wh") == []


def test_unsafe_key_and_unknown_table(wh: Warehouse) -> None:
    with pytest.raises(ValueError, match="write key '../x'"):
        wh.write("runs", example_rows("runs", key="../x", n=1), key="../x")
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        wh.write("nope", [], key="k")


def test_failure_while_writing_leaves_no_file(wh: Warehouse, tmp_path: Path, monkeypatch) -> None:
    import coin_scale.storage.warehouse as warehouse_mod

    real = warehouse_mod.pq.write_table

    def write_then_crash(table, where, **kwargs):
        real(table, where, **kwargs)  # the temporary file exists now
        raise KeyboardInterrupt

    monkeypatch.setattr(warehouse_mod.pq, "write_table", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        wh.write("exemplars", example_rows("exemplars", key="d1"), key="d1")
    assert files(tmp_path / "wh") == []


def test_failed_rename_keeps_the_old_file(wh: Warehouse, tmp_path: Path, monkeypatch) -> None:
    wh.write("runs", example_rows("runs", key="r1", n=1), key="r1")

    def broken_rename(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(wh.fs, "rename", broken_rename)
    done = dataclasses.replace(example_rows("runs", key="r1", n=1)[0], status="complete")
    with pytest.raises(OSError, match="disk full"):
        wh.write("runs", [done], key="r1")
    assert files(tmp_path / "wh") == ["runs/r1.parquet"]
    assert wh.read("runs").column("status").to_pylist() == ["running"]


def test_stale_tmp_file_is_ignored_by_readers(wh: Warehouse, tmp_path: Path) -> None:
    wh.write("runs", example_rows("runs", key="r1", n=1), key="r1")
    (tmp_path / "wh" / "runs" / "r2.parquet.tmp-dead").write_bytes(b"PAR1 half a file")
    assert wh.read("runs").num_rows == 1
    assert connect(wh, threads=1).sql("SELECT count(*) FROM runs").fetchall() == [(1,)]
    assert [e.rel for e in wh.tmp_files("runs")] == ["runs/r2.parquet.tmp-dead"]
    assert not wh.has("runs", "r2")


def test_read_of_an_unwritten_table_is_empty_with_the_schema(wh: Warehouse) -> None:
    table = wh.read("dissections")
    assert table.num_rows == 0
    assert table.schema.equals(dissections.SPEC.schema)
    assert wh.read("exemplars", columns=["unit"]).column_names == ["unit"]


def test_zero_rows_of_a_partitioned_table_write_nothing(wh: Warehouse) -> None:
    assert wh.write("exemplars", [], key="d1") == []
    assert not wh.has("exemplars", "d1")
