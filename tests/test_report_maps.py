"""Where a unit fires, in its report card: masked exemplars (MAIA-style) and the target's heat map,
drawn by pure functions checked on planted maps, embedded like every image of the report."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coin_scale.report import render_report, write_report
from coin_scale.report.spatial import (
    DIM,
    OUTLINE,
    heat_overlay,
    masked_exemplar,
    model_view,
    upsample_map,
)
from coin_scale.sweep.records import ActivationMap, Exemplar, UnitThreshold
from tests.test_report import CHROMIUM, _chromium, _parse, make_explanation

GREY = (200, 200, 200)


def _corner_map(value: float = 10.0) -> np.ndarray:
    """A 7 x 7 map that is 0 except its top-left cell."""
    m = np.zeros((7, 7), dtype=np.float32)
    m[0, 0] = value
    return m


def test_a_hot_corner_stays_bright_outlined_and_the_rest_is_dimmed():
    view = Image.new("RGB", (112, 112), GREY)
    out = np.asarray(masked_exemplar(view, _corner_map(), threshold=5.0))
    assert tuple(out[2, 2]) == GREY  # inside the region: untouched
    dimmed = tuple(round(c * DIM) for c in GREY)
    assert tuple(out[60, 60]) == dimmed and tuple(out[110, 110]) == dimmed
    outlined = np.all(out == OUTLINE, axis=-1)
    assert outlined[:20, :20].any() and not outlined[30:, 30:].any()  # around the corner only
    kept = np.all(out == GREY, axis=-1)
    assert kept.sum() < 0.05 * kept.size  # one cell's worth of 49, bilinearly spread


def test_a_map_that_never_reaches_the_threshold_dims_everything():
    out = np.asarray(masked_exemplar(Image.new("RGB", (64, 64), GREY), _corner_map(1.0), 5.0))
    assert np.all(out == round(GREY[0] * DIM))


def test_upsampling_is_bilinear_and_keeps_the_hot_corner_where_it_was():
    up = upsample_map(_corner_map(), 70)  # 10 px a cell
    assert up.shape == (70, 70)
    assert up[0, 0] == pytest.approx(10.0) and up[69, 69] == 0.0
    assert 0 < up[0, 12] < up[0, 8]  # falls off linearly into the next cell


def test_the_heat_overlay_is_hot_where_the_map_is_high():
    view = Image.new("RGB", (112, 112), GREY)
    out = np.asarray(heat_overlay(view, _corner_map(), top=10.0)).astype(int)
    r, b = out[..., 0], out[..., 2]
    assert r[3, 3] > b[3, 3] + 50  # red over the hot corner
    assert b[100, 100] > r[100, 100] + 50  # blue where the map is 0
    assert np.argmax(r - b) // 112 < 16 and np.argmax(r - b) % 112 < 16


def test_the_view_is_the_centre_crop_the_model_saw():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 50, 100))  # a red band on the left, outside the crop
    view = model_view(image, 0.875, 50)  # resize 256 / crop 224: a centred square of 87.5 px
    assert view.size == (50, 50) and np.asarray(view)[..., 0].max() == 0


def _with_maps(root: Path):
    """`make_explanation` with maps on its first unit: its red exemplar hot in the top-left
    3 x 3 cells, its missing exemplar mapped too, and the target's map."""
    e = make_explanation(root)
    first = e.positive[0]
    hot = np.zeros((7, 7), dtype=np.float32)
    hot[:3, :3] = 10.0
    corner = ActivationMap(height=7, width=7, values=tuple(hot.ravel().tolist()))
    exemplars = tuple(dataclasses.replace(x, activation_map=corner) for x in first.exemplars)
    target = Exemplar(
        image_path=e.image_path, activation=10.0, label="target", activation_map=corner
    )
    first = dataclasses.replace(
        first, exemplars=exemplars, target_map=target,
        threshold=UnitThreshold(value=5.0, quantile=0.99, images=64),
    )  # fmt: skip
    return dataclasses.replace(e, positive=(first, *e.positive[1:]))


def test_a_card_with_maps_shows_masked_exemplars_and_the_heat_map(tmp_path):
    e = _with_maps(tmp_path / "img")
    doc = render_report(e)
    cards = doc.split('<section class="unit">')[1:]
    first, second = cards[0], cards[1]
    assert first.count('class="exemplar masked"') == 1  # the red exemplar (the other is missing)
    assert first.count('class="exemplar heat"') == 1 and "target<br>peak 10.000" in first
    assert "threshold T = 5.000 (its top 1% of activations: the 0.99 quantile over every " in first
    assert "position of its maps on 64 probe images drawn at random" in first
    assert "dimmed to 25%" in first and "0 → 10.000" in first and "linear-gradient" in first
    assert first.count("missing image") == 2  # the unreadable exemplar: placeholders, not a crash
    assert "masked" not in second and "heat" not in second  # no maps: the card as before
    masked = re.search(r'class="exemplar masked"><img class="thumb" src="([^"]+)"', first)
    assert masked and masked.group(1).startswith("data:image/jpeg;base64,")
    plain = render_report(make_explanation(tmp_path / "img"))
    assert len(_parse(doc).img_srcs) == len(_parse(plain).img_srcs) + 2


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_a_card_with_maps_renders_in_chromium(tmp_path):
    """Only the first card, with the report's own styles, screenshotted: the dimmed, outlined and
    heat-coloured pixels are there."""
    doc = write_report(_with_maps(tmp_path / "img"), tmp_path / "out").read_text(encoding="utf-8")
    card = card_page(doc)
    page = tmp_path / "card.html"
    page.write_text(card, encoding="utf-8")
    shot = tmp_path / "card.png"
    proc = _chromium(
        [f"--screenshot={shot}", "--window-size=900,520", page.as_uri()], tmp_path / "p"
    )
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((r > 220) & (g > 180) & (b < 60)).sum() > 20, "no yellow outline"
    assert ((b > r + 60) & (b > g + 60)).sum() > 200, "no blue of the heat map"


def card_page(report: str, index: int = 0) -> str:
    """A page of one unit card of `report` with the report's styles (for a screenshot)."""
    style = report[report.index("<style>") : report.index("</style>") + len("</style>")]
    cards = report.split('<section class="unit">')
    card = '<section class="unit">' + cards[index + 1].split("</section>")[0] + "</section>"
    return f'<!DOCTYPE html><html><head><meta charset="utf-8">{style}</head><body><main>{card}</main></body></html>'
