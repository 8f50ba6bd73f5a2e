"""`coin-scale train-sae` end to end on a local Ray cluster, and its one-line errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from coin_scale.cli import main
from coin_scale.sae import load_sae

BASE = ["train-sae", "--model", "resnet18", "--weights", "none", "--expansion", "2", "--k", "8",
        "--steps", "60", "--batch-tokens", "512", "--log-every", "20", "--batch-size", "16",
        "--replacement-images", "16", "--no-progress"]  # fmt: skip


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_train_sae_end_to_end_then_reuses_the_cache(
    ray_cluster, probe_dir, tmp_path, capsys, caplog
):
    out = tmp_path / "saes" / "layer3.safetensors"
    cache = tmp_path / "cache"
    args = [*BASE, "--layer", "layer3", "--probe", str(probe_dir), "--out", str(out),
            "--cache", str(cache)]  # fmt: skip
    caplog.set_level(logging.INFO, logger="coin_scale")
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "step 40/60  fvu" in caplog.text  # a metrics line every --log-every steps
    assert "activation cache filled" in stdout and "36 images, 1 unreadable" in stdout
    assert f"checkpoint: {out}" in stdout
    final = next(line for line in stdout.splitlines() if line.startswith("final:"))
    assert "fvu" in final and "l0 8.0" in final and "top1_agreement" in final and "kl" in final

    sae, config, metrics = load_sae(out, expect_model="resnet18", expect_layer="layer3")
    assert (config.d_in, config.d_sae, config.k, config.kind) == (256, 512, 8, "topk")
    assert config.probe_id and metrics["steps_done"] == 60
    for key in ("fvu", "l0", "dead_fraction", "top1_agreement", "kl"):
        assert key in metrics
    assert 0 < metrics["fvu"] < 1.5 and metrics["l0"] == pytest.approx(8.0)
    assert metrics["dead_fraction"] is None  # 60 x 512 tokens: shorter than the dead window
    assert 0 <= metrics["top1_agreement"] <= 1 and metrics["kl"] >= 0
    assert metrics["replacement_images"] in (15, 16)  # 16 evenly spaced; the corrupt one skipped

    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["tokens"] == 36 * 14 * 14  # readable images x H x W of layer3 at 224 px
    assert (manifest["model"], manifest["layer"], manifest["d_in"]) == ("resnet18", "layer3", 256)

    # Same model, layer and probe: the cache is reused (no Ray pass) and the log says so.
    again = tmp_path / "again.safetensors"
    code, stdout, stderr = run_cli([*args[:-4], "--out", str(again), "--cache", str(cache),
                                    "--kind", "batchtopk"], capsys)  # fmt: skip
    assert code == 0, stderr
    assert "activation cache reused" in stdout and "reusing the activation cache" in caplog.text
    assert load_sae(again)[1].kind == "batchtopk"


@pytest.mark.slow
def test_default_cache_lives_under_the_warehouse(ray_cluster, probe_dir, tmp_path, capsys):
    out = tmp_path / "sae.safetensors"
    args = [*BASE, "--layer", "layer4", "--steps", "5", "--probe", str(probe_dir),
            "--out", str(out), "--warehouse", str(tmp_path / "wh")]  # fmt: skip
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 0, stderr
    (cache,) = (tmp_path / "wh" / "_cache" / "sae").iterdir()
    assert cache.name.startswith("resnet18-layer4-") and str(cache) in stdout
    assert json.loads((cache / "manifest.json").read_text())["tokens"] == 36 * 7 * 7


@pytest.mark.slow
def test_a_probe_with_no_readable_image_is_refused(ray_cluster, tmp_path, capsys):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "sae.safetensors"
    args = [*BASE, "--layer", "layer3", "--probe", str(probe), "--out", str(out),
            "--cache", str(tmp_path / "cache")]  # fmt: skip
    code, _, stderr = run_cli(args, capsys)
    assert code == 2 and "none of the 1 images" in stderr and "empty" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not (tmp_path / "cache" / "manifest.json").exists()


def bad_input_cases(tmp_path: Path, probe_dir: Path) -> list[tuple[list[str], int, str]]:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    (tmp_path / "empty").mkdir()
    empty_cache = tmp_path / "empty-cache"
    empty_cache.mkdir()
    (empty_cache / "manifest.json").write_text(json.dumps(
        {"format": "coin-scale-activation-cache", "version": 1, "d_in": 256, "tokens": 0,
         "shards": []}))  # fmt: skip
    probe = ["--probe", str(probe_dir)]
    return [
        (["--layer", "layer9", *probe], 2, "no dissectable layer 'layer9'; close matches: layer4"),
        (["--layer", "fc", *probe], 2, "SAEs here need a conv layer's"),
        (["--layer", "layer3", "--k", "4096", *probe], 2, "--k 4096 is larger than the dictionary"),
        (["--layer", "layer3", "--probe", str(tmp_path / "empty")], 2, "holds no images"),
        (["--layer", "layer3", *probe, "--cache", str(empty_cache)], 2, "holds no tokens"),
        (["--layer", "layer3", *probe, "--out", str(blocker / "sae.safetensors")], 3,
         "is not a directory"),
    ]  # fmt: skip


def test_bad_input_is_one_line_and_leaves_nothing(probe_dir, tmp_path, capsys):
    for extra, exit_code, message in bad_input_cases(tmp_path, probe_dir):
        out = tmp_path / "out" / "sae.safetensors"
        args = [*BASE, "--out", str(out), "--warehouse", str(tmp_path / "wh"), *extra]
        code, _, stderr = run_cli(args, capsys)
        lines = [line for line in stderr.splitlines() if "error" in line]
        assert code == exit_code, (extra, stderr)
        assert len(lines) == 1 and message in lines[0], (extra, stderr)
        assert lines[0].startswith("coin-scale train-sae: error: ")
        assert "Traceback" not in stderr
        assert not out.exists() and not (tmp_path / "out").exists(), extra
    assert not (tmp_path / "wh" / "_cache" / "sae").exists()


def test_replica_core_returns_whole_fp16_maps_and_skips_unreadable(probe_dir):
    """`run_maps` without Ray: the layer's exact output, float16, NCHW; decode failures listed."""
    import numpy as np
    import torch

    from coin_scale.models import ModelSource, build_module, resolve_model
    from coin_scale.models.activations import decode_batch
    from coin_scale.models.replica_core import ReplicaCore
    from coin_scale.probe import scan_probe

    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    core = ReplicaCore(payload, {"layer3": "nchw"}, ["max"], device="cpu")
    images = scan_probe(probe_dir).images
    corrupt = next(im for im in images if im.path.endswith("corrupt.jpg"))
    items = [(im.index, im.path) for im in images if im is not corrupt][:3]
    items.append((corrupt.index, corrupt.path))
    result = core.run_maps(7, items, "layer3")
    assert result.batch_id == 7 and [i for i, _ in result.failures] == [corrupt.index]
    assert result.maps.dtype == np.float16 and result.maps.shape == (3, 256, 14, 14)
    assert result.maps.flags["C_CONTIGUOUS"]

    module, seen = build_module(payload), []
    handle = module.layer3.register_forward_hook(lambda _m, _i, out: seen.append(out))
    decoded = decode_batch(items[:3], payload.preprocess)
    with torch.inference_mode():
        module(payload.preprocess.normalize(decoded.pixels))
    handle.remove()
    want = seen[0].to(torch.float16)
    torch.testing.assert_close(torch.from_numpy(result.maps), want, rtol=2e-3, atol=2e-3)
