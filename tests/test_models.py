"""Resolving --model/--weights, listing layers, and the replica's pure forward path."""

from __future__ import annotations

import pytest
import torch
import torchvision

from coin_scale.errors import ResourceError, UserError
from coin_scale.models import (
    ModelSource,
    Preprocess,
    build_module,
    describe_layers,
    find_layer,
    resolve_model,
)
from coin_scale.models.checkpoint import save_checkpoint


def test_random_weights_are_reproducible_and_say_so(caplog):
    a = resolve_model(ModelSource(model="resnet18", weights="none", seed=3))
    b = resolve_model(ModelSource(model="resnet18", weights="none", seed=3))
    assert a.random_weights and a.weights_id == "none-seed3"
    assert torch.equal(a.state_dict["conv1.weight"], b.state_dict["conv1.weight"])
    assert "RANDOM weights" in caplog.text
    assert a.preprocess == Preprocess(resize=256, crop=224)
    assert len(a.class_names) == 1000


def test_unknown_model_suggests_close_names():
    with pytest.raises(UserError, match="did you mean: resnet18"):
        resolve_model(ModelSource(model="resnet181", weights="none"))


def test_default_weights_offline_name_the_file_and_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: no network here
    with pytest.raises(ResourceError) as info:
        resolve_model(ModelSource(model="resnet18", weights="default"))
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "--weights PATH" in message


def test_weights_file_that_does_not_fit_the_architecture(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(UserError, match="does not fit the architecture resnet18"):
        resolve_model(ModelSource(model="resnet18", weights=str(path)))


def test_weights_file_that_fits_is_loaded_and_identified_by_hash(tmp_path):
    path = tmp_path / "mine.pth"
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, path)
    payload = resolve_model(ModelSource(model="resnet18", weights=str(path)))
    assert payload.weights_id.startswith("file-") and not payload.random_weights
    assert torch.equal(build_module(payload).conv1.weight, state["conv1.weight"])


def test_official_file_name_with_wrong_hash_is_refused(tmp_path):
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(UserError, match="corrupt or truncated"):
        resolve_model(ModelSource(model="resnet18", weights=str(path)))


def test_corrupt_weights_file(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read weights file"):
        resolve_model(ModelSource(model="resnet18", weights=str(path)))


def test_project_checkpoint_round_trip(tmp_path):
    model = torchvision.models.resnet18(num_classes=3)
    path = save_checkpoint(
        tmp_path / "shapes-net.pt", model, arch="resnet18", arch_kwargs={"num_classes": 3},
        class_names=["circle", "square", "star"], preprocess=Preprocess(resize=64, crop=64),
    )  # fmt: skip
    payload = resolve_model(ModelSource(model=str(path)))
    assert payload.model_id == "shapes-net"
    assert payload.class_names == ("circle", "square", "star")
    assert payload.preprocess.crop == 64
    out = build_module(payload)(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 3)


def test_resnet18_layers_include_layer4_with_512_units():
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    layers = describe_layers(build_module(payload), "resnet18", 224)
    layer4 = find_layer(layers, "layer4", "resnet18")
    assert (layer4.units, layer4.layout, layer4.shape) == (512, "nchw", (512, 7, 7))
    names = [layer.name for layer in layers]
    assert names.index("layer1") < names.index("layer4") < names.index("fc")
    assert "layer1.0.relu" not in names  # called twice per forward: not one activation


def test_unknown_layer_lists_close_matches():
    payload = resolve_model(ModelSource(model="resnet18", weights="none"))
    layers = describe_layers(build_module(payload), "resnet18", 224)
    with pytest.raises(UserError, match="close matches: layer4"):
        find_layer(layers, "layer44", "resnet18")


@pytest.mark.slow  # a whole ViT-B/16 built and walked
def test_vit_layers_are_tokens():
    payload = resolve_model(ModelSource(model="vit_b_16", weights="none"))
    layers = describe_layers(build_module(payload), "vit_b_16", 224)
    block = find_layer(layers, "encoder.layers.encoder_layer_11", "vit_b_16")
    assert (block.layout, block.units) == ("ntc", 768)


def test_decoding_a_batch_on_threads_gives_the_same_pixels_and_failures(probe_dir):
    """A GPU replica decodes a batch's images on several threads (`decode_threads`); the pixels,
    their order and the unreadable files are those of decoding one after another."""
    from concurrent.futures import ThreadPoolExecutor

    from coin_scale.models.activations import decode_batch
    from coin_scale.models.preprocess import Preprocess
    from coin_scale.models.replica_core import decode_threads
    from coin_scale.probe import scan_probe

    items = [(im.index, im.path) for im in scan_probe(str(probe_dir)).images]
    preprocess = Preprocess(resize=64, crop=56)
    one = decode_batch(items, preprocess)
    with ThreadPoolExecutor(3) as pool:
        many = decode_batch(items, preprocess, pool)
    assert torch.equal(one.pixels, many.pixels) and one.indices == many.indices
    assert one.failures == many.failures and len(one.failures) == 1
    assert decode_threads(torch.device("cpu"), 16) == 1
    assert decode_threads(torch.device("cuda"), 8) == 7 and decode_threads(torch.device("cuda"), 1) == 1


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_loading_resamples_only_the_crop_and_matches_resize_then_crop(interpolation: str) -> None:
    """`Preprocess.load` resamples only the centre crop's region; against torchvision's resize of
    the whole image then crop, every pixel is within 2 grey levels (mean under 0.1)."""
    import io

    import numpy as np
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    pre = Preprocess(resize=232, crop=224, interpolation=interpolation)
    rng = np.random.default_rng(0)
    cases = [((500, 375), "RGB", "JPEG"), ((375, 500), "RGB", "JPEG"), ((1024, 683), "L", "JPEG"),
             ((240, 240), "RGBA", "PNG"), ((120, 90), "RGB", "PNG"), ((2000, 233), "RGB", "JPEG")]  # fmt: skip
    for size, mode, fmt in cases:
        base = rng.integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        smooth = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC).convert(mode)
        buf = io.BytesIO()
        smooth.save(buf, format=fmt)

        data = buf.getvalue()

        def opened(data: bytes = data) -> Image.Image:
            return Image.open(io.BytesIO(data))

        got = pre.load(opened()).numpy().astype(int)
        ref_image = opened()
        if fmt == "JPEG":
            ref_image.draft("RGB", (232, 232))
        ref_image = F.resize(ref_image.convert("RGB"), [232], interpolation=InterpolationMode(interpolation))
        ref = F.pil_to_tensor(F.center_crop(ref_image, [224])).numpy().astype(int)
        assert got.shape == ref.shape == (3, 224, 224)
        diff = np.abs(got - ref)
        assert diff.max() <= 2 and diff.mean() < 0.1, (size, mode, diff.max(), diff.mean())
