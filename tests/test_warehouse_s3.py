"""Shared storage: a warehouse on a real S3-compatible server (moto, on 127.0.0.1) and on fsspec.

Writes, reads, `has`, replace-by-key, compaction, `coin-scale query` and a real dissection all go
to `s3://` URIs; DuckDB reads them through pyarrow, with no httpfs extension.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from coin_scale.cli import main
from coin_scale.errors import ResourceError
from coin_scale.storage import Warehouse, compact, connect, run_query
from coin_scale.storage.examples import example_rows

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """`host:port` of a moto S3 server on 127.0.0.1, with fake credentials in the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            patch.delenv(name, raising=False)
        for name, value in _AWS_ENV.items():
            patch.setenv(name, value)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            assert host == "127.0.0.1"
            yield f"127.0.0.1:{port}"
        finally:
            server.stop()


def local_url(endpoint: str) -> str:
    """The moto server's URL; never anything but this machine."""
    return f"http://127.0.0.1:{endpoint.removeprefix('127.0.0.1:')}"


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=local_url(endpoint), region_name="us-east-1")


@pytest.fixture
def bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"coin-wh-{uuid.uuid4().hex[:10]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


def uri(bucket: str, endpoint: str, prefix: str = "wh") -> str:
    return f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http"


def object_keys(endpoint: str, bucket: str) -> list[str]:
    """Every object key in `bucket`, as the S3 server lists them (directory markers excluded)."""
    listing = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/"))


def test_write_read_has_and_replace_by_key(bucket: str, endpoint: str) -> None:
    wh = Warehouse(uri(bucket, endpoint))
    written = wh.write("exemplars", example_rows("exemplars", key="d1", n=3), key="d1")
    assert written == [f"s3://{bucket}/wh/exemplars/model=0/layer=0/d1.parquet"]
    wh.write("exemplars", example_rows("exemplars", key="d2", n=2, layer="layer4"), key="d2")
    wh.write("runs", example_rows("runs", key="r1", n=1), key="r1")
    assert object_keys(endpoint, bucket) == [
        "wh/exemplars/model=0/layer=0/d1.parquet",
        "wh/exemplars/model=0/layer=layer4/d2.parquet",
        "wh/runs/r1.parquet",
    ]  # no probe or temporary objects left behind
    assert wh.has("exemplars", "d1") and wh.has("exemplars", "d2", {"layer": "layer4"})
    assert not wh.has("exemplars", "d3") and not wh.has("exemplars", "d1", {"layer": "layer4"})
    assert wh.tables() == ["runs", "exemplars"]

    newer = [
        dataclasses.replace(r, activation=7.0) for r in example_rows("exemplars", key="d1", n=2)
    ]
    wh.write("exemplars", newer, key="d1")  # the same key again replaces its file
    d1 = wh.read("exemplars", {"dissection_id": "d1"}).sort_by("unit")
    assert d1.column("activation").to_pylist() == [7.0, 7.0]
    assert Warehouse(uri(bucket, endpoint), create=False).read("exemplars").num_rows == 4


def test_compaction_and_has_on_s3(bucket: str, endpoint: str) -> None:
    wh = Warehouse(uri(bucket, endpoint))
    for key in ("d1", "d2", "d3"):
        wh.write("unit_stats", example_rows("unit_stats", key=key, n=4), key=key)
    before = connect(wh, threads=1).sql("SELECT * FROM unit_stats ORDER BY ALL").fetchall()
    (report,) = compact(uri(bucket, endpoint), tables=["unit_stats"])
    assert (report.files_before, report.files_after, report.duplicates_dropped) == (3, 1, 0)
    (merged,) = object_keys(endpoint, bucket)
    assert merged.startswith("wh/unit_stats/model=0/layer=0/compacted-")
    assert all(wh.has("unit_stats", k) for k in ("d1", "d2", "d3")) and not wh.has(
        "unit_stats", "d4"
    )
    assert connect(wh, threads=1).sql("SELECT * FROM unit_stats ORDER BY ALL").fetchall() == before
    (again,) = compact(wh, tables=["unit_stats"])
    assert again.files_before == again.files_after == 1


