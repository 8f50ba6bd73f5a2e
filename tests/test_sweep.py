"""run_sweep.py as a researcher runs it: prediction, driving units, explanations, report, SQL."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

import run_sweep
from coin_scale.storage import connect
from coin_scale.sweep.records import UnitFinding
from coin_scale.sweep.text import class_paragraph


def _target(tmp_path):
    image = tmp_path / "target.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(image)
    return image


def _finding(unit, contribution, share, label=None, iou=None):
    return UnitFinding(layer="layer4", unit=unit, rank=0, contribution=contribution, share=share,
                       label=label, iou=iou)  # fmt: skip


def test_class_paragraph_reads_as_a_sentence():
    text = class_paragraph(
        class_name="star", probability=0.97, layer="layer4",
        positive=[_finding(12, 2.1, 0.35, "red star", 0.62), _finding(40, 1.2, 0.2, "star", 0.5)],
        negative=[_finding(7, -0.8, -0.13, "circle", 0.4)], exact=True,
    )  # fmt: skip
    assert text == (
        "Predicted star (p=0.97) because layer4 #12 'red star' (+2.10, 35% of the logit, IoU 0.62), "
        "#40 'star' (+1.20, 20% of the logit, IoU 0.50); held back by #7 'circle' (-0.80, -13% of "
        "the logit, IoU 0.40). In short: the model sees 'red star'; and 'star'."
    )


def test_class_paragraph_of_sae_features_reports_the_error_as_its_own_term():
    text = class_paragraph(
        class_name="star", probability=0.9, layer="layer4", exact=True, sae=True,
        positive=[_finding(301, 3.0, 0.5, "red star", 0.7)], negative=[],
        terms=(("sae_decoder_bias", 1.25), ("sae_error", -0.4)),
    )  # fmt: skip
    assert text == (
        "Predicted star (p=0.90) because SAE features of layer4 #301 'red star' (+3.00, 50% of "
        "the logit, IoU 0.70). In short: the model sees 'red star'. Not in any feature: the "
        "SAE's decoder bias +1.25 and its reconstruction error -0.40."
    )


def test_class_paragraph_without_labels_or_exactness():
    text = class_paragraph(class_name="x", probability=0.5, layer="features",
                           positive=[_finding(3, 0.5, 0.1)], negative=[], exact=False)  # fmt: skip
    assert text == (
        "Predicted x (p=0.50) because features #3 (unexplained) (+0.50, 10% of the logit). "
        "(Contributions are gradient x activation, an approximation.)"
    )


def test_run_sweep_without_a_probe_prints_the_prediction_and_driving_units(tmp_path, capsys):
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--top-k", "3", "--probe", "none", "--warehouse", str(tmp_path / "wh")]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "Random weights" in out and "predicted:" in out
    assert out.count("+ unit") == 3 and "sum to" in out and "report.html" in out
    assert "time: model and attribution" in out and "report and tables" in out  # phase times


@pytest.mark.slow
def test_run_sweep_end_to_end_on_a_rendered_probe(ray_cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path / "cache"))
    wh = tmp_path / "wh"
    argv = ["--model", "resnet18", "--weights", "none", "--top-k", "3", "--negatives", "2",
            "--probe-images", "60", "--warehouse", str(wh), "--run-id", "r1", "--no-progress",
            "--no-unit-scores"]  # scored in test_sweep_quality and test_sweep_sae  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "Predicted " in out and (wh / "reports" / "r1" / "report.html").is_file()
    con = connect(wh)
    assert con.sql("SELECT count(*) FROM units WHERE run_id = 'r1'").fetchall()[0][0] == 5
    rows = con.sql("SELECT status, score_name FROM explanations WHERE run_id = 'r1'").fetchall()
    assert len(rows) == 5 and {s for s, _ in rows} <= {"ok", "empty"}
    edges = con.sql("SELECT count(*), min(target_kind) FROM chain_edges WHERE run_id='r1'").fetchall()
    assert edges == [(5, "class")]
    text = con.sql("SELECT text FROM class_explanations WHERE run_id = 'r1'").fetchall()[0][0]
    assert text.startswith("Predicted ") and "Random weights" in text
    assert "forward passes of the model: " in out  # where they ran, in words
    assert "rendered images: 60 on the render pool, 0 in the driver" in out  # the probe set
    # The same run id again replaces its rows instead of duplicating them; --json says where
    # the model ran: the probe pass (cached now) and the exemplars' maps on the replicas.
    assert run_sweep.main([*argv, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    passes = again["forward_passes"]
    assert passes["replicas"]["passes"] >= 1 and passes["replicas"]["images"] >= 1
    assert again["rendered_images"] == {"render_pool": 0, "driver": 0}  # the probe set is cached
    assert con.sql("SELECT count(*) FROM units WHERE run_id = 'r1'").fetchall()[0][0] == 5


def test_run_sweep_select_explains_the_units_chosen_on_their_side_of_the_logit(tmp_path, capsys):
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--probe", "none", "--warehouse", str(tmp_path / "wh"), "--run-id", "s1",
            "--select", "layer4=7,300,41"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    shown = [line.split() for line in out.splitlines() if line.startswith(("  + unit", "  - unit"))]
    assert sorted(int(parts[2]) for parts in shown) == [7, 41, 300]
    for sign, _, _, value, *_ in shown:  # each unit on the side its contribution puts it
        assert (float(value) >= 0) == (sign == "+")
    rows = connect(tmp_path / "wh").sql("SELECT unit FROM units WHERE run_id = 's1'").fetchall()
    assert sorted(u for (u,) in rows) == [7, 41, 300]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--select", "layer4=512"], "--select: unit 512 of layer4 is out of range"),
        (["--select", "layer3=1", "--layer", "layer4"], "must name the explained layer (layer4)"),
        (["--select", "layer4=1;layer3=2"], "must name one layer"),
        (["--select", "layer4=x"], "--select: 'layer4=x': 'x' is not a unit index"),
        (["--top-k", "0"], "top_k must be >= 1"),
        (["--top-k", "100000"], "more than the 512 units"),
        (["--explainer", "oracle"], "unknown explainer 'oracle'"),
        (["--layer", "layer9"], "close matches"),
    ],
)
def test_run_sweep_bad_flags(tmp_path, capsys, extra, message):
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--probe", "none", "--warehouse", str(tmp_path / "wh"), *extra]  # fmt: skip
    assert run_sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_run_sweep_bad_images(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    base = ["--model", "resnet18", "--weights", "none", "--probe", "none", "--warehouse", str(tmp_path)]
    assert run_sweep.main(["--image", str(bad), *base]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert run_sweep.main(["--image", str(tmp_path / "missing.jpg"), *base]) == 2
    assert "does not exist" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert run_sweep.main(["--image", str(text), *base]) == 2


def test_a_huge_image_is_resized_not_a_crash(tmp_path, capsys):
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 4500), (10, 200, 30)).save(huge, quality=70)
    argv = ["--image", str(huge), "--model", "resnet18", "--weights", "none", "--probe", "none",
            "--warehouse", str(tmp_path / "wh"), "--top-k", "2"]  # fmt: skip
    assert run_sweep.main(argv) == 0


def test_run_sweep_config_file(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"image: {_target(tmp_path)}\nmodel: resnet18\nweights: none\ntop_k: 2\nprobe: none\n"
        f"warehouse: {tmp_path / 'wh'}\n"
    )
    assert run_sweep.main(["--config", str(config)]) == 0
    assert capsys.readouterr().out.count("+ unit") == 2


def test_a_layer_without_exact_attribution_falls_back_and_says_so(tmp_path, capsys):
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--layer", "layer3", "--top-k", "2", "--probe", "none", "--warehouse", str(tmp_path / "wh")]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "no exact attribution" in out and "gradient x activation" in out


@pytest.mark.slow
def test_run_sweep_visualizes_every_explained_unit_in_the_report(ray_cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path / "cache"))
    wh = tmp_path / "wh"
    argv = ["--model", "resnet18", "--weights", "none", "--top-k", "2", "--negatives", "1",
            "--probe-images", "60", "--warehouse", str(wh), "--run-id", "v1", "--no-progress",
            "--no-unit-scores", "--visualize", "2"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "visualizations" in out  # its own phase in the timing line
    rows = connect(wh).sql(
        "SELECT layer, unit, steps, kind, image_path FROM visualizations WHERE run_id = 'v1'"
    ).fetchall()
    assert len(rows) == 3 and {r[2] for r in rows} == {2} and {r[3] for r in rows} == {"neuron"}
    assert all(Path(r[4]).is_file() and "/reports/v1/visualizations/" in r[4] for r in rows)
    report = (wh / "reports" / "v1" / "report.html").read_text(encoding="utf-8")
    assert report.count('class="exemplar visualization"') == 2  # the two positive units' cards


def test_a_photo_model_on_the_rendered_probe_is_pointed_to_a_folder_and_clip():
    from coin_scale.models import ModelSource, resolve_model
    from coin_scale.sweep.config import ProbeConfig, SweepConfig, TargetConfig
    from coin_scale.sweep.stages import probe_guidance

    resnet = resolve_model(ModelSource(model="resnet18", weights="none"))
    config = SweepConfig(target=TargetConfig(image="cat.jpg", model="resnet18", weights="none"))
    note = probe_guidance(config, resnet)
    assert note is not None and "only knows shapes, colours, textures" in note
    assert note.endswith(
        "python run_sweep.py --image cat.jpg --model resnet18 --weights none --probe PHOTOS/ "
        "--explainer clip"
    )
    folder = SweepConfig(target=config.target, probe=ProbeConfig(probe="photos/"))
    assert probe_guidance(folder, resnet) is None  # photographs already
    for arch in ("probe_cnn", "attribute_net", "synthetic_units"):  # models of the rendered world
        assert probe_guidance(config, dataclasses.replace(resnet, arch=arch)) is None


def test_a_missing_key_with_a_folder_of_photos_suggests_clip(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32)).save(photos / "a.png")
    argv = ["--image", str(_target(tmp_path)), "--model", "resnet18", "--weights", "none",
            "--probe", str(photos), "--explainer", "openai", "--warehouse", str(tmp_path / "wh")]  # fmt: skip
    assert run_sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and "--explainer clip (no key, no labels)" in err
    assert not (tmp_path / "wh").exists()
