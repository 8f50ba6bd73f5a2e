"""`coin-scale dissect --units sae`: an SAE's latents dissected like neurons, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coin_scale.cli import main
from coin_scale.models import ModelSource, build_module, resolve_model
from coin_scale.models.activations import decode_batch
from coin_scale.probe import scan_probe
from coin_scale.sae import (
    SAEConfig,
    SparseAutoencoder,
    conv_from_tokens,
    load_sae,
    save_sae,
    tokens_from_conv,
)
from coin_scale.storage import connect

BASE = ["dissect", "--model", "resnet18", "--weights", "none", "--top-k", "4", "--batch-size",
        "16", "--no-progress"]  # fmt: skip


def write_sae(path: Path, layer: str, d_in: int, *, seed: int = 0) -> Path:
    """A randomly initialised TopK SAE (expansion 2, k 8) saved as a checkpoint for `layer`."""
    model_id = resolve_model(ModelSource(model="resnet18", weights="none")).model_id
    config = SAEConfig(model=model_id, layer=layer, d_in=d_in, expansion=2, k=8)
    sae = SparseAutoencoder(d_in, config.d_sae, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    save_sae(path, sae, config, {})
    return path


def reference_max_codes(probe_dir: Path, sae_path: Path) -> torch.Tensor:
    """Direct, without Ray: max over space of the SAE codes of layer3, (image, latent)."""
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    module = build_module(payload).eval()
    sae = load_sae(sae_path)[0]
    probe = scan_probe(probe_dir)
    batch = decode_batch([(im.index, im.path) for im in probe.images], payload.preprocess)
    captured: list[torch.Tensor] = []
    handle = module.layer3.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.inference_mode():
            module(payload.preprocess.normalize(batch.pixels))
            maps = captured[0]
            b, _, h, w = maps.shape
            codes = conv_from_tokens(sae.encode(tokens_from_conv(maps))[0], b, h, w)
    finally:
        handle.remove()
    return codes.amax(dim=(2, 3))


@pytest.mark.slow
def test_sae_latents_are_dissected_like_neurons(ray_cluster, probe_dir, tmp_path, capsys):
    sae_path = write_sae(tmp_path / "layer3.safetensors", "layer3", 256)
    warehouse = str(tmp_path / "wh")

    def args(sae: Path) -> list[str]:
        return [*BASE, "--layer", "layer3", "--units", "sae", "--sae", str(sae),
                "--probe", str(probe_dir), "--warehouse", warehouse]  # fmt: skip

    assert main(args(sae_path)) == 0
    out, err = capsys.readouterr()
    assert "dissected 512 SAE latents of resnet18/layer3 over 37 images (1 unreadable)" in out, err

    con = connect(warehouse)
    kinds = con.sql("SELECT kind, count(*), count(DISTINCT unit) FROM unit_stats GROUP BY kind")
    assert kinds.fetchall() == [("sae", 512, 512)]
    assert con.sql("SELECT DISTINCT kind FROM exemplars").fetchall() == [("sae",)]
    assert con.sql("SELECT unit_kind, n_units FROM dissections").fetchall() == [("sae", 512)]

    want = reference_max_codes(probe_dir, sae_path).double()
    got = con.sql("SELECT max FROM unit_stats ORDER BY unit").fetchall()
    torch.testing.assert_close(
        torch.tensor([g[0] for g in got], dtype=torch.float64), want.amax(0), rtol=1e-3, atol=1e-4
    )
    feature = int(want.amax(0).argmax())
    top = con.sql(f"SELECT activation FROM exemplars WHERE unit = {feature} AND rank = 0")
    assert top.fetchall()[0][0] == pytest.approx(float(want[:, feature].max()), rel=1e-3)
    assert float(want.amax(0).max()) > 0

    # The same layer with another SAE is another dissection; the same SAE again is reused.
    assert main(args(sae_path)) == 0
    assert "reused cached dissection" in capsys.readouterr().out
    other = write_sae(tmp_path / "other.safetensors", "layer3", 256, seed=5)
    assert main(args(other)) == 0
    assert "reused" not in capsys.readouterr().out
    assert con.sql("SELECT count(*) FROM dissections").fetchall()[0][0] == 2


def test_bad_sae_input_is_one_line_and_writes_nothing(probe_dir, tmp_path, capsys):
    layer2 = write_sae(tmp_path / "layer2.safetensors", "layer2", 128)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    layer3 = ["--layer", "layer3"]
    cases = [
        ([*layer3, "--units", "sae"], "--units sae needs --sae PATH"),
        ([*layer3, "--sae", str(layer2)], "is only used with --units sae"),
        ([*layer3, "--units", "sae", "--sae", str(layer2)], "was trained on resnet18 layer2"),
        ([*layer3, "--units", "sae", "--sae", str(corrupt)], "is not an SAE checkpoint"),
        ([*layer3, "--units", "sae", "--sae", str(tmp_path / "missing")], "no SAE checkpoint"),
        (["--layer", "fc", "--units", "sae", "--sae", str(layer2)], "need a conv layer's"),
    ]
    warehouse = tmp_path / "wh"
    for extra, message in cases:
        code = main([*BASE, *extra, "--probe", str(probe_dir), "--warehouse", str(warehouse)])
        stderr = capsys.readouterr().err
        lines = [line for line in stderr.splitlines() if "error" in line]
        assert code == 2, (extra, stderr)
        assert len(lines) == 1 and message in lines[0], (extra, stderr)
        assert lines[0].startswith("coin-scale dissect: error: ")
        assert "Traceback" not in stderr
    written = [p for p in warehouse.rglob("*") if p.is_file()] if warehouse.exists() else []
    assert written == []


@pytest.mark.slow
def test_clip_explains_sae_features_over_a_photo_folder(ray_cluster, probe_dir, tiny_clip, tmp_path, monkeypatch, capsys):
    """The image-text explainer reads SAE features as it reads neurons: each chosen feature
    gets a word of the vocabulary (the images embedded on image-text replicas)."""
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path / "cache"))
    sae_path = write_sae(tmp_path / "layer3.safetensors", "layer3", 256)
    words = tmp_path / "words.txt"
    words.write_text("tabby cat\ngrass\nbrick wall\nsky\n")
    warehouse = str(tmp_path / "wh")
    argv = [*BASE, "--layer", "layer3", "--units", "sae", "--sae", str(sae_path), "--probe",
            str(probe_dir), "--warehouse", warehouse, "--run-id", "saeclip", "--explainer", "clip",
            "--clip-model", tiny_clip, "--clip-weights", "none", "--concepts", str(words),
            "--select", "layer3=0-5", "--held-out", "0"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "random image-text weights" in out, err
    rows = connect(warehouse).sql(
        "SELECT unit, kind, explainer, label, status FROM explanations WHERE run_id = 'saeclip' "
        "ORDER BY unit"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(6))
    assert {(r[1], r[2]) for r in rows} == {("sae", "clip")}
    ok = [r for r in rows if r[4] == "ok"]
    assert ok and {r[3] for r in ok} <= {"tabby cat", "grass", "brick wall", "sky"}
