"""The ground-truth probe CNN: tiny trainings that save, reload and attribute exactly."""

from __future__ import annotations

import pytest
import torch

from coin_scale.chain.attribution import unit_contributions
from coin_scale.cli import main
from coin_scale.models import ModelSource, build_module, describe_layers, resolve_model, zoo
from coin_scale.models.checkpoint import read_checkpoint
from coin_scale.training import probe_cnn
from coin_scale.training.probe_cnn import (
    ProbeTrainConfig,
    ensure_probe_cnn,
    save_probe_cnn,
    train_probe_cnn,
)
from unity_pool import vocab

TINY = ProbeTrainConfig(n_train=192, n_val=48, epochs=1, size=32, batch_size=64, width=16,
                        threads=1, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    module, result = train_probe_cnn(TINY)
    path = save_probe_cnn(tmp_path_factory.mktemp("probe") / "tiny.pt", module, result)
    return module, result, path


def test_tiny_model_saves_reloads_and_attributes_exactly_on_layer4(tiny):
    module, result, path = tiny
    assert result.class_names == vocab.SHAPES and 0.0 <= result.val_accuracy <= 1.0
    extra = read_checkpoint(path)["extra"]
    assert extra["task"] == "shape" and extra["n_train"] == 192 and extra["seed"] == 0
    assert {"train_accuracy", "val_accuracy", "seconds"} <= set(extra)

    payload = resolve_model(ModelSource(model=str(path)))
    assert payload.arch == "probe_cnn" and payload.class_names == vocab.SHAPES
    pre = payload.preprocess
    assert pre.resize == pre.crop == 32 and pre.mean == result.preprocess.mean
    loaded = build_module(payload)
    layers = {info.name: info for info in describe_layers(loaded, payload.arch, pre.crop)}
    assert list(layers)[-1] == "fc" and layers["layer4"].units == 16
    assert layers["layer4"].layout == "nchw"

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), module.eval()(x))
        logits = loaded(x)
    c = unit_contributions(loaded, "layer4", "nchw", x, class_index=3)
    assert c.method == "exact_linear" and c.contributions.shape == (16,)
    torch.testing.assert_close(
        c.contributions.sum() + c.head_bias, logits[0, 3].double(), rtol=1e-5, atol=1e-5
    )


def test_same_seed_gives_the_same_weights(tiny):
    again, result = train_probe_cnn(TINY)
    for name, value in tiny[0].state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value, rtol=0, atol=0)
    assert result.val_accuracy == tiny[1].val_accuracy
    other, _ = train_probe_cnn(ProbeTrainConfig(**{**TINY.__dict__, "seed": 1}))
    assert not torch.equal(other.state_dict()["fc.weight"], tiny[0].state_dict()["fc.weight"])


def test_shape_color_task_renders_balanced_labelled_scenes():
    task = probe_cnn.get_task("shape_color")
    images, labels = probe_cnn.render_dataset(task, 24, seed=0, size=32)
    assert images.shape == (24, 3, 32, 32) and images.dtype == torch.uint8
    assert sorted(labels.tolist()) == sorted(list(range(12)) * 2)
    assert task.class_names[0] == "red_circle"


def test_ensure_probe_cnn_trains_once_then_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path))
    path = ensure_probe_cnn(config=TINY)
    assert path == tmp_path / "probe_model_shape_v1.pt" and path.is_file()

    def fail(_config):
        raise AssertionError("retrained although a cached checkpoint exists")

    monkeypatch.setattr(probe_cnn, "train_probe_cnn", fail)
    assert ensure_probe_cnn() == path


def test_cli_trains_and_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "sub" / "probe.pt"
    flags = ["--size", "32", "--epochs", "1", "--n-train", "64", "--n-val", "16", "--threads", "1"]
    assert main(["train-probe-cnn", "--out", str(out), "--no-progress", *flags]) == 0
    assert resolve_model(ModelSource(model=str(out))).class_names == vocab.SHAPES


@pytest.mark.parametrize(
    ("where", "flags", "code", "expected"),
    [
        ("under_a_file", [], 3, "Fix: choose a writable --out"),
        ("directory", [], 2, "is a directory"),
        ("ok", ["--epochs", "0"], 2, "epochs: expected >= 1"),
        ("ok", ["--task", "colour"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, where, flags, code, expected):
    (tmp_path / "file").write_text("not a directory")
    out = {
        "under_a_file": tmp_path / "file" / "m.pt",
        "directory": tmp_path,
        "ok": tmp_path / "m.pt",
    }
    try:
        got = main(["train-probe-cnn", "--out", str(out[where]), *flags])
    except SystemExit as exit_:  # argparse's own errors
        got = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert got == code and expected in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert not (tmp_path / "m.pt").exists()


def test_the_former_command_name_is_an_alias(tmp_path, capsys):
    assert main(["train-probe-model", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_zoo_names_the_registered_architectures():
    with pytest.raises(ValueError, match="did you mean: probe_cnn"):
        zoo.build("probe_cn")
    model = zoo.build("probe_cnn", num_classes=3, width=8)
    names = [name for name, _ in model.named_children()]
    assert names == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
