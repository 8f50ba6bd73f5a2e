"""What renders a sweep's rendered probe and scoring sets (`--probe-renderer`), and the image
generator beside an explainer that is not an LLM: a Unity player's workers render the probe set
(here the Python stand-in of the player, which serves the protocol with the procedural renderer),
cached apart from the procedural sets; with a diffusion generator the offline explainer's labels
are tested on generated images too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import run_sweep
from unity_pool.unity.standin import write_player

pytestmark = pytest.mark.slow


def _unity_config(tmp_path: Path) -> Path:
    (tmp_path / "player").mkdir()
    player = write_player(tmp_path / "player" / "CoinScalePlayer.x86_64")
    config = tmp_path / "unity.yaml"
    config.write_text(
        f"player: {json.dumps(str(player))}\nextra_args: []\nlaunch_prefix: []\nenv: {{}}\n"
        "port: 0\nhost: 127.0.0.1\nstartup_timeout: 120\nping_timeout: 10\n"
        "render_timeout: 120\n"
    )
    return config


def _argv(wh: Path, *extra: str) -> list[str]:
    return ["--model", "resnet18", "--weights", "none", "--top-k", "2", "--negatives", "0",
            "--probe-images", "60", "--warehouse", str(wh), "--no-progress", "--no-unit-scores",
            "--json", *extra]  # fmt: skip


def test_a_unity_player_renders_the_probe_set(ray_cluster, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("COIN_SCALE_CACHE", str(cache))
    argv = _argv(tmp_path / "wh", "--image-generator", "unity", "--unity-config",
                 str(_unity_config(tmp_path)), "--probe-renderer", "generator")  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    outcome = json.loads(out[out.index("{") :])
    assert outcome["rendered_images"]["driver"] == 0
    assert outcome["rendered_images"]["render_pool"] >= 60
    (probe,) = [p.name for p in (cache / "probes").iterdir()]
    assert probe.startswith("rendered-n60-seed0-224-unity-")
    assert {u["status"] for u in outcome["positive"]} == {"ok"}


def test_the_probe_renderer_needs_a_generator(tmp_path, capsys):
    assert run_sweep.main(_argv(tmp_path / "wh", "--probe-renderer", "generator")) == 2
    err = capsys.readouterr().err
    assert "--probe-renderer generator" in err and "--image-generator unity or diffusion" in err
    assert "Traceback" not in err and not (tmp_path / "wh").exists()


@pytest.mark.timeout(1200)  # the session fixture may train the probe CNN first
def test_the_offline_explainers_labels_are_tested_on_generated_images(
    ray_cluster, tmp_path, monkeypatch, capsys, trained_probe_cache
):
    from coin_scale.sweep.inputs import probe_cnn_checkpoint

    monkeypatch.setenv("COIN_SCALE_CACHE", str(trained_probe_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["--model", probe_cnn_checkpoint(), "--top-k", "2", "--negatives", "0",
            "--probe-images", "200", "--warehouse", str(tmp_path / "wh"), "--no-progress",
            "--no-unit-scores", "--json", "--image-generator", "diffusion",
            "--diffusion-model", "tiny-random"]  # fmt: skip
    assert run_sweep.main(argv) == 0
    out = capsys.readouterr().out
    outcome = json.loads(out[out.index("{") :])
    labelled = [u for u in outcome["positive"] if u["label"]]
    assert labelled, "the offline explainer labelled no unit"
    for u in labelled:
        g = u["generated"]
        assert g is not None and g["prompts_from"] == "template"
        assert all(u["label"] in p for p in g["positive_prompts"])
