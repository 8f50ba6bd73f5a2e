"""Spatial maps of chosen units: cut from conv maps and ViT tokens (class token dropped), one
forward pass for several layers, and on a replica the same values the dissection reduced."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import VisionTransformer

from coin_scale.models import ModelSource, resolve_model
from coin_scale.models.replica_core import ReplicaCore
from coin_scale.models.unit_maps import (
    UnitMapsRequest,
    capture_unit_maps,
    select_unit_maps,
    token_grid,
)
from coin_scale.probe import scan_probe


def test_conv_and_channels_last_maps_keep_the_grid_and_the_units_order():
    out = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).view(2, 4, 3, 5)  # (batch, C, H, W)
    maps = select_unit_maps(out, "nchw", [3, 1])
    assert maps.shape == (2, 2, 3, 5)
    assert torch.equal(maps[:, 0], out[:, 3]) and torch.equal(maps[:, 1], out[:, 1])
    last = select_unit_maps(out.permute(0, 2, 3, 1), "nhwc", [3, 1])  # (batch, H, W, C)
    assert torch.equal(last, maps)


def test_vit_tokens_become_the_patch_grid_without_the_class_token():
    assert token_grid(197) == (1, 14) and token_grid(16) == (0, 4) and token_grid(21) == (5, 4)
    batch, side, width = 2, 4, 6
    patches = torch.arange(side * side, dtype=torch.float32)  # token p holds p in every feature
    tokens = patches.view(1, -1, 1).expand(batch, -1, width)
    cls = torch.full((batch, 1, width), 999.0)  # the class token: never a position
    maps = select_unit_maps(torch.cat([cls, tokens], dim=1), "ntc", [5, 0])
    assert maps.shape == (batch, 2, side, side)
    assert torch.equal(maps[1, 0], patches.view(side, side))  # row by row
    assert float(maps.max()) == side * side - 1


def test_a_layer_without_spatial_extent_is_refused():
    with pytest.raises(ValueError, match="one vector per image: its units have no spatial map"):
        UnitMapsRequest("avgpool", "nc", (1,))
    with pytest.raises(ValueError, match="names no units"):
        UnitMapsRequest("layer4", "nchw", ())


def test_one_pass_gives_every_layers_maps_of_a_tiny_vit():
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()
    pixels = torch.randn(3, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    names = ("encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1")
    handles = [
        vit.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach())
        )
        for n in names
    ]
    with torch.inference_mode():
        vit(pixels)
    for h in handles:
        h.remove()
    requests = [UnitMapsRequest(names[0], "ntc", (3, 7)), UnitMapsRequest(names[1], "ntc", (0,))]
    with torch.inference_mode():
        maps = capture_unit_maps(vit, pixels, requests)
    assert maps[names[0]].shape == (3, 2, 4, 4) and maps[names[1]].shape == (3, 1, 4, 4)
    want = seen[names[0]][:, 1:, 7].reshape(3, 4, 4)  # tokens after the class token, row by row
    torch.testing.assert_close(maps[names[0]][:, 1], want)


def test_replica_maps_peak_where_the_dissection_reduced(probe_dir):
    """On a replica, a unit's map on an image peaks at the image's max-reduced activation (the
    dissection's value), and unreadable files are failures, not errors."""
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    core = ReplicaCore(payload, {"layer4": "nchw"}, ["max"], device="cpu")
    items = [(im.index, im.path) for im in scan_probe(probe_dir).images][:13]
    units = (5, 300, 17)
    result = core.run_unit_maps(0, items, [UnitMapsRequest("layer4", "nchw", units)])
    reduced = core.run(0, items)
    assert [path for path in (dict(items)[i] for i, _ in result.failures)] == [
        str(probe_dir / "class0" / "corrupt.jpg")
    ]
    assert list(result.indices) == list(reduced.indices) and len(result.indices) == 12
    maps = torch.from_numpy(result.maps["layer4"])
    assert maps.shape == (12, 3, 7, 7) and maps.dtype == torch.float32
    peaks = maps.amax(dim=(2, 3))
    want = torch.from_numpy(reduced.activations["layer4"]["max"])[:, list(units)]
    torch.testing.assert_close(peaks, want)
