"""MAIA's masked exemplars for the agent, without Ray: the masked view keeps where the unit fires
and dims the rest, the firing box is where the map is above the threshold in the original
image's pixels, and the tools show plain and masked exemplars and a full-resolution crop."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from coin_scale.agent.masks import firing_box, masked_view, with_masks
from coin_scale.agent.subject import ExemplarImage, UnitSubject
from coin_scale.agent.tools import ExperimentTools
from coin_scale.llm.messages import ToolCall
from coin_scale.models.map_images import model_view
from unity_pool.tools import RenderTools


class ZeroMeter:
    def measure(self, images):  # noqa: ANN001, ANN201
        return [0.0 for _ in images]


def _photo(path, size=(800, 600)) -> str:  # noqa: ANN001
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(60, 200, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def _map() -> np.ndarray:
    m = np.zeros((7, 7), dtype=np.float32)
    m[1:3, 4:6] = 5.0  # fires in the top right of the model's view
    return m


def test_the_masked_view_keeps_where_the_unit_fires_and_dims_the_rest(tmp_path) -> None:
    image = Image.open(_photo(tmp_path / "a.jpg"))
    view = np.asarray(masked_view(image, _map(), 1.0, 0.875), dtype=np.int16)
    plain = np.asarray(model_view(image, 0.875, 224), dtype=np.int16)
    inside, outside = view[64, 160], view[190, 30]
    assert np.abs(inside - plain[64, 160]).max() <= 2  # kept
    assert (outside <= plain[190, 30] * 0.3).all()  # dimmed to a quarter


def test_the_firing_box_is_in_the_original_images_pixels(tmp_path) -> None:
    box = firing_box((800, 600), _map(), 1.0, 0.875)
    assert box is not None
    left, top, right, bottom = box
    side, x0, y0 = 600 * 0.875, (800 - 525) / 2, (600 - 525) / 2
    # the map's columns 4-5 and rows 1-2 of 7, upsampled, plus a margin, in the original image
    assert x0 + side * 0.45 < left < x0 + side * 4 / 7 < right <= x0 + side
    assert y0 <= top < y0 + side / 7 and y0 + side * 3 / 7 - 5 < bottom < y0 + side * 0.6
    assert firing_box((800, 600), _map(), 10.0, 0.875) is None


def test_the_tools_show_masked_exemplars_and_a_full_resolution_crop(tmp_path) -> None:
    path = _photo(tmp_path / "a.jpg")
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").resize((256, 192)).save(buffer, format="PNG")
    plain = ExemplarImage(png=buffer.getvalue(), activation=3.0, source=path)
    subject = UnitSubject(model="m", layer="l", unit=1, exemplars=(plain, plain))
    masked = with_masks(subject, [_map(), None], 1.0, 0.875)
    assert masked.exemplars[0].masked_png is not None and masked.exemplars[1].masked_png is None
    assert with_masks(subject, [_map(), _map()], None, 0.875) == subject  # no threshold

    tools = ExperimentTools(masked, ZeroMeter(), RenderTools(), image_size=64)
    specs = {s.name: s for s in tools.specs()}
    assert "view" in specs["exemplars"].parameters["properties"] and "crop" in specs

    def call(name: str, args: dict):  # noqa: ANN202
        return tools.call(ToolCall(id="c", name=name, arguments=args, raw_arguments=json.dumps(args)))

    default = call("exemplars", {"k": 2})
    assert [s.image_id for s in default.shown] == ["ex-0 masked", "ex-1"]  # ex-1 has no mask
    both = call("exemplars", {"k": 2, "view": "both"})
    assert json.loads(both.result.content)["images"] == ["ex-0", "ex-0 masked", "ex-1"]
    assert [s.image_id for s in both.shown] == ["ex-0", "ex-0 masked", "ex-1"]
    assert [s.activation for s in both.shown] == [3.0, 3.0, 3.0]
    only = call("exemplars", {"k": 2, "view": "masked"})
    assert [s.image_id for s in only.shown] == ["ex-0 masked", "ex-1"]  # ex-1 has no mask
    crop = call("crop", {"image": "ex-0"})
    assert crop.status == "ok"
    (part,) = crop.result.images
    with Image.open(io.BytesIO(part.data)) as im:
        assert max(im.size) > 64  # not fitted to the agent's image size
    refused = call("crop", {"image": "ex-1"})
    assert refused.status == "error" and "no region" in refused.result.content
    plain_tools = ExperimentTools(subject, ZeroMeter(), RenderTools())
    assert "crop" not in {s.name for s in plain_tools.specs()}
