"""The researcher's story: dissect a layer from the CLI on a local Ray cluster, then query it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from coin_scale.cli import main
from coin_scale.dissect.config import DissectConfig
from coin_scale.models import ModelSource, build_module, resolve_model
from coin_scale.models.activations import ActivationCapture, decode_batch
from coin_scale.probe import scan_probe
from coin_scale.runtime.dissect import run_dissection
from coin_scale.storage import connect

pytestmark = pytest.mark.slow

ARGS = ["--model", "resnet18", "--weights", "none", "--layer", "layer4", "--top-k", "5",
        "--batch-size", "8", "--no-progress"]  # fmt: skip


def reference_top5(probe_dir):
    """Direct computation without Ray: max-pooled layer4 activations of every readable image."""
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    capture = ActivationCapture(build_module(payload), {"layer4": "nchw"}, ("max",))
    probe = scan_probe(probe_dir)
    batch = decode_batch([(im.index, im.path) for im in probe.images], payload.preprocess)
    with torch.inference_mode():
        acts = capture(payload.preprocess.normalize(batch.pixels))["layer4"]["max"]
    values, order = torch.sort(acts.T, dim=1, descending=True, stable=True)
    return values[:, :5], torch.tensor(batch.indices)[order[:, :5]], acts


def exemplar_tensors(warehouse):
    con = connect(warehouse)
    rows = con.sql("SELECT unit, rank, image_index, activation FROM exemplars ORDER BY unit, rank").fetchall()
    values = torch.tensor([r[3] for r in rows]).view(512, 5)
    indices = torch.tensor([r[2] for r in rows]).view(512, 5)
    return values, indices


def test_dissect_end_to_end_then_query(ray_cluster, probe_dir, tmp_path, capsys):
    warehouse = str(tmp_path / "wh")
    assert main(["dissect", *ARGS, "--probe", str(probe_dir), "--warehouse", warehouse]) == 0
    out = capsys.readouterr().out
    assert "dissected 512 units of resnet18/layer4 over 37 images (1 unreadable)" in out

    con = connect(warehouse)
    assert con.sql("SELECT count(*) FROM unit_stats").fetchall()[0][0] == 512
    assert con.sql("SELECT count(*), count(DISTINCT unit) FROM exemplars").fetchall()[0] == (2560, 512)
    status = dict(con.sql("SELECT status, count(*) FROM probe_images GROUP BY status").fetchall())
    assert status == {"ok": 36, "unreadable": 1}
    assert con.sql("SELECT status FROM runs").fetchall() == [("complete",)]

    want_values, want_indices, acts = reference_top5(probe_dir)
    got_values, got_indices = exemplar_tensors(warehouse)
    torch.testing.assert_close(got_values, want_values, rtol=1e-4, atol=1e-5)
    assert torch.equal(got_indices, want_indices)
    stats = con.sql("SELECT mean, max, threshold FROM unit_stats ORDER BY unit").fetchall()
    means = torch.tensor([s[0] for s in stats], dtype=torch.float64)
    torch.testing.assert_close(means, acts.double().mean(0), rtol=1e-4, atol=1e-5)
    q99 = torch.quantile(acts.double(), 0.99, dim=0)
    torch.testing.assert_close(torch.tensor([s[2] for s in stats], dtype=torch.float64), q99, rtol=1e-4, atol=1e-5)

    assert main(["query", "--warehouse", warehouse, "--format", "csv",
                 "SELECT unit, max FROM unit_stats ORDER BY max DESC LIMIT 3"]) == 0  # fmt: skip
    assert len(capsys.readouterr().out.strip().splitlines()) == 4

    # The same model, weights, layer and probe content: reused, and it says so.
    assert main(["dissect", *ARGS, "--probe", str(probe_dir), "--warehouse", warehouse]) == 0
    assert "reused cached dissection" in capsys.readouterr().out
    assert con.sql("SELECT count(*) FROM exemplars").fetchall()[0][0] == 2560


def test_killed_replica_is_replaced_and_the_result_is_exact(ray_cluster, probe_dir, tmp_path):
    import psutil

    killed = []

    def kill_once(done: int) -> None:
        """After the first batch, SIGKILL the replica's worker process (Ray names it ray::ModelReplica)."""
        if done == 1 and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if any("ModelReplica" in part for part in proc.info["cmdline"] or []):
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])

    config = DissectConfig(model="resnet18", weights="none", layer="layer4", probe=str(probe_dir),
                           warehouse=str(tmp_path / "wh"), top_k=5, batch_size=4, replicas=1)  # fmt: skip
    result = run_dissection(config, progress=False, on_batch=kill_once)
    assert killed and result.n_images == 37 and result.n_failed == 1
    want_values, want_indices, _ = reference_top5(probe_dir)
    got_values, got_indices = exemplar_tensors(config.warehouse)
    torch.testing.assert_close(got_values, want_values, rtol=1e-4, atol=1e-5)
    assert torch.equal(got_indices, want_indices)
    con = connect(config.warehouse)
    assert con.sql("SELECT count(*), count(DISTINCT (unit, rank)) FROM exemplars").fetchall()[0] == (2560, 2560)
    assert con.sql("SELECT count(*) FROM unit_stats").fetchall()[0][0] == 512