def test_query_cli_reads_s3_and_stays_read_only(
    bucket: str, endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = Warehouse(uri(bucket, endpoint))
    wh.write("runs", example_rows("runs", key="r1", n=1), key="r1")
    wh.write("exemplars", example_rows("exemplars", key="d1", n=3), key="d1")
    sql = "SELECT e.unit, r.run_id FROM exemplars e, runs r ORDER BY e.unit"
    assert main(["query", "--warehouse", wh.root, "--format", "json", sql]) == 0
    assert json.loads(capsys.readouterr().out) == [{"unit": u, "run_id": "r1"} for u in range(3)]
    # Tables with no files yet are empty views with the right columns.
    assert run_query(wh, "SELECT count(*) FROM dissections") == (["count_star()"], [(0,)])

    local = tmp_path / "secret.parquet"
    local.write_bytes(b"x")
    for bad in ("CREATE TABLE t AS SELECT 1", f"SELECT * FROM read_parquet('{local}')"):
        assert main(["query", "--warehouse", wh.root, bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_plain_s3_uri_with_endpoint_from_the_environment(
    bucket: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_url(endpoint))
    wh = Warehouse(f"s3://{bucket}/shared")
    wh.write("runs", example_rows("runs", key="r1", n=1), key="r1")
    assert object_keys(endpoint, bucket) == ["shared/runs/r1.parquet"]
    assert run_query(f"s3://{bucket}/shared", "SELECT run_id FROM runs")[1] == [("r1",)]


@pytest.mark.slow
def test_dissect_cli_writes_to_s3_and_is_queried_back(
    ray_cluster, bucket: str, endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coin_scale.bench.images import write_synthetic_images

    probe = tmp_path / "probe"
    write_synthetic_images(probe, 6, size=(64, 64), seed=3, classes=2)
    where = uri(bucket, endpoint)
    args = ["dissect", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
            "--top-k", "2", "--batch-size", "6", "--replicas", "1", "--no-progress",
            "--probe", str(probe), "--warehouse", where]  # fmt: skip
    assert main(args) == 0
    assert "dissected 512 units of resnet18/layer4 over 6 images" in capsys.readouterr().out
    assert main(["query", "--warehouse", where, "--format", "csv",
                 "SELECT count(*) AS n, count(DISTINCT unit) AS units FROM exemplars"]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines() == ["n,units", "1024,512"]
    conn = connect(where, threads=1)
    assert conn.sql("SELECT status FROM runs").fetchall() == [("complete",)]
    assert conn.sql("SELECT count(*) FROM unit_stats WHERE layer = 'layer4'").fetchall() == [(512,)]

    assert main(args) == 0  # the finished dissection is found on S3 and reused
    assert "reused cached dissection" in capsys.readouterr().out


def test_dense_activations_round_trip_through_s3(bucket: str, endpoint: str) -> None:
    from coin_scale.dissect.pipeline import _save_activations, activations_file, load_activations

    wh = Warehouse(uri(bucket, endpoint))
    dense = np.arange(24, dtype=np.float32).reshape(4, 6) * 1e5  # beyond float16's range
    dense[1] = np.nan  # an unreadable image
    _save_activations(wh, "d1", dense)
    assert object_keys(endpoint, bucket) == [f"wh/{activations_file('d1')}"]
    np.testing.assert_array_equal(load_activations(wh, "d1"), dense)


@pytest.mark.parametrize("command", ["query", "compact", "dissect"])
def test_a_missing_bucket_is_one_line_naming_the_uri_before_any_work(
    endpoint: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = uri("no-such-bucket", endpoint)
    extra = {
        "query": ["SELECT 1"],
        "compact": [],
        "dissect": ["--model", "resnet18", "--weights", "none", "--layer", "layer4",
                    "--probe", "/nonexistent-probe-never-read"],
    }[command]  # fmt: skip
    code = main([command, "--warehouse", where, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"warehouse {where}" in err and "no-such-bucket" in err
    assert "check that the bucket exists" in err, err


def test_an_unreachable_endpoint_is_a_resource_error() -> None:
    with pytest.raises(
        ResourceError,
        match=r"warehouse s3://coin-wh/wh\?endpoint_override=127\.0\.0\.1:1.*not writable",
    ):
        Warehouse(uri("coin-wh", "127.0.0.1:1"))


def test_bad_uris_are_user_errors() -> None:
    from coin_scale.errors import UserError

    with pytest.raises(UserError, match=r"warehouse s3://b/wh\?nonsense=1: .*nonsense"):
        Warehouse("s3://b/wh?nonsense=1")
    with pytest.raises(UserError, match="unknown filesystem nosuchscheme://"):
        Warehouse("nosuchscheme://x/wh")


def test_an_fsspec_uri_works_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fsspec")
    where = f"memory://coin-wh-{uuid.uuid4().hex[:8]}/wh"
    wh = Warehouse(where)
    wh.write("unit_stats", example_rows("unit_stats", key="d1", n=2), key="d1")
    wh.write("unit_stats", example_rows("unit_stats", key="d2", n=2), key="d2")
    assert wh.has("unit_stats", "d1")
    (report,) = compact(wh, tables=["unit_stats"])
    assert (report.files_before, report.files_after) == (2, 1) and wh.has("unit_stats", "d2")
    assert main(["query", "--warehouse", where, "--format", "csv",
                 "SELECT dissection_id, count(*) FROM unit_stats GROUP BY 1 ORDER BY 1"]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines()[1:] == ["d1,2", "d2,2"]
