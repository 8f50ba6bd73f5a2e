"""Feature visualization: parameterisations, transforms, objectives, the loop and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from coin_scale.cli import main
from coin_scale.cli.visualize import parse_units
from coin_scale.errors import UserError
from coin_scale.models import ModelSource, resolve_model
from coin_scale.sae import SAEConfig, SparseAutoencoder, save_sae
from coin_scale.storage import run_query
from coin_scale.visualize import (
    Captured,
    channel,
    direction,
    diversity,
    fft_image,
    jitter,
    measure,
    neuron,
    pixel_image,
    random_rotate,
    random_scale,
    render,
    standard_transforms,
    tv,
)


class RedNet(nn.Module):
    """A 1x1 conv: channel 0 is red minus the mean of green and blue, channel 1 is blue."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, :, 0, 0] = torch.tensor([1.0, -0.5, -0.5])
            self.conv.weight[1, 2, 0, 0] = 1.0
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))


class SmallConv(nn.Module):
    """A seeded random conv net with two layers of spatial maps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("make", [fft_image, pixel_image])
@pytest.mark.parametrize("size", [31, 32])
def test_parameterisations_give_images_in_unit_range(make, size) -> None:
    param = make(size, batch=3, generator=gen())
    image = param()
    assert image.requires_grad
    image = image.detach()
    assert image.shape == (3, 3, size, size)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    torch.testing.assert_close(image, make(size, batch=3, generator=gen())().detach())
    with pytest.raises(ValueError, match="size >= 2"):
        make(1, generator=gen())


def test_transforms_keep_the_size_and_follow_the_generator() -> None:
    images = torch.rand(2, 3, 20, 20, generator=gen(5))
    for transform in [jitter(3), random_scale([0.9, 1.1]), random_rotate([-10.0, 10.0]),
                      *standard_transforms(20)]:  # fmt: skip
        out = transform(images, gen(1))
        assert out.shape == images.shape
        torch.testing.assert_close(out, transform(images, gen(1)))
    torch.testing.assert_close(jitter(0)(images, gen()), images)


def test_objectives_compose() -> None:
    model = SmallConv()
    images = torch.rand(2, 3, 16, 16, generator=gen())
    a, b = channel("a", 1), neuron("b", 3, x=2, y=5)
    combined = a - 0.5 * b + 2 * tv() + 1.0
    assert combined.layers == frozenset({"a", "b"})
    assert "channel(a, 1)" in combined.name
    acts = {"a": model.a(images)}
    acts["b"] = model.b(acts["a"])
    captured = Captured(image=images, activations=acts)
    expected = (acts["a"][:, 1].mean(dim=(1, 2)) - 0.5 * acts["b"][:, 3, 5, 2]
                + 2 * tv()(captured) + 1.0)  # fmt: skip
    torch.testing.assert_close(combined(captured), expected)
    torch.testing.assert_close(measure(model, combined, images, None), expected)
    torch.testing.assert_close((-a)(captured), -a(captured))
    assert sum([a, b])(captured).shape == (2,)
    vector = torch.randn(16, generator=gen())
    torch.testing.assert_close(
        direction("b", vector)(captured),
        torch.einsum("bchw,c->bhw", acts["b"], vector).mean((1, 2)),
    )
    assert float(diversity("b")(captured).detach().max()) <= 0.0
    with pytest.raises(TypeError, match="number"):
        a * b  # type: ignore[operator]


def test_render_is_deterministic_for_a_seed() -> None:
    model = SmallConv()

    def once(seed: int) -> torch.Tensor:
        param = fft_image(24, batch=2, generator=gen(seed))
        result = render(model, channel("b", 2) - 0.1 * tv(), param, steps=6,
                        transforms=standard_transforms(24), seed=seed)  # fmt: skip
        return result.images

    first = once(0)
    torch.testing.assert_close(first, once(0), rtol=0, atol=0)
    assert not torch.equal(first, once(1))


@pytest.mark.parametrize("make", [fft_image, pixel_image])
def test_optimising_a_red_channel_makes_a_red_image(make) -> None:
    model = RedNet()
    objective = channel("conv", 0)
    result = render(model, objective, make(32, generator=gen()), steps=50, lr=0.05,
                    transforms=standard_transforms(32), seed=0)  # fmt: skip
    red, green, blue = result.images[0].mean(dim=(1, 2)).tolist()
    assert red > green + 0.1 and red > blue + 0.1
    grey = measure(model, objective, torch.full((1, 3, 32, 32), 0.5), None)
    noise = measure(model, objective, torch.rand(1, 3, 32, 32, generator=gen()), None)
    assert float(result.values[0]) > float(grey[0]) + 0.1
    assert float(result.values[0]) > float(noise[0]) + 0.1
    assert result.history[-1] > result.history[0]


def test_neuron_and_direction_objectives_increase() -> None:
    model = SmallConv()
    vector = torch.randn(16, generator=gen(3))
    for objective in [neuron("b", 4, x=3, y=4), direction("b", vector)]:
        param = pixel_image(16, batch=1, generator=gen())
        before = measure(model, objective, param().detach(), None)
        result = render(model, objective, param, steps=30, lr=0.05, seed=0)
        assert float(result.values[0]) > float(before[0]) + 0.05, objective.name


def test_polish_drops_the_transforms_for_the_last_steps() -> None:
    """polish=1 is a render without transforms; a partial one is neither."""
    model = SmallConv()

    def run(transforms: list, polish: float, steps: int = 8) -> torch.Tensor:
        param = fft_image(24, batch=1, generator=gen(5))
        return render(model, channel("b", 2), param, steps=steps, transforms=transforms,
                      seed=5, polish=polish).images  # fmt: skip

    standard = standard_transforms(24)
    torch.testing.assert_close(run(standard, 1.0), run([], 0.0), rtol=0, atol=0)
    half = run(standard, 0.5)
    assert not torch.equal(half, run(standard, 0.0)) and not torch.equal(half, run([], 0.0))
    with pytest.raises(ValueError, match="polish in"):
        run(standard, 1.5)


def test_render_refuses_bad_arguments() -> None:
    model = SmallConv()
    with pytest.raises(ValueError, match="steps >= 1"):
        render(model, channel("b", 0), pixel_image(8, generator=gen()), steps=0)
    with pytest.raises(ValueError, match="no layer 'c'"):
        render(model, channel("c", 0), pixel_image(8, generator=gen()), steps=1)


def test_parse_units() -> None:
    assert parse_units("0-3,7,2") == [0, 1, 2, 3, 7]
    assert parse_units("5") == [5]
    for bad in ["", "a", "3-1", "1,,2"]:
        with pytest.raises(UserError):
            parse_units(bad)


BASE = ["visualize", "--model", "resnet18", "--weights", "none", "--size", "64", "--steps", "8",
        "--no-progress"]  # fmt: skip


def write_sae(path: Path, layer: str, d_in: int) -> Path:
    model_id = resolve_model(ModelSource(model="resnet18", weights="none")).model_id
    config = SAEConfig(model=model_id, layer=layer, d_in=d_in, expansion=2, k=8)
    save_sae(path, SparseAutoencoder(d_in, config.d_sae, 8, generator=gen()), config, {})
    return path


def test_cli_writes_pngs_and_rows(ray_cluster, tmp_path, capsys, caplog) -> None:
    """The images are optimised and measured on a model replica (issue 19: the driver holds no
    model); the PNGs and rows are the driver's."""
    out, warehouse = tmp_path / "out", tmp_path / "wh"
    code = main([*BASE, "--layer", "layer4", "--unit", "1,3", "--batch", "2", "--out", str(out),
                 "--warehouse", str(warehouse), "--run-id", "vis1"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "RANDOM weights" in caplog.text and "random weights" in printed.out
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"layer4_neuron_{u}_{i}.png" for u in (1, 3) for i in (0, 1)]
    assert Image.open(out / names[0]).size == (64, 64)
    _, rows = run_query(warehouse, "SELECT unit, batch_index, kind, param, size, steps, "
                        "activation, image_path FROM visualizations WHERE run_id = 'vis1' "
                        "ORDER BY unit, batch_index")  # fmt: skip
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        (u, i, "neuron", "fft", 64, 8) for u in (1, 3) for i in (0, 1)
    ]
    for row in rows:
        assert f"activation {row[6]:.4f}" in printed.out and Path(row[7]).is_file()
    _, runs = run_query(warehouse, "SELECT command, status, n_images FROM runs")
    assert runs == [("visualize", "complete", 4)]

    sae_path = write_sae(tmp_path / "sae.safetensors", "layer3", 256)
    code = main([*BASE, "--layer", "layer3", "--units", "sae", "--sae", str(sae_path), "--unit",
                 "5", "--steps", "4", "--param", "pixel", "--out", str(out), "--warehouse",
                 str(warehouse), "--run-id", "vis2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (out / "layer3_sae_5_0.png").is_file()
    _, rows = run_query(
        warehouse, "SELECT kind, unit, param FROM visualizations WHERE run_id = 'vis2'"
    )
    assert rows == [("sae", 5, "pixel")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "layer4", "--unit", "512"], "layer layer4 of resnet18 has 512 units"),
        (["--layer", "layer4", "--unit", "0", "--steps", "0"], "--steps must be at least 1"),
        (["--layer", "layer4", "--unit", "0", "--size", "1"], "--size must be at least 2"),
        (["--layer", "layer4", "--unit", "0-x"], "--unit '0-x'"),
        (
            ["--layer", "layer4", "--unit", "0", "--units", "sae", "--sae", "SAE"],
            "trained on resnet18 layer3",
        ),
        (
            ["--layer", "layer3", "--unit", "600", "--units", "sae", "--sae", "SAE"],
            "has 512 latents",
        ),
        (["--layer", "layer9", "--unit", "0"], "no dissectable layer 'layer9'"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message) -> None:
    extra = [str(write_sae(tmp_path / "sae.st", "layer3", 256)) if e == "SAE" else e for e in extra]
    out, warehouse = tmp_path / "out", tmp_path / "wh"
    code = main([*BASE, *extra, "--out", str(out), "--warehouse", str(warehouse)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "RANDOM weights" not in line]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists() and not warehouse.exists()


def test_cli_refuses_a_size_the_model_cannot_take(ray_cluster, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["visualize", "--model", "vit_b_16", "--weights", "none", "--layer",
                 "encoder.layers.encoder_layer_0", "--unit", "0", "--size", "64", "--out", str(out),
                 "--warehouse", str(tmp_path / "wh"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "RANDOM weights" not in line]
    assert code == 2 and len(lines) == 1, err
    assert "--size 64: vit_b_16 cannot take 64x64 images" in lines[0] and "224" in lines[0]
    assert not out.exists()


class SilentUnit(nn.Module):
    """layer `block`: ReLU(conv) whose channel 0 is negative on a grey image (bias -0.3) and grows
    with red: zero activation and, through a plain ReLU, zero gradient at the start."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            conv.weight[0, :, 0, 0] = torch.tensor([2.0, -1.0, -1.0])
            conv.bias.fill_(-0.3)
        self.block = nn.Sequential(conv, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def test_a_unit_silent_on_the_starting_image_is_still_driven_up(monkeypatch) -> None:
    from contextlib import nullcontext

    from coin_scale.visualize import optimize
    from coin_scale.visualize.optimize import redirected_relus

    model = SilentUnit()
    objective = channel("block", 0)
    start = pixel_image(16, batch=1, generator=gen())
    assert float(measure(model, objective, start().detach(), None)[0]) == 0.0
    result = render(model, objective, pixel_image(16, batch=1, generator=gen()), steps=40, seed=0)
    assert float(result.values[0]) > 0.01  # the redirected ReLU gave it a direction to move in
    # Without it the gradient is zero everywhere and the image never leaves the silent region.
    monkeypatch.setattr(optimize, "redirected_relus", lambda *a, **k: nullcontext(0))
    plain = render(model, objective, pixel_image(16, batch=1, generator=gen()), steps=40, seed=0)
    assert float(plain.values[0]) == 0.0
    monkeypatch.undo()
    with redirected_relus(model) as swapped:
        assert swapped == 1
    assert isinstance(model.block[1], nn.ReLU)  # put back


def test_cli_records_the_run_running_then_failed_when_it_breaks(
    ray_cluster, tmp_path, capsys, monkeypatch
) -> None:
    """The `runs` row says 'running' while the units' images come back from the replica; an
    error, or Ctrl-C, midway rewrites it as 'failed' with the error (and no visualizations rows
    are stored)."""
    from coin_scale.cli import visualize as command

    warehouse, seen = tmp_path / "wh", []

    def broken(*args, **kwargs):
        seen.append(run_query(warehouse, "SELECT run_id, command, status FROM runs ORDER BY 1")[1])
        raise error

    monkeypatch.setattr(command, "_write_png", broken)
    args = [*BASE, "--layer", "layer4", "--unit", "1", "--out", str(tmp_path / "out"),
            "--warehouse", str(warehouse)]  # fmt: skip
    error: BaseException = RuntimeError("the disk went away")
    with pytest.raises(RuntimeError, match="the disk went away"):
        main([*args, "--run-id", "vis-broken"])
    error = KeyboardInterrupt()
    assert main([*args, "--run-id", "vis-stopped"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert seen == [[("vis-broken", "visualize", "running")],
                    [("vis-broken", "visualize", "failed"), ("vis-stopped", "visualize", "running")]]  # fmt: skip
    _, runs = run_query(warehouse, "SELECT run_id, status, message, finished_at IS NOT NULL, "
                        "n_images FROM runs ORDER BY run_id")  # fmt: skip
    assert runs == [("vis-broken", "failed", "RuntimeError: the disk went away", True, None),
                    ("vis-stopped", "failed", "interrupted", True, None)]  # fmt: skip
    assert run_query(warehouse, "SELECT count(*) FROM visualizations")[1] == [(0,)]
