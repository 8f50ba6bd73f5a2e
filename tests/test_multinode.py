"""Faults on a multi-node Ray cluster (`ray.cluster_utils.Cluster`): a worker node removed in the
middle of a dissection; the result is complete and exact, with no duplicate rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coin_scale.storage import connect
from tests.test_dissect_cli import exemplar_tensors, reference_top5

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_a_worker_node_removed_mid_dissection_loses_nothing(probe_dir, tmp_path):
    warehouse = tmp_path / "wh"
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "node_removal_run.py"), str(probe_dir), str(warehouse)],
        capture_output=True, text=True, timeout=800, env=env, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(outcome["events"]) == 1  # a node was removed after the first batch
    assert (outcome["images"], outcome["failed"]) == (37, 1)
    assert "lost batch" in run.stderr  # its replica's batches were resubmitted

    want_values, want_indices, _ = reference_top5(probe_dir)
    got_values, got_indices = exemplar_tensors(warehouse)
    torch.testing.assert_close(got_values, want_values, rtol=1e-4, atol=1e-5)
    assert torch.equal(got_indices, want_indices)
    con = connect(warehouse)
    assert con.sql("SELECT count(*), count(DISTINCT (unit, rank)) FROM exemplars").fetchall()[0] == (2560, 2560)
    assert con.sql("SELECT count(*) FROM unit_stats").fetchall()[0][0] == 512
    assert con.sql("SELECT status FROM runs").fetchall() == [("complete",)]
