"""Resuming a killed driver (issue 9): a rerun with the same --run-id does only what is missing.

The core (checkpoint round trip, a restored accumulator continuing exactly) is tested without Ray;
the end-to-end tests SIGKILL a real `coin-scale` driver process once its first checkpoint is on
disk, rerun the same command, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from coin_scale.dissect.checkpoint import (
    CheckpointClock,
    DissectCheckpoint,
    checkpoint_rel,
    decode,
    delete_checkpoint,
    encode,
    load_checkpoint,
    save_checkpoint,
)
from coin_scale.dissect.statistics import UnitAccumulator
from coin_scale.storage import connect
from coin_scale.storage.fs import WarehouseFS

EXE = os.path.join(os.path.dirname(sys.executable), "coin-scale")


def _batches(n_images: int, n_units: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random activations with ties (rounded), in probe order, `size` images a batch."""
    gen = torch.Generator().manual_seed(seed)
    acts = (torch.randn(n_images, n_units, generator=gen) * 4).round() / 4
    index = torch.arange(n_images)
    return [(acts[i : i + size], index[i : i + size]) for i in range(0, n_images, size)]


def _assert_same(a: UnitAccumulator, b: UnitAccumulator) -> None:
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


def test_a_restored_accumulator_continues_exactly_as_an_uninterrupted_one(tmp_path):
    n_images, n_units = 203, 7
    batches = _batches(n_images, n_units, size=16)
    whole = UnitAccumulator(n_units, top_k=5, quantile=0.9, n_images=n_images)
    for acts, idx in batches:
        whole.update(acts, idx)

    first = UnitAccumulator(n_units, top_k=5, quantile=0.9, n_images=n_images)
    for acts, idx in batches[:5]:
        first.update(acts, idx)
    dense = np.full((n_images, n_units), np.nan, dtype=np.float16)
    done = frozenset(int(i) for _, idx in batches[:5] for i in idx)
    ckpt = DissectCheckpoint(
        dissection_id="abc123", n_images=n_images, done=done, failures={3: "truncated jpeg"},
        accumulator=first.state(), dense=dense,
    )  # fmt: skip
    fs = WarehouseFS(tmp_path / "wh")
    save_checkpoint(fs, ckpt)
    assert fs.exists(checkpoint_rel("abc123"))
    loaded = load_checkpoint(fs, "abc123", n_images=n_images, need_dense=True)
    assert loaded is not None and loaded.done == done and loaded.failures == {3: "truncated jpeg"}
    assert loaded.dense is not None and loaded.dense.shape == (n_images, n_units)

    resumed = UnitAccumulator(n_units, top_k=5, quantile=0.9, n_images=n_images)
    resumed.restore(loaded.accumulator)
    for acts, idx in batches[5:]:
        resumed.update(acts, idx)
    _assert_same(resumed, whole)
    stats_resumed, stats_whole = resumed.statistics(), whole.statistics()
    for name in ("mean", "std", "min", "max", "threshold"):
        assert torch.equal(getattr(stats_resumed, name), getattr(stats_whole, name)), name
    assert stats_resumed.count == stats_whole.count == n_images

    # Top-k and the quantile do not depend on the order the remaining batches arrive in.
    shuffled = UnitAccumulator(n_units, top_k=5, quantile=0.9, n_images=n_images)
    shuffled.restore(decode(encode(loaded)).accumulator)
    for acts, idx in reversed(batches[5:]):
        shuffled.update(acts, idx)
    assert torch.equal(shuffled.topk.indices, whole.topk.indices)
    assert torch.equal(shuffled.statistics().threshold, stats_whole.threshold)


def test_a_checkpoint_that_does_not_fit_is_ignored_and_deleting_is_idempotent(tmp_path):
    fs = WarehouseFS(tmp_path / "wh")
    acc = UnitAccumulator(3, top_k=2, quantile=0.5, n_images=10)
    ckpt = DissectCheckpoint(dissection_id="d1", n_images=10, done=frozenset(), failures={},
                             accumulator=acc.state())  # fmt: skip
    save_checkpoint(fs, ckpt)
    assert load_checkpoint(fs, "d1", n_images=11, need_dense=False) is None  # another probe size
    assert load_checkpoint(fs, "d1", n_images=10, need_dense=True) is None  # no dense kept
    assert load_checkpoint(fs, "d2", n_images=10, need_dense=False) is None  # another dissection
    assert load_checkpoint(fs, "d1", n_images=10, need_dense=False) is not None
    with pytest.raises(ValueError, match="another shape"):
        UnitAccumulator(4, top_k=2, quantile=0.5, n_images=10).restore(ckpt.accumulator)
    delete_checkpoint(fs, "d1")
    delete_checkpoint(fs, "d1")
    assert load_checkpoint(fs, "d1", n_images=10, need_dense=False) is None
    assert [e.rel for e in fs.walk_files()] == []  # no temporary file left behind


