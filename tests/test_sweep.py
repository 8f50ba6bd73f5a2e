"""run_sweep.py as a researcher runs it: prediction, driving units, and their exemplars."""

from __future__ import annotations

import pytest
from PIL import Image

import run_sweep


def _target(tmp_path):
    image = tmp_path / "target.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(image)
    return image


@pytest.mark.slow
def test_run_sweep_prints_the_prediction_and_driving_units(tmp_path, capsys):

    image = _target(tmp_path)
    code = run_sweep.main(["--image", str(image), "--model", "resnet18", "--weights", "none", "--top-k", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "random weights" in out and "predicted:" in out
    assert out.count("+ unit") == 3 and "sum to" in out


def test_run_sweep_bad_image(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert run_sweep.main(["--image", str(bad), "--model", "resnet18", "--weights", "none"]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert run_sweep.main(["--image", str(tmp_path / "missing.jpg"), "--model", "resnet18"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_run_sweep_with_a_probe_shows_each_units_exemplars(ray_cluster, probe_dir, tmp_path, capsys):
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--top-k", "2", "--negatives", "1", "--exemplars", "3", "--probe", str(probe_dir),
            "--warehouse", str(tmp_path / "wh")]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    exemplar_lines = [line for line in out.splitlines() if str(probe_dir) in line]
    assert len(exemplar_lines) == 3 * 3  # 2 positive + 1 negative units, 3 exemplars each


def test_run_sweep_config_file(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(f"image: {_target(tmp_path)}\nmodel: resnet18\nweights: none\ntop_k: 2\n")
    assert run_sweep.main(["--config", str(config)]) == 0
    assert capsys.readouterr().out.count("+ unit") == 2
