"""Bad input: one line on stderr, a non-zero exit, no traceback, and no Parquet file written."""

from __future__ import annotations

import pytest
import torch
import torchvision

from coin_scale.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    return code, errors, err


def no_parquet(path):
    return not list(path.rglob("*.parquet")) if path.exists() else True


@pytest.fixture
def wh(tmp_path):
    return tmp_path / "wh"


def dissect_args(probe, wh, **over):
    flags = {"--model": "resnet18", "--weights": "none", "--layer": "layer4", "--probe": str(probe),
             "--warehouse": str(wh)} | over  # fmt: skip
    return ["dissect", "--no-progress", *[x for kv in flags.items() for x in kv]]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_probe", "does not exist"),
        ("empty_probe", "holds no images"),
        ("unknown_model", "unknown model 'resnet1800'"),
        ("unknown_layer", "close matches: layer4"),
        ("weights_do_not_fit", "does not fit the architecture resnet18"),
        ("unwritable_warehouse", "is not writable"),
        ("bad_top_k", "top_k must be >= 1"),
    ],
)
def test_dissect_rejects_bad_input_cleanly(case, expected, tmp_path, wh, probe_dir, capsys):
    probe, over = probe_dir, {}
    if case == "missing_probe":
        probe = tmp_path / "nowhere"
    elif case == "empty_probe":
        probe = tmp_path / "empty"
        probe.mkdir()
    elif case == "unknown_model":
        over = {"--model": "resnet1800"}
    elif case == "unknown_layer":
        over = {"--layer": "layer44"}
    elif case == "weights_do_not_fit":
        path = tmp_path / "other.pth"
        torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), path)
        over = {"--weights": str(path)}
    elif case == "unwritable_warehouse":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        wh = blocker / "wh"
    elif case == "bad_top_k":
        over = {"--top-k": "0"}
    code, errors, err = run_cli(capsys, *dissect_args(probe, wh, **over))
    assert code != 0
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err
    assert no_parquet(wh)


def test_invalid_sql_is_one_line(tmp_path, capsys):
    code, errors, err = run_cli(capsys, "query", "--warehouse", str(tmp_path), "SELEC nonsense")
    assert code != 0 and len(errors) == 1 and "Traceback" not in err


def test_writing_sql_is_refused(tmp_path, capsys):
    code, errors, _ = run_cli(capsys, "query", "--warehouse", str(tmp_path),
                              "COPY (SELECT 1) TO 'x.csv'")  # fmt: skip
    assert code != 0 and len(errors) == 1


def test_config_with_unknown_key(tmp_path, probe_dir, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: resnet18\nlayer: layer4\nprobe: x\ntopk: 3\n")
    code, errors, _ = run_cli(capsys, "dissect", "--config", str(config))
    assert code != 0 and "unknown key(s) topk" in errors[0] and "top_k" in errors[0]
