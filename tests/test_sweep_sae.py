"""run_sweep.py --units sae: the prediction explained by SAE features of the last block, each with
its exact contribution through the decoder and the reconstruction error as its own term."""

from __future__ import annotations

import pytest
import torch

import run_sweep
from coin_scale.chain.sae_attribution import sae_contributions
from coin_scale.models import ModelSource, build_module, resolve_model
from coin_scale.sae import load_sae
from coin_scale.storage import connect
from coin_scale.testing.agent_policies import ExperimenterPolicy
from coin_scale.testing.fakeserver import FakeProviderServer
from tests.test_dissect_sae import write_sae

BASE = ["--model", "resnet18", "--weights", "none", "--top-k", "3", "--negatives", "1",
        "--probe-images", "60", "--no-progress"]  # fmt: skip


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path.parent / "shared-cache"))


@pytest.mark.slow
def test_a_sweep_explains_the_prediction_with_sae_features(ray_cluster, tmp_path, cache, capsys):
    sae_path = write_sae(tmp_path / "layer4.safetensors", "layer4", 512)
    wh = tmp_path / "wh"
    argv = [*BASE, "--units", "sae", "--sae", str(sae_path), "--warehouse", str(wh), "--run-id", "s1",
            "--layers", "layer3,layer4", "--fanout", "2", "--ablation-draws", "4",
            "--visualize", "2"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "SAE features of layer4 driving logit" in out
    assert out.count("+ feature") == 3 and out.count("- feature") == 1
    assert "= reconstruction error:" in out and "= decoder bias:" in out
    assert "Units are the 1024 features of the SAE" in out and "Random weights" in out
    assert "faithfulness, layer4: zeroing the chain's top 3" in out
    assert "explanation scores on 256 held-out rendered images" in out

    con = connect(wh)
    # Every stored per-explanation score names the kind of unit it scored.
    scored = con.sql(
        "SELECT DISTINCT layer, kind FROM scores WHERE run_id='s1' AND test='predictive' ORDER BY 1"
    ).fetchall()
    assert set(scored) <= {("layer3", "neuron"), ("layer4", "sae")}
    units = con.sql(
        "SELECT unit, kind, contribution, method FROM units WHERE run_id='s1' ORDER BY sign DESC, rank"
    ).fetchall()
    assert {u[1] for u in units} == {"sae"} and {u[3] for u in units} == {"exact_sae_decoder"}
    assert max(u[0] for u in units) >= 0 and all(u[0] < 1024 for u in units)
    kinds = con.sql("SELECT DISTINCT layer, kind FROM explanations WHERE run_id='s1' ORDER BY 1")
    assert kinds.fetchall() == [("layer3", "neuron"), ("layer4", "sae")]
    # Feature visualizations of both layers, optimised and measured on the replicas: the SAE's
    # features through their decoder directions.
    drawn = con.sql(
        "SELECT DISTINCT layer, kind, steps FROM visualizations WHERE run_id='s1' ORDER BY 1"
    ).fetchall()
    assert drawn == [("layer3", "neuron", 2), ("layer4", "sae", 2)]
    edges = con.sql(
        "SELECT DISTINCT source_layer, source_kind, target_kind, method FROM chain_edges "
        "WHERE run_id='s1' ORDER BY 1"
    ).fetchall()
    assert edges == [("layer3", "neuron", "unit", "grad_x_activation"),
                     ("layer4", "sae", "class", "exact_sae_decoder")]  # fmt: skip
    # the chain walks down from the selected features: their drivers are layer3 channels
    targets = con.sql(
        "SELECT DISTINCT target FROM chain_edges WHERE run_id='s1' AND target_kind='unit'"
    ).fetchall()
    assert {t[0] for t in targets} <= {u[0] for u in units} and all(t[0] < 1024 for t in targets)
    row = con.sql(
        "SELECT unit_kind, image_path, logit, head_bias, sae_decoder_bias, sae_error, sae_sha256, "
        "text FROM class_explanations WHERE run_id='s1'"
    ).fetchall()[0]
    kind, image, logit, head_bias, decoder_bias, error, sha, text = row
    assert kind == "sae" and len(sha) == 64
    assert text.startswith("Predicted ") and "SAE features of layer4 #" in text
    assert "reconstruction error" in text
    stats = con.sql(
        "SELECT count(*) FROM unit_stats s JOIN dissections d USING (dissection_id) "
        "WHERE s.kind = 'sae' AND d.unit_kind = 'sae'"
    ).fetchall()[0][0]
    assert stats == 1024

    # The stored figures are the exact decomposition, recomputed here without Ray. The sweep ran
    # it on a model replica (channels-last memory, its own thread count), so float32 sums are
    # rounded in another order: equal to 1e-6 relative, not bit for bit.
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    module = build_module(payload).eval()
    pre = payload.preprocess
    from PIL import Image

    x = pre.normalize(pre.load(Image.open(image).convert("RGB")).unsqueeze(0))
    c = sae_contributions(module, "layer4", x, load_sae(sae_path)[0])
    terms = dict(c.terms)
    assert error == pytest.approx(terms["sae_error"], rel=1e-6, abs=1e-6)
    assert decoder_bias == pytest.approx(terms["sae_decoder_bias"], rel=1e-6, abs=1e-6)
    assert head_bias == pytest.approx(c.head_bias) and logit == pytest.approx(c.logit, rel=1e-6)
    torch.testing.assert_close(
        torch.tensor([u[2] for u in units], dtype=torch.float64),
        c.contributions[[u[0] for u in units]],
    )
    full = c.contributions.sum() + c.head_bias + terms["sae_error"] + terms["sae_decoder_bias"]
    assert float(full) == pytest.approx(logit, abs=1e-4)


@pytest.mark.slow
def test_llm_agents_experiment_on_sae_features(ray_cluster, tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-sae")
    sae_path = write_sae(tmp_path / "layer4.safetensors", "layer4", 512)
    wh = tmp_path / "wh"
    with FakeProviderServer("openai", ExperimenterPolicy(), api_key="sk-test-sae") as server:
        argv = [*BASE, "--top-k", "1", "--negatives", "0", "--units", "sae", "--sae",
                str(sae_path), "--warehouse", str(wh), "--run-id", "a1", "--explainer", "openai",
                "--rpm", "6000", "--tpm", "1e9", "--base-url", server.base_url]  # fmt: skip
        assert run_sweep.main(argv) == 0
        first_prompt = str(server.log[0])
    assert "sparse-autoencoder feature" in first_prompt
    con = connect(wh)
    steps = con.sql(
        "SELECT DISTINCT kind FROM experiments WHERE run_id='a1'"
    ).fetchall()
    assert steps == [("sae",)]
    label = con.sql("SELECT kind, status FROM explanations WHERE run_id='a1'").fetchall()
    assert label == [("sae", "ok")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--units", "sae"], "--units sae needs --sae PATH"),
        (["--sae", "x.safetensors"], "only used with --units sae"),
        (["--units", "sae", "--sae", "{wrong}"], "was trained on resnet18"),
        (["--units", "sae", "--sae", "{missing}"], "no SAE checkpoint at"),
        (["--units", "sae", "--sae", "{right}", "--top-k", "5000"], "more than the 1024 SAE features"),
    ],
)
def test_bad_sae_input_is_refused_before_any_work(tmp_path, capsys, extra, message):
    files = {
        "{wrong}": str(write_sae(tmp_path / "l3.safetensors", "layer3", 256)),
        "{right}": str(write_sae(tmp_path / "l4.safetensors", "layer4", 512)),
        "{missing}": str(tmp_path / "nope.safetensors"),
    }
    wh = tmp_path / "wh"
    argv = [*BASE, "--probe", "none", "--warehouse", str(wh)] + [files.get(a, a) for a in extra]
    assert run_sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not wh.exists() or not any(wh.rglob("*.parquet"))
