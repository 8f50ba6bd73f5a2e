"""Starting Ray: with no `--address` the commands start a local Ray instance, even when Ray's
"current cluster" file names a cluster that died without cleaning up (a killed `ray start` or a
test cluster cut short). A bare `ray.init()` would join that address: refuse `num_cpus`, or hang
on the dead one (what broke a CI run after a timed-out test left the file behind)."""

from __future__ import annotations

import os
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
