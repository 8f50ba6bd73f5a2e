"""Actors killed on the worker nodes of a multi-node Ray cluster (`ray.cluster_utils.Cluster`: a
head with no CPUs, two one-CPU workers) in the middle of their work: model replicas during a
dissection, a renderer, the LLM gateway actors. Every result is complete and exact.

The cluster runs in one subprocess (`multinode_fault_run.py`, all three scenarios in turn), so it
never meets the session's `ray_cluster`; each test checks its scenario's report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from coin_scale.storage import connect
from tests.test_dissect_cli import exemplar_tensors, reference_top5

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faults(probe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The scenarios' reports by name, plus the dissection's warehouse and the driver's stderr."""
    tmp = tmp_path_factory.mktemp("multinode-faults")
    warehouse = tmp / "wh"
    env = _env(tmp / "reports.jsonl")
    argv = [sys.executable, str(ROOT / "tests" / "multinode_fault_run.py"),
            "replicas", str(probe_dir), str(warehouse), "render", "gateway", str(tmp / "cache"),
            "agents", str(tmp / "cache")]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, timeout=580, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = _reports(tmp / "reports.jsonl")
    return {r["scenario"]: r for r in reports} | {"warehouse": warehouse, "stderr": run.stderr}


@pytest.mark.timeout(600)
def test_model_replicas_killed_on_two_nodes_lose_nothing(faults, probe_dir):
    report = faults["replicas"]
    assert [k["node"] for k in report["kills"]] == ["worker0", "worker1"]  # one per node
    assert (report["images"], report["failed"]) == (37, 1)
    assert "lost batch" in faults["stderr"]  # the killed replicas' batches were resubmitted

    warehouse = faults["warehouse"]
    want_values, want_indices, _ = reference_top5(probe_dir)
    got_values, got_indices = exemplar_tensors(warehouse)
    torch.testing.assert_close(got_values, want_values, rtol=1e-4, atol=1e-5)
    assert torch.equal(got_indices, want_indices)
    con = connect(warehouse)
    assert con.sql("SELECT count(*), count(DISTINCT (unit, rank)) FROM exemplars").fetchall()[
        0
    ] == (2560, 2560)
    assert con.sql("SELECT count(*) FROM unit_stats").fetchall()[0][0] == 512
    assert con.sql("SELECT status FROM runs").fetchall() == [("complete",)]


@pytest.mark.timeout(600)
def test_a_renderer_killed_on_a_worker_node_loses_no_image(faults):
    report = faults["render"]
    assert sorted(report["worker_nodes"]) == ["worker0", "worker1"]  # one worker per node
    assert report["returned"] == report["requested"] == 64
    assert report["equal"]  # byte for byte the un-faulted render of each spec, in order
    assert report["distinct"] == 64
    assert report["resubmitted"] >= 1  # the killed actor's batches went to the other worker
    assert report["killed_worker_replaced"]  # Ray restarted the actor
    assert report["killed_backend_replaced"] and report["backend_restarts"] == 1


@pytest.mark.timeout(600)
def test_gateway_actors_killed_on_worker_nodes_lose_no_unit_and_pay_little_twice(faults):
    reference, faulted = faults["gateway"]["reference"], faults["gateway"]["faulted"]
    assert sorted(faulted["gateway_nodes"]) == ["worker0", "worker1"]  # one actor per node
    assert len(faulted["killed"]) == 2 and faulted["restarted"]
    assert faulted["resubmitted"] >= 1  # the calls in flight at the kill were sent again
    # Every unit ends as without the fault: status, label, rounds, tokens and every step.
    assert [o["status"] for o in faulted["outcomes"]] == ["ok"] * 4
    assert faulted["outcomes"] == reference["outcomes"]
    # Every call has its one ledger row; none was lost with the dead actors. A call whose reply
    # reached the request cache just before its actor died is answered from the cache when it is
    # sent again, so its row says 'cached' (seen once in a fresh-clone CI run); at most one such
    # row per resubmitted call.
    ledger = [(u, r, "ok" if s == "cached" else s) for u, r, s in faulted["ledger"]]
    assert ledger == [tuple(row) for row in reference["ledger"]] and len(ledger) == 16
    assert sum(s == "cached" for *_, s in faulted["ledger"]) <= faulted["resubmitted"]
    # The same requests; paid twice at most: the calls outstanding on the dead actors, which were
    # resubmitted (one per unit at most). Counting only those still at the server is too tight:
    # a reply already on its way back dies with its actor too (seen in a fresh-clone CI run).
    assert reference["requests"] == reference["distinct_requests"] == 16
    # A request cut off mid-send by the kill reaches the server unparsed (view None, seen once in
    # a full-suite run); every parsed one is one the undisturbed run sent too.
    assert [v for v in faulted["request_views"] if v != "None"] == reference["request_views"]
    extra = faulted["requests"] - faulted["distinct_requests"]
    assert faulted["in_flight_at_kill"] >= 1 and 0 <= extra <= min(faulted["resubmitted"], 4)