def test_the_checkpoint_clock_saves_after_n_batches_or_t_seconds():
    every_two = CheckpointClock(every=2, seconds=3600)
    assert not every_two.merged()
    assert every_two.merged()
    every_two.written()
    assert not every_two.merged()
    by_time = CheckpointClock(every=100, seconds=0.0)
    assert by_time.merged()
    never = CheckpointClock(every=0, seconds=0.0)
    assert not any(never.merged() for _ in range(5))


# -- end to end: a killed `coin-scale dissect` driver, rerun --------------------------------------

DISSECT = ["--model", "resnet18", "--weights", "none", "--layer", "layer4", "--top-k", "5",
           "--batch-size", "2", "--replicas", "1", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def big_probe(tmp_path_factory) -> Path:
    """80 small images: enough batches of 2 that a kill lands in the middle of the pass."""
    from coin_scale.bench.images import write_synthetic_images

    root = tmp_path_factory.mktemp("resume-probe")
    write_synthetic_images(root, 80, size=(64, 48), seed=5, classes=4)
    return root


def _kill_when(proc: subprocess.Popen, appeared: Path | None, ready, timeout: float = 240.0) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the driver exited ({proc.returncode}) before it could be killed:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"nothing appeared at {appeared} within {timeout} s")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _rows(warehouse: Path, sql: str) -> list[tuple]:
    return connect(warehouse).sql(sql).fetchall()


@pytest.mark.slow
def test_a_killed_dissection_resumes_where_it_stopped_and_equals_a_clean_run(ray_cluster, big_probe, tmp_path):
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.runtime.dissect import run_dissection

    address = ray_cluster.get_runtime_context().gcs_address
    clean, wh = tmp_path / "clean", tmp_path / "wh"
    reference = run_dissection(
        DissectConfig(model="resnet18", weights="none", layer="layer4", probe=str(big_probe),
                      warehouse=str(clean), top_k=5, batch_size=2, replicas=1),  # fmt: skip
        progress=False,
    )
    argv = [EXE, "dissect", *DISSECT, "--probe", str(big_probe), "--warehouse", str(wh),
            "--run-id", "R", "--address", address, "--checkpoint-batches", "1"]  # fmt: skip
    ckpt = wh / checkpoint_rel(reference.dissection_id)
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when(first, ckpt, ckpt.is_file)
    assert ckpt.is_file() and not wh.joinpath("dissections").exists()
    assert _rows(wh, "SELECT status FROM runs WHERE run_id='R'") == [("running",)]

    second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    found = re.search(rf"resuming dissection {reference.dissection_id}: (\d+)/80 images already done",
                      second.stderr)  # fmt: skip
    assert found, second.stderr[-3000:]
    done = int(found.group(1))
    assert 0 < done < 80
    print(f"resumed dissection: {done}/80 images already done")
    assert "dissected 512 units of resnet18/layer4 over 80 images" in second.stdout
    assert not ckpt.exists()  # deleted once the rows were written

    for table, order in [("exemplars", "unit, rank"), ("probe_images", "image_index")]:
        sql = f"SELECT * FROM {table} ORDER BY {order}"
        assert _rows(wh, sql) == _rows(clean, sql), table
    # Top-k, the quantile, min and max merge exactly whatever the order; mean and std come from
    # Chan's float64 merge, whose last bit depends on the order batches arrive in (a replica runs
    # two at once), killed or not.
    exact = "SELECT * EXCLUDE (mean, std) FROM unit_stats ORDER BY unit"
    assert _rows(wh, exact) == _rows(clean, exact)
    moments = "SELECT mean, std FROM unit_stats ORDER BY unit"
    np.testing.assert_allclose(_rows(wh, moments), _rows(clean, moments), rtol=1e-12, atol=0)
    assert _rows(wh, "SELECT count(*), count(DISTINCT (unit, rank)) FROM exemplars") == [(2560, 2560)]
    assert _rows(wh, "SELECT count(*) FROM unit_stats") == [(512,)]
    assert _rows(wh, "SELECT run_id, status, n_images FROM runs") == [("R", "complete", 80)]
    assert _rows(wh, "SELECT count(*) FROM dissections") == [(1,)]


# -- explanations: the offline whole-layer explainer, and an LLM sweep through a fake server ----