def test_layers_command_from_the_shell():
    exe = os.path.join(os.path.dirname(sys.executable), "coin-scale")
    proc = subprocess.run([exe, "layers", "--model", "resnet18", "--weights", "none"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert any(line.split()[:2] == ["layer4", "512"] for line in proc.stdout.splitlines())
    assert "RANDOM weights" in proc.stderr


def test_dense_activations_are_kept_for_explainers(ray_cluster, probe_dir, tmp_path):
    from coin_scale.dissect.pipeline import load_activations
    from coin_scale.storage import Warehouse

    config = DissectConfig(model="resnet18", weights="none", layer="layer4", probe=str(probe_dir),
                           warehouse=str(tmp_path / "wh"), top_k=5, keep_activations=True)  # fmt: skip
    result = run_dissection(config, progress=False)
    dense = load_activations(Warehouse(config.warehouse), result.dissection_id)
    _, _, acts = reference_top5(probe_dir)
    probe = scan_probe(probe_dir)
    readable = [im.index for im in probe.images if not im.path.endswith("corrupt.jpg")]
    assert dense.shape == (37, 512) and dense.dtype == "float32"
    assert torch.isnan(torch.from_numpy(dense[[i for i in range(37) if i not in readable]])).all()
    torch.testing.assert_close(torch.from_numpy(dense[readable]), acts, rtol=1e-4, atol=1e-4)
    again = run_dissection(config, progress=False)  # activations present: the cache is used
    assert again.cached


def _loud_resnet18(tmp_path, scale: float) -> str:
    """resnet18 (random weights, seed 0) with layer4's last batch norm scaled by `scale`, saved as
    a state dict: its units fire far above float16's 65,504."""
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    module = build_module(payload)
    with torch.no_grad():
        module.layer4[-1].bn2.weight.mul_(scale)
        module.layer4[-1].bn2.bias.mul_(scale)
    path = tmp_path / f"loud-{scale:g}.pt"
    torch.save(module.state_dict(), path)
    return str(path)


def test_activations_beyond_float16_survive_to_the_explainer(ray_cluster, probe_dir, tmp_path, capsys):
    """Units firing at ~1e6 (beyond float16) keep their values in the dense matrix, and the whole
    layer is explained from them: no overflow warning, no non-finite value, no traceback."""
    import warnings

    from coin_scale.dissect.pipeline import load_activations
    from coin_scale.storage import Warehouse

    weights = _loud_resnet18(tmp_path, 1e5)
    wh = str(tmp_path / "wh")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "overflow encountered in cast" fails
        assert main(["dissect", "--model", "resnet18", "--weights", weights, "--layer", "layer4",
                     "--probe", str(probe_dir), "--warehouse", wh, "--top-k", "3",
                     "--batch-size", "8", "--no-progress", "--run-id", "loud",
                     "--explainer", "offline", "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["units"] == 512 and summary["explained"] + summary["unexplained"] == 512
    dense = load_activations(Warehouse(wh), summary["dissection_id"])
    readable = dense[~np.isnan(dense).all(axis=1)]
    assert np.isfinite(readable).all() and float(readable.max()) > 65504 * 10


def test_a_layer_that_overflows_is_one_line_not_a_traceback(ray_cluster, probe_dir, tmp_path, capsys):
    """A model whose layer itself overflows (inf in float32) stops the explainer with one line."""
    weights = _loud_resnet18(tmp_path, 1e38)
    code = main(["dissect", "--model", "resnet18", "--weights", weights, "--layer", "layer4",
                 "--probe", str(probe_dir), "--warehouse", str(tmp_path / "wh"),
                 "--batch-size", "8", "--no-progress", "--explainer", "offline"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "layer layer4 gave" in err and "non-finite activations" in err
    assert "Traceback" not in err


def test_dissect_explain_explains_every_unit_of_the_layer(ray_cluster, probe_dir, tmp_path, capsys):
    warehouse = str(tmp_path / "wh")
    argv = ["dissect", *ARGS, "--probe", str(probe_dir), "--warehouse", warehouse,
            "--run-id", "whole", "--explain", "offline"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dissected 512 units" in out and "explained every unit offline" in out
    assert "random weights (--weights none): these labels describe noise" in out
    con = connect(warehouse)
    rows = con.sql(
        "SELECT count(*), count(DISTINCT unit), min(explainer), max(dissection_id) IS NOT NULL "
        "FROM explanations WHERE run_id = 'whole'"
    ).fetchall()[0]
    assert rows == (512, 512, "offline", True)
    labels = con.sql(
        "SELECT DISTINCT formula FROM explanations WHERE run_id='whole' AND status='ok'"
    ).fetchall()
    assert labels and all("label=" in f for (f,) in labels)  # folder labels are the concepts
    # A rerun replaces the run's rows instead of adding to them.
    assert main(argv) == 0
    assert con.sql("SELECT count(*) FROM explanations WHERE run_id='whole'").fetchall()[0][0] == 512


def test_dissect_select_explains_only_the_units_chosen(ray_cluster, probe_dir, tmp_path, capsys):
    warehouse = str(tmp_path / "wh")
    argv = ["dissect", *ARGS, "--probe", str(probe_dir), "--warehouse", warehouse,
            "--run-id", "chosen", "--explainer", "offline", "--select", "layer4=40,3-4"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dissected 512 units" in out and "explained the 3 units chosen offline" in out
    rows = connect(warehouse).sql(
        "SELECT unit FROM explanations WHERE run_id = 'chosen' ORDER BY unit"
    ).fetchall()
    assert rows == [(3,), (4,), (40,)]


@pytest.mark.parametrize(
    ("select", "extra", "message"),
    [
        ("layer4=512", ["--explainer", "offline"], "unit 512 of layer4 is out of range: it has 512 units"),
        ("layer3=1", ["--explainer", "offline"], "must name the dissected layer only (--layer layer4)"),
        ("layer4=a", ["--explainer", "offline"], "'a' is not a unit index"),
        ("layer4=1", [], "--select chooses the units to explain: add --explainer"),
    ],
)
def test_a_bad_select_is_one_line_before_any_work(probe_dir, tmp_path, capsys, select, extra, message):
    warehouse = tmp_path / "wh"
    argv = ["dissect", *ARGS, "--probe", str(probe_dir), "--warehouse", str(warehouse),
            "--select", select, *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (warehouse / "runs").exists() and not (warehouse / "dissections").exists()


def test_dry_run_prints_the_work_and_writes_nothing(probe_dir, tmp_path, capsys):
    warehouse = tmp_path / "wh"
    argv = ["dissect", *ARGS, "--probe", str(probe_dir), "--warehouse", str(warehouse),
            "--explain", "offline", "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    # 37 files: 36 images and the corrupt one, which the plan counts until it fails to decode.
    assert "dissect 512 units of resnet18/layer4 over 37 probe images: 5 batches of 8" in out
    assert "img/s in this process" in out and "0 LLM calls" in out and "dry run" in out
    assert not warehouse.exists()


@pytest.mark.slow
def test_dissect_explain_with_llm_agents_explains_every_unit(ray_cluster, probe_dir, tmp_path, capsys, monkeypatch):
    """`dissect --explain openai`: an agent per unit of the layer through the real SDK and a fake
    server; one row per unit, the agents' steps and requests stored, the dry run priced first."""
    from coin_scale.testing.agent_policies import ExperimenterPolicy
    from coin_scale.testing.fakeserver import FakeProviderServer

    key = "sk-planted-dissect-7731"
    warehouse = str(tmp_path / "wh")
    argv = ["dissect", "--model", "mobilenet_v3_small", "--weights", "none", "--layer",
            "features.0", "--batch-size", "8", "--no-progress", "--probe", str(probe_dir),
            "--warehouse", warehouse, "--run-id", "agents", "--explain", "openai",
            "--rpm", "60000", "--tpm", "1e12"]  # fmt: skip
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(argv) == 2  # no key: stops before any work
    assert "OPENAI_API_KEY" in capsys.readouterr().err and not (tmp_path / "wh").exists()
    assert main([*argv, "--dry-run"]) == 0  # the plan needs no key
    plan = capsys.readouterr().out
    assert "every one of the 16 units by an LLM agent" in plan and "$" in plan
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeProviderServer("openai", ExperimenterPolicy(), api_key=key) as server:
        assert main([*argv, "--base-url", server.base_url]) == 0
        requests = len(server.log)
    out = capsys.readouterr().out
    assert "explained every unit with openai agents: 16 ok" in out and "RANDOM" not in out
    assert "random weights (--weights none)" in out
    con = connect(warehouse)
    rows = con.sql("SELECT count(*), count(DISTINCT unit), min(status), min(explainer), "
                   "count(label) FROM explanations WHERE run_id = 'agents'").fetchall()[0]  # fmt: skip
    assert rows == (16, 16, "ok", "openai", 16)
    calls = con.sql("SELECT count(*) FROM llm_calls WHERE run_id = 'agents'").fetchall()[0][0]
    steps = con.sql("SELECT count(DISTINCT unit) FROM experiments WHERE run_id = 'agents'").fetchall()
    assert calls == requests >= 16 * 2 and steps[0][0] == 16
    assert not any(key.encode() in p.read_bytes() for p in (tmp_path / "wh").rglob("*") if p.is_file())
