"""`coin-scale bench visualize`: visualization vs top exemplar, same reduction; dominant hue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from coin_scale.bench.visualize_bench import (
    VisualizeBenchConfig,
    contact_sheet,
    dissect_in_process,
    dominant_hue,
    hue_names,
    label_colours,
    positive_concepts,
    report,
    save_png,
    visualize_bench,
)
from coin_scale.concepts import ConceptMatrix
from coin_scale.models.layers import LayerInfo
from coin_scale.models.preprocess import Preprocess
from coin_scale.probe import scan_probe
from coin_scale.visualize import channel, measure

SIZE = 16
PREPROCESS = Preprocess(resize=SIZE, crop=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
LAYER = LayerInfo(name="relu", type="ReLU", layout="nchw", units=2, shape=(2, SIZE, SIZE))


class OpponentNet(nn.Module):
    """A 1x1 conv then ReLU: unit 0 is red minus the mean of green and blue, unit 1 the same for
    blue; a grey image gives 0 on both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.bias.zero_()
            self.conv.weight.zero_()
            self.conv.weight[0, :, 0, 0] = torch.tensor([1.0, -0.5, -0.5])
            self.conv.weight[1, :, 0, 0] = torch.tensor([-0.5, -0.5, 1.0])
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)))


def _half(colour: tuple[int, int, int]) -> Image.Image:
    """Left half `colour`, right half grey: its spatial max and mean differ."""
    image = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    image.paste(Image.new("RGB", (SIZE // 2, SIZE), colour), (0, 0))
    return image


@pytest.fixture
def probe(tmp_path: Path) -> Path:
    """Dull red and blue images (one half-filled each) and blank grey ones."""
    images = {
        "a_red_half.png": _half((200, 60, 60)),
        "b_red_dull.png": Image.new("RGB", (SIZE, SIZE), (150, 110, 110)),
        "c_blue_half.png": _half((60, 60, 200)),
        "d_blue_dull.png": Image.new("RGB", (SIZE, SIZE), (110, 110, 150)),
        "e_grey.png": Image.new("RGB", (SIZE, SIZE), (128, 128, 128)),
        "f_grey.png": Image.new("RGB", (SIZE, SIZE), (90, 90, 90)),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    return tmp_path


def _concepts() -> ConceptMatrix:
    red = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    blue = torch.tensor([0, 0, 1, 1, 0, 0], dtype=torch.bool)
    return ConceptMatrix(names=("color=red", "color=blue"), matrix=torch.stack([red, blue]))


def test_visualizations_beat_their_exemplars_under_the_same_reduction(probe: Path) -> None:
    model = OpponentNet()
    scanned = scan_probe(probe)
    config = VisualizeBenchConfig(steps=48, lr=0.1, quantile=0.5, batch_size=4)
    result = visualize_bench(model, PREPROCESS, LAYER, scanned, _concepts(), config)

    acts, _ = dissect_in_process(model, PREPROCESS, LAYER, scanned, batch_size=4)
    assert [u.unit for u in result.units] == [0, 1]
    for u, colour, half in zip(result.units, ("red", "blue"), (0, 2), strict=True):
        # The top exemplar under max is the half-filled image, and under mean as well; each is
        # measured with its own reduction (on the half image max is twice the mean).
        assert u.exemplar_index == {"max": half, "mean": half}
        assert u.exemplar["max"] == pytest.approx(float(acts["max"][half, u.unit]), rel=1e-4)
        assert u.exemplar["mean"] == pytest.approx(float(acts["mean"][half, u.unit]), rel=1e-4)
        assert u.exemplar["max"] == pytest.approx(2 * u.exemplar["mean"], rel=1e-3)
        # The visualization is measured the same way: its mean is the objective it maximised,
        # on the 8-bit image.
        image = result.images[u.unit].float().unsqueeze(0) / 255
        objective = float(measure(model, channel("relu", u.unit), image, PREPROCESS)[0])
        assert u.visualization["mean"] == pytest.approx(objective, rel=1e-4)
        assert u.visualization["max"] >= u.visualization["mean"]
        assert u.beats("max") and u.beats("mean") and u.ratio("mean") > 1
        assert u.label == f"color={colour}" and u.label_colours == (colour,)
        assert u.dominant_hue == colour and u.colour_match is True and u.colour_only
        assert u.seconds > 0

    summary = report(result, config, model="opponent")
    json.dumps(summary)  # JSON-ready
    assert summary["beats_top_exemplar_max"]["fraction"] == 1.0
    assert summary["beats_top_exemplar_mean"]["count"] == 2
    assert summary["colour_units"] == summary["colour_mentioning_units"] == {
        "evaluated": 2, "hue_matches_label": 2, "fraction": 1.0, "achromatic_labels_skipped": 0,
        "chance_fraction": 0.5,  # of the two visualizations one is red, one blue
    }  # fmt: skip
    assert summary["headline_reduction"] == "max" and summary["size"] == SIZE
    assert [row["unit"] for row in summary["per_unit"]] == [0, 1]


def test_contact_sheet_and_unit_subset(probe: Path, tmp_path: Path) -> None:
    config = VisualizeBenchConfig(
        units=(1,), steps=4, quantile=0.5, batch_size=6, transforms="none"
    )
    result = visualize_bench(
        OpponentNet(), PREPROCESS, LAYER, scan_probe(probe), _concepts(), config
    )
    assert [u.unit for u in result.units] == [1]
    path = save_png(contact_sheet(result, [0, 1], columns=2, tile=32), tmp_path / "s" / "sheet.png")
    with Image.open(path) as sheet:
        assert sheet.size[0] > 2 * 32 and sheet.size[1] > 32
    assert report(result, config)["transforms"] == "none"
    with pytest.raises(ValueError, match="transforms"):
        VisualizeBenchConfig(transforms="jitter")
    with pytest.raises(ValueError, match="out of range"):
        visualize_bench(OpponentNet(), PREPROCESS, LAYER, scan_probe(probe), _concepts(),
                        VisualizeBenchConfig(units=(2,), steps=1))  # fmt: skip


def test_label_colours_and_hues() -> None:
    assert label_colours("((color=red AND NOT color=blue) OR shape=star)") == ("red",)
    assert label_colours("(shape=ring AND NOT color=white)") == ()
    assert label_colours("(color=red OR color=pink)") == ("red", "pink")
    assert positive_concepts("((shape=ring OR color=red) AND NOT light=dim)") == (
        "shape=ring",
        "color=red",
    )

    def flat(rgb: tuple[int, int, int]) -> torch.Tensor:
        return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8).contiguous()

    assert hue_names(dominant_hue(flat((250, 10, 10)))) == ("red",)
    assert hue_names(dominant_hue(flat((10, 30, 250)))) == ("blue",)
    assert set(hue_names(dominant_hue(flat((240, 130, 20))))) == {"orange", "brown"}
    assert dominant_hue(flat((128, 128, 128))) is None  # no saturated pixels
    assert dominant_hue(flat((5, 0, 0))) is None  # too dark