def test_whole_layer_explanations_skip_the_checkpointed_units(tmp_path, capsys):
    from dataclasses import asdict, replace

    from coin_scale.concepts.matrix import ConceptMatrix
    from coin_scale.explain.evidence import LayerEvidence
    from coin_scale.explain.offline import OfflineExplainerConfig
    from coin_scale.explain.resume import ExplainCheckpoint, scope_name
    from coin_scale.explain.whole_layer import explain_whole_layer
    from coin_scale.probe import ProbeSet
    from coin_scale.storage import Warehouse

    gen = torch.Generator().manual_seed(3)
    concepts = ConceptMatrix(names=tuple(f"label=c{i}" for i in range(8)),
                             matrix=torch.rand(8, 90, generator=gen) > 0.7)  # fmt: skip
    evidence = LayerEvidence(
        dissection_id="d0", activations=torch.randn(90, 300, generator=gen), concepts=concepts,
        probe=ProbeSet(root=str(tmp_path), probe_id="p0", images=()),
    )  # fmt: skip
    kw = {"run_id": "R", "model": "m", "layer": "l", "kind": "neuron", "chunk": 64}
    clean = explain_whole_layer(evidence, Warehouse(tmp_path / "clean"), **kw)
    assert "resuming" not in capsys.readouterr().err

    # A run killed after its first two chunks left them checkpointed (marked, to see they are kept).
    wh = Warehouse(tmp_path / "wh")
    ckpt = ExplainCheckpoint(wh.fs, "R", scope_name("offline", "d0", repr(OfflineExplainerConfig())))
    kept = [replace(e, description="from the checkpoint") for e in clean.explanations[:128]]
    ckpt.put_json("units-0000000", [asdict(e) for e in kept[:64]])
    ckpt.put_json("units-0000064", [asdict(e) for e in kept[64:]])
    resumed = explain_whole_layer(evidence, wh, **kw)
    assert "resuming run R: 128/300 units already explained" in capsys.readouterr().err
    assert resumed.explanations[:128] == tuple(kept)
    assert resumed.explanations[128:] == clean.explanations[128:]
    rows = _rows(Path(wh.root), "SELECT count(*), count(DISTINCT unit) FROM explanations")
    assert rows == [(300, 300)]
    assert not wh.fs.exists("_checkpoints/explain/R")  # spent once the rows are stored


PLANTED_KEY = "sk-resume-test-0123456789abcdef"
SWEEP = ["--model", "resnet18", "--weights", "none", "--top-k", "3", "--negatives", "1",
         "--probe-images", "50", "--no-progress", "--explainer", "openai", "--rpm", "6000",
         "--tpm", "1e9", "--no-unit-scores", "--concurrency", "1", "--ablation-draws", "1"]  # fmt: skip


@pytest.mark.slow
def test_a_killed_llm_sweep_resumes_without_paying_twice(ray_cluster, tmp_path, monkeypatch):
    import run_sweep
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer, Faults

    cache = tmp_path.parent / "resume-shared-cache"  # the rendered probe, shared by the three runs
    monkeypatch.setenv("COIN_SCALE_CACHE", str(cache))
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    address = ray_cluster.get_runtime_context().gcs_address
    slow = Faults(latency_s=0.15)  # a unit takes about a second: the kill lands between units

    with FakeProviderServer("openai", ExperimenterPolicy(), faults=slow) as server:
        ref_wh = tmp_path / "reference"
        argv = [*SWEEP, "--warehouse", str(ref_wh), "--run-id", "ref", "--base-url", server.base_url]
        assert run_sweep.main(argv) == 0
        want = len({r.view for r in server.log})
        assert want == len(server.log) > 0

    wh = tmp_path / "wh"
    with FakeProviderServer("openai", ExperimenterPolicy(), faults=slow) as server:
        argv = [sys.executable, "run_sweep.py", *SWEEP, "--warehouse", str(wh), "--run-id", "R",
                "--base-url", server.base_url, "--address", address]  # fmt: skip
        root = wh / "_checkpoints" / "explain" / "R"
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).parent.parent)  # fmt: skip
        _kill_when(first, root, lambda: any(root.glob("agents-*/unit-*.json")))
        paid_before = len(server.log)
        assert 0 < paid_before < want

        second = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                                cwd=Path(__file__).parent.parent)  # fmt: skip
        assert second.returncode == 0, second.stderr[-3000:]
        found = re.search(r"resuming run R: (\d+)/4 units already explained", second.stderr)
        assert found, second.stderr[-3000:]
        done = int(found.group(1))
        assert 0 < done < 4
        distinct = len({r.view for r in server.log})
        total = len(server.log)
    print(f"resumed sweep: {done}/4 units already explained; requests {paid_before} before the "
          f"kill, {total} in all, {distinct} distinct (uninterrupted: {want})")
    assert distinct == want  # no prompt paid twice: a finished unit was never re-sent
    # A request in flight at the kill may be answered twice (the reply never reached the cache).
    assert total - distinct <= 1

    assert _rows(wh, "SELECT count(*), count(DISTINCT unit), count(*) FILTER (WHERE status='ok') "
                     "FROM explanations WHERE run_id='R'") == [(4, 4, 4)]  # fmt: skip
    ref_rows = "SELECT unit, status, label, description, score FROM explanations ORDER BY unit"
    assert _rows(wh, ref_rows) == _rows(ref_wh, ref_rows)
    steps = "SELECT unit, round, step, tool, status FROM experiments ORDER BY unit, round, step"
    assert _rows(wh, steps) == _rows(ref_wh, steps)
    assert _rows(wh, "SELECT count(*) FROM llm_calls WHERE run_id='R'") == [(want,)]
    assert not root.exists()
