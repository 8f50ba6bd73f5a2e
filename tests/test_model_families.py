"""The model families beyond torchvision: timm models (`--model timm:NAME`) and open_clip image
encoders (`--model clip:ARCH`), with random weights, weights files and the HF cache; their layer
listing, a dissection on Ray, and their errors as one line. Plus MAIA's ResNet-152 weights."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from coin_scale.cli import main
from coin_scale.errors import ResourceError, UserError
from coin_scale.models import (
    ModelSource,
    build_module,
    describe_layers,
    find_layer,
    image_text,
    resolve_model,
)
from coin_scale.models.checkpoint import save_checkpoint
from coin_scale.models.families import family_for_arch, model_flag
from coin_scale.models.layers import last_block
from coin_scale.models.payload import require_class_logits

TINY_CLIP = "coin-tiny-clip-tower"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny CLIP architecture registered with open_clip in this process only: the payload
    carries its tower config, so Ray replicas build it without the registration."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip-configs")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_CLIP


@pytest.fixture
def offline(monkeypatch):
    """No Hugging Face cache hit and no hub reachable: the quick checks of image_text say so."""
    monkeypatch.setattr(image_text, "_cached", lambda repo, filename: False)
    monkeypatch.setattr(image_text, "_reachable", lambda host, timeout=3.0: False)


def listed(out: str) -> dict[str, list[str]]:
    """`coin-scale layers` rows by layer name: [name, units, layout, type, shape]."""
    return {line.split()[0]: line.split() for line in out.splitlines()[1:] if line[0] != "("}


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    return code, errors, captured


# --- timm ---------------------------------------------------------------------------------------


def test_timm_random_weights_rebuild_alike_with_timm_preprocessing_and_classes(caplog):
    a = resolve_model(ModelSource(model="timm:resnet10t", weights="none", seed=3))
    b = resolve_model(ModelSource(model="timm:resnet10t", weights="none", seed=3))
    other = resolve_model(ModelSource(model="timm:resnet10t", weights="none", seed=4))
    assert "RANDOM weights" in caplog.text
    assert (a.model_id, a.arch, a.weights_id, a.random_weights) == (
        "timm-resnet10t", "timm:resnet10t", "none-seed3", True,
    )  # fmt: skip
    # timm's evaluation config: test size 224, crop_pct 0.95 -> resize 235, bicubic
    assert (a.preprocess.crop, a.preprocess.resize, a.preprocess.interpolation) == (
        224,
        235,
        "bicubic",
    )
    assert len(a.class_names) == 1000 and a.class_names[:2] == ("tench", "goldfish")
    assert a.has_class_logits
    payload = pickle.loads(pickle.dumps(a))  # what a replica receives
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(build_module(payload)(x), build_module(b)(x))
        assert not torch.allclose(build_module(a)(x), build_module(other)(x))
    assert family_for_arch(a.arch).name == "timm"


def test_a_timm_resnet_logit_is_attributed_exactly_to_its_last_block():
    from coin_scale.chain.attribution import unit_contributions

    payload = resolve_model(ModelSource(model="timm:resnet10t", weights="none"))
    c = unit_contributions(build_module(payload), "layer4", "nchw", torch.randn(1, 3, 224, 224))
    assert c.method == "exact_linear"  # timm's global_pool (avg) -> fc, like torchvision's head
    assert float(c.contributions.sum()) + c.head_bias == pytest.approx(c.logit, rel=1e-5)


def test_timm_vit_layers_are_tokens_of_the_embed_dim():
    payload = resolve_model(ModelSource(model="timm:vit_tiny_patch16_224", weights="none"))
    module = build_module(payload)
    layers = describe_layers(module, payload.arch, payload.preprocess.crop)
    block = find_layer(layers, "blocks.3", payload.model_id)
    assert (block.layout, block.units, block.shape) == ("ntc", 192, (197, 192))
    assert last_block(module, layers).name == "norm"
    with pytest.raises(UserError, match="--model timm:vit_tiny_patch16_224 --weights none"):
        find_layer(layers, "blocks.33", payload.model_id)  # the hint names the --model spelling


def test_timm_channels_last_stages_read_as_nhwc():
    from timm.models.swin_transformer import SwinTransformer

    swin = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1),
                           num_heads=(1, 1), num_classes=3)  # fmt: skip
    stage = find_layer(describe_layers(swin, "timm:swin_tiny", 32), "layers.1", "timm-swin_tiny")
    assert (stage.layout, stage.units, stage.shape) == ("nhwc", 32, (4, 4, 32))


def test_timm_model_without_a_head_outputs_an_embedding():
    payload = resolve_model(ModelSource(model="timm:vit_small_patch16_224.dino", weights="none"))
    assert payload.model_id == "timm-vit_small_patch16_224.dino"
    assert payload.class_names == () and not payload.has_class_logits
    with torch.inference_mode():
        assert build_module(payload)(torch.zeros(1, 3, 224, 224)).shape == (1, 384)
    with pytest.raises(UserError) as info:
        require_class_logits(payload, "the sweep")
    message = str(info.value)
    assert "timm:vit_small_patch16_224.dino outputs an embedding, not class logits" in message
    assert "coin-scale dissect --model timm:vit_small_patch16_224.dino" in message


def test_timm_default_weights_are_read_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--resnet10t.c3_in1k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    trained = timm.create_model("resnet10t")
    save_file(trained.state_dict(), snapshot / "model.safetensors")
    payload = resolve_model(ModelSource(model="timm:resnet10t"))
    assert (payload.weights_id, payload.random_weights) == ("c3_in1k", False)
    assert torch.equal(build_module(payload).conv1[0].weight, trained.conv1[0].weight)


def test_timm_default_weights_offline_name_the_hub_file_and_the_flag(offline):
    with pytest.raises(ResourceError) as info:
        resolve_model(ModelSource(model="timm:vit_small_patch8_224.dino"))
    message = str(info.value)
    assert "\n" not in message and "timm vit_small_patch8_224.dino" in message
    assert "timm/vit_small_patch8_224.dino/model.safetensors" in message
    assert "--weights PATH" in message


def test_timm_weights_file_loads_and_another_architecture_is_one_line(tmp_path):
    import timm
    from safetensors.torch import save_file

    trained = timm.create_model("resnet10t")
    path = tmp_path / "mine.safetensors"
    save_file(trained.state_dict(), path)
    payload = resolve_model(ModelSource(model="timm:resnet10t", weights=str(path)))
    assert payload.weights_id.startswith("file-") and not payload.random_weights
    assert torch.equal(build_module(payload).conv1[0].weight, trained.conv1[0].weight)
    with pytest.raises(UserError, match="does not fit timm resnet14t") as info:
        resolve_model(ModelSource(model="timm:resnet14t", weights=str(path)))
    assert "\n" not in str(info.value)


def test_a_checkpoint_can_hold_a_timm_architecture(tmp_path):
    import timm

    net = timm.create_model("resnet10t", num_classes=2)
    path = save_checkpoint(
        tmp_path / "two-way.pt", net, arch="timm:resnet10t", arch_kwargs={"num_classes": 2},
        class_names=["yes", "no"], preprocess=resolve_model(
            ModelSource(model="timm:resnet10t", weights="none")
        ).preprocess,
    )  # fmt: skip
    payload = resolve_model(ModelSource(model=str(path)))
    assert (payload.model_id, payload.arch, payload.class_names) == (
        "two-way",
        "timm:resnet10t",
        ("yes", "no"),
    )
    with torch.inference_mode():
        assert build_module(payload)(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


# --- open_clip ----------------------------------------------------------------------------------


def test_clip_image_encoder_with_random_weights_outputs_an_embedding(tiny_clip):
    a = resolve_model(ModelSource(model=f"clip:{tiny_clip}", weights="none", seed=1))
    b = resolve_model(ModelSource(model=f"clip:{tiny_clip}", weights="none", seed=1))
    assert (a.model_id, a.arch, a.weights_id) == (
        f"clip-{tiny_clip}",
        f"clip:{tiny_clip}",
        "none-seed1",
    )
    assert a.class_names == () and not a.has_class_logits
    assert a.arch_kwargs["vision_cfg"]["width"] == 64  # the tower's config travels with it
    assert (a.preprocess.resize, a.preprocess.crop, a.preprocess.interpolation) == (
        32,
        32,
        "bicubic",
    )
    assert a.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out = build_module(pickle.loads(pickle.dumps(a)))(x)
        assert out.shape == (2, 32)
        torch.testing.assert_close(out, build_module(b)(x))
    block = find_layer(
        describe_layers(build_module(a), a.arch, 32), "transformer.resblocks.1", a.model_id
    )
    assert (block.layout, block.units) == ("ntc", 64)


def test_clip_weights_file_whole_model_or_tower_and_a_misfit_is_one_line(tiny_clip, tmp_path):
    import open_clip

    clip = open_clip.create_model(tiny_clip)
    whole, tower = tmp_path / "whole.bin", tmp_path / "tower.pt"
    torch.save(clip.state_dict(), whole)
    torch.save(clip.visual.state_dict(), tower)
    for path in (whole, tower):
        payload = resolve_model(ModelSource(model=f"clip:{tiny_clip}", weights=str(path)))
        assert payload.weights_id.startswith("file-")
        assert torch.equal(build_module(payload).conv1.weight, clip.visual.conv1.weight)
    with pytest.raises(UserError, match="does not fit the image encoder of open_clip RN50") as info:
        resolve_model(ModelSource(model="clip:RN50", weights=str(whole)))
    assert "\n" not in str(info.value)


def test_clip_default_weights_offline_name_the_hub_file_and_the_flag(offline):
    with pytest.raises(ResourceError) as info:
        resolve_model(ModelSource(model="clip:RN50"))
    message = str(info.value)
    assert "\n" not in message and "open_clip RN50 (openai)" in message
    assert "timm/resnet50_clip.openai/open_clip_pytorch_model.bin" in message
    assert "--weights PATH" in message and "--clip-weights" not in message


# --- the CLI: layers and errors -------------------------------------------------------------------


@pytest.mark.slow  # a ViT and RN50's image encoder built and walked
def test_layers_command_lists_timm_and_clip_layers(capsys):
    code, _, captured = run_cli(
        capsys, "layers", "--model", "timm:vit_tiny_patch16_224", "--weights", "none"
    )
    assert code == 0
    rows = listed(captured.out)
    assert rows["blocks.3"][1:3] == ["192", "ntc"] and rows["head"][1:3] == ["1000", "nc"]
    code, _, captured = run_cli(capsys, "layers", "--model", "clip:RN50", "--weights", "none")
    assert code == 0
    rows = listed(captured.out)
    assert rows["layer4"][1:3] == ["2048", "nchw"] and rows["attnpool"][1:3] == ["1024", "nc"]
    assert "outputs an embedding, not class logits" in captured.out


@pytest.mark.parametrize(
    ("model", "weights", "expected"),
    [
        ("timm:vit_smal_patch8_224", "none", "did you mean: vit_small_patch8_224"),
        ("timm:resnet10t.bogus", "none", "has no weights tag 'bogus'; its tags: c3_in1k"),
        ("timm:resnet10t", "IMAGENET1K_V1", "timm names its pretrained weights by the tag"),
        ("clip:RN5O", "none", "did you mean: RN50"),
        ("clip:RN50", "IMAGENET1K_V1", "pretrained tag of open_clip RN50 (openai, yfcc15m, cc12m)"),
        ("timmm:resnet10t", "none", "names no model family"),
        ("vit_small_patch8_224", "none", "timm has it: --model timm:vit_small_patch8_224"),
    ],
)
def test_bad_names_and_weights_are_one_line(model, weights, expected, capsys):
    code, errors, captured = run_cli(capsys, "layers", "--model", model, "--weights", weights)
    assert code == 2 and len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in captured.err


def test_offline_default_weights_exit_3_in_one_line(offline, capsys):
    code, errors, _ = run_cli(capsys, "layers", "--model", "timm:vit_small_patch8_224.dino")
    assert code == 3 and len(errors) == 1 and "--weights PATH" in errors[0]


def test_the_sweep_says_an_image_encoder_has_no_class_logits(tiny_clip, tmp_path, capsys):
    import run_sweep

    code = run_sweep.main(["--model", f"clip:{tiny_clip}", "--weights", "none", "--probe", "none",
                           "--warehouse", str(tmp_path / "wh"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert f"clip:{tiny_clip} outputs an embedding, not class logits" in err
    assert "coin-scale dissect" in err and "Traceback" not in err


# --- MAIA's ResNet-152 ---------------------------------------------------------------------------


def test_maia_resnet152_v1_weights_are_selected_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: no network here
    for weights, filename in (("IMAGENET1K_V1", "resnet152-394f9c45.pth"),
                              ("default", "resnet152-f82ba261.pth")):  # fmt: skip
        with pytest.raises(ResourceError) as info:
            resolve_model(ModelSource(model="resnet152", weights=weights))
        assert filename in str(info.value) and "--weights PATH" in str(info.value)


# --- a dissection on Ray -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "layer", "units"),
    [("timm:resnet10t", "layer4", 512), ("clip:TINY", "transformer.resblocks.1", 64)],
)
def test_dissect_on_ray_rebuilds_the_model_on_the_replicas(
    model, layer, units, tiny_clip, ray_cluster, probe_dir, tmp_path, capsys
):
    model = model.replace("TINY", tiny_clip)
    warehouse = str(tmp_path / "wh")
    code = main(["dissect", "--model", model, "--weights", "none", "--layer", layer, "--top-k", "3",
                 "--batch-size", "8", "--no-progress", "--probe", str(probe_dir),
                 "--warehouse", warehouse])  # fmt: skip
    out = capsys.readouterr().out
    model_id = model.replace(":", "-")
    assert code == 0
    assert f"dissected {units} units of {model_id}/{layer} over 37 images (1 unreadable)" in out
    from coin_scale.storage import connect

    con = connect(warehouse)
    counts = con.sql("SELECT count(*), count(DISTINCT unit) FROM exemplars").fetchall()[0]
    assert counts == (3 * units, units)
    assert con.sql("SELECT DISTINCT model FROM unit_stats").fetchall() == [(model_id,)]
    assert model_flag(model_id) == model