@pytest.mark.timeout(600)
def test_agents_measuring_on_replicas_of_other_nodes_survive_a_killed_replica(faults):
    """Issue 19: the agents' measurements run on model replicas, none on the driver's node; a
    replica killed mid-run changes no explanation."""
    reference, faulted = faults["agents"]["reference"], faults["agents"]["faulted"]
    for run in (reference, faulted):
        assert run["replica_nodes"] == ["worker0", "worker1"] and run["replicas_on_driver_node"] == 0
        passes, images = run["passes"]  # the agents' measurements only
        assert 0 < passes <= run["measurements"] <= images
    assert len(faulted["killed"]) == 1 and faulted["measurements"] > 4  # killed mid-run
    assert [o[0] for o in faulted["outcomes"]] == ["ok"] * 4
    assert faulted["outcomes"] == reference["outcomes"]
    assert faulted["steps"] == reference["steps"]  # every tool call and what the agent was told


@pytest.mark.timeout(600)
def test_no_actor_takes_its_constructor_arguments_from_the_object_store(faults):
    # Ray logs an error (once per driver) for an actor with max_restarts > 0 whose constructor
    # arguments are in the object store, since a restart could not rebuild it (ray#53727). All
    # three actor kinds were created, and restarted, in that driver.
    assert "constructor arguments in the object store" not in faults["stderr"]


@pytest.fixture(scope="module")
def sweep_faults(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The `sweep` scenario's report: run_sweep.py on its own multi-node cluster (a second one)."""
    tmp = tmp_path_factory.mktemp("multinode-sweep")
    env = _env(tmp / "reports.jsonl")
    argv = [sys.executable, str(ROOT / "tests" / "multinode_fault_run.py"), "sweep", str(tmp)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=580, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    (report,) = _reports(tmp / "reports.jsonl")
    return report


def _env(reports: Path) -> dict[str, str]:
    """The scenarios' environment: they append their reports to `reports` (see the script)."""
    return os.environ | {"PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0", "FAULT_REPORTS": str(reports)}


def _reports(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.timeout(600)
def test_an_llm_sweep_survives_its_model_replicas_killed_mid_run(sweep_faults):
    """Issue 19, item 3: `run_sweep.py` with LLM agents on a cluster whose driver node has no
    model replica; every replica killed while the agents experiment; the same explanations as an
    undisturbed run, and no forward pass in the driver."""
    reference, faulted = sweep_faults["reference"], sweep_faults["faulted"]
    for run in (reference, faulted):
        assert run["code"] == 0 and run["replicas_on_driver_node_mid_run"] == 0
        assert run["replicas_on_driver_node"] == 0  # nor at the end (the sweep's replica either)
        assert run["forward_passes"]["driver"] == {"passes": 0, "images": 0}
        assert run["forward_passes"]["replicas"]["passes"] > 0
        assert len(run["units"]) == 3 and {u[1] for u in run["units"]} == {"ok"}
    assert faulted["killed"] and {node for node, _ in faulted["killed"]} <= {"worker0", "worker1"}
    assert faulted["units"] == reference["units"] and faulted["text"] == reference["text"]
    assert faulted["requests"] == reference["requests"]  # no agent started over
