"""Starting Ray: with no `--address` the commands start a local Ray instance, even when Ray's
"current cluster" file names a cluster that died without cleaning up (a killed `ray start` or a
test cluster cut short). A bare `ray.init()` would join that address: refuse `num_cpus`, or hang
on the dead one (what broke a CI run after a timed-out test left the file behind)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SCRIPT = """
import ray
from coin_scale.actors.cluster import connect
session = connect(num_cpus=NUM_CPUS)
print("owned", session.owned, "nodes", len(ray.nodes()), "gcs", ray.get_runtime_context().gcs_address)
session.close()
print("closed", ray.is_initialized())
"""


@pytest.fixture
def stale_ray_tmpdir():
    """A short RAY_TMPDIR (Unix socket paths are limited) whose ray_current_cluster names a dead
    GCS address."""
    root = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (root / "ray").mkdir()
    (root / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("num_cpus", ["None", "1"])
def test_a_local_start_ignores_a_dead_cluster_left_in_ray_current_cluster(
    stale_ray_tmpdir, num_cpus
):
    env = {**os.environ, "RAY_TMPDIR": str(stale_ray_tmpdir)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("NUM_CPUS", num_cpus)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("owned True nodes 1 gcs ") and "127.0.0.1:9" not in lines[0]
    assert lines[1] == "closed False"


CHECKS = """
import json
from coin_scale.actors.cluster import check_reachable
from coin_scale.errors import UserError
for address in ("auto", "foo", "HEAD:port", "http://127.0.0.1:8265", "ray://127.0.0.1:PORT"):
    try:
        check_reachable(address, timeout=2)
        print(json.dumps([address, "reachable", 0]))
    except UserError as err:
        print(json.dumps([address, str(err), err.exit_code]))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_addresses_that_name_no_cluster_are_one_line_errors_not_a_wait():
    """`--address auto` finding a dead cluster, malformed addresses and a port nobody listens on
    fail at once with the fix; Ray itself would raise a traceback or wait for minutes. (`auto`
    finds the dead address in RAY_ADDRESS: from a stale ray_current_cluster file Ray prefers any
    live GCS process on the machine, such as the test session's own, when there is one.)"""
    import json

    port = _free_port()
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", CHECKS.replace("PORT", str(port))],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = {a: (message, code) for a, message, code in map(json.loads, done.stdout.splitlines())}
    message, code = got["auto"]
    # (Ray resolves 127.0.0.1 to this node's address)
    assert code == 3 and "ray status" in message
    assert re.search(
        r"no Ray cluster answers at ([\d.]+):9 \(found by --address auto: \1:9\)", message
    )
    for malformed in ("foo", "HEAD:port"):
        assert got[malformed] == (
            f"--address: expected auto, HOST:PORT (a cluster's GCS, e.g. HEAD:6379) or "
            f"ray://HOST:10001; got {malformed!r}",
            2,
        )
    message, code = got["http://127.0.0.1:8265"]
    assert code == 2 and "the dashboard's, for `ray job submit`" in message
    message, code = got[f"ray://127.0.0.1:{port}"]
    assert code == 3 and f"no Ray cluster answers at 127.0.0.1:{port}" in message


def test_the_cli_refuses_a_dead_address_and_records_the_run_failed(probe_dir, tmp_path):
    import duckdb

    port = _free_port()
    wh = tmp_path / "wh"
    argv = [str(Path(sys.executable).parent / "coin-scale"), "dissect", "--model", "resnet18",
            "--weights", "none", "--layer", "layer4", "--probe", str(probe_dir),
            "--warehouse", str(wh), "--address", f"127.0.0.1:{port}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"error: --address 127.0.0.1:{port}: no Ray cluster answers" in done.stderr
    rows = duckdb.sql(f"SELECT status, message FROM '{wh}/runs/*.parquet'").fetchall()
    assert len(rows) == 1 and rows[0][0] == "failed" and "no Ray cluster answers" in rows[0][1]
    assert sorted(p.name for p in wh.iterdir()) == ["runs"]  # nothing else was written
