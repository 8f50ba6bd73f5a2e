"""SAE config, model, checkpoints and layer replacement (CPU, no training)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from coin_scale.sae import (
    SAEConfig,
    SparseAutoencoder,
    conv_from_tokens,
    load_sae,
    replaced_forward,
    replacement_metrics,
    save_sae,
    tokens_from_conv,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices run faster on one thread, and much faster when another suite shares the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**overrides) -> SAEConfig:
    base = dict(model="tiny", layer="layer3", d_in=16, expansion=4, k=4, batch_tokens=64)
    return SAEConfig(**{**base, **overrides})


def random_sae(kind="topk", d_in=16, d_sae=64, k=4, seed=0) -> SparseAutoencoder:
    """An SAE with non-trivial biases, input scale and threshold."""
    gen = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(d_in, d_sae, k, kind, generator=gen)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=gen))
        sae.input_scale.fill_(3.7)
        sae.threshold.fill_(0.4)
    return sae.eval()


# -- config -------------------------------------------------------------------------------


def test_config_rejects_k_larger_than_the_dictionary():
    with pytest.raises(ValueError, match=r"--k 300 is larger than the dictionary of 256 latents"):
        SAEConfig(model="m", layer="l", d_in=32, expansion=8, k=300)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("d_in", 0, "d_in must be >= 1"),
        ("k", 0, "k must be >= 1"),
        ("steps", -1, "steps must be >= 1"),
        ("lr", 0.0, "lr must be > 0"),
        ("kind", "relu", "kind must be one of"),
        ("aux_k", 1000, "aux_k must be between 1"),
        ("dead_after_tokens", 10, "dead_after_tokens .* must be at least batch_tokens"),
        ("layer", "", "model and layer"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{field: value})


def test_config_round_trips_and_defaults():
    cfg = config(kind="batchtopk")
    assert cfg.d_sae == 64
    assert cfg.effective_aux_k == 8
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown SAE config fields"):
        SAEConfig.from_dict({**cfg.to_dict(), "colour": "red"})


# -- tokens and model ---------------------------------------------------------------------


def test_tokens_from_conv_round_trip():
    acts = torch.randn(2, 5, 3, 4)
    tokens = tokens_from_conv(acts)
    assert tokens.shape == (2 * 3 * 4, 5)
    torch.testing.assert_close(tokens[1 * 12 + 2 * 4 + 3], acts[1, :, 2, 3])
    torch.testing.assert_close(conv_from_tokens(tokens, 2, 3, 4), acts)
    channels_last = acts.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(tokens_from_conv(channels_last), tokens)


def test_topk_keeps_exactly_k_per_token():
    sae = random_sae()
    codes, pre = sae.encode(torch.randn(50, 16) * 5)
    assert ((codes != 0).sum(dim=1) == 4).all()
    assert pre.shape == codes.shape == (50, 64)
    kept = torch.relu(pre).topk(4, dim=1).values
    torch.testing.assert_close(codes.topk(4, dim=1).values, kept)


def test_batchtopk_keeps_k_times_batch_in_training_and_thresholds_at_inference():
    sae = random_sae("batchtopk").train()
    x = torch.randn(40, 16) * 5
    codes, pre = sae.encode(x)
    assert int((codes != 0).sum()) == 4 * 40
    assert (codes != 0).sum(dim=1).float().std() > 0  # not k per token
    smallest_kept = float(codes.detach()[codes != 0].min()) * float(sae.input_scale)
    assert float(sae.threshold) == pytest.approx(smallest_kept, rel=1e-5)
    sae.eval()
    codes, pre = sae.encode(x)
    expected = torch.relu(pre) * (torch.relu(pre) * sae.input_scale > sae.threshold)
    torch.testing.assert_close(codes, expected)


def test_batchtopk_threshold_gives_k_per_token_at_inference_in_raw_units(tmp_path):
    """The inference threshold (the moving mean of each training batch's smallest kept code) is
    the batch top-k cut of the training distribution: on fresh tokens of that distribution, with
    an input scale far from 1 and after the checkpoint folds it into the threshold, inference
    keeps about k latents per token and nearly the same latents as batch top-k does."""
    gen = torch.Generator().manual_seed(0)
    sae = random_sae("batchtopk", seed=1)
    with torch.no_grad():
        sae.input_scale.fill_(0.05)  # raw activations ~20x the normalised ones
        sae.threshold.zero_()
    sae.train()

    def tokens(n: int) -> torch.Tensor:  # raw tokens, norms spread over a decade
        return torch.randn(n, 16, generator=gen) * 20 * (torch.rand(n, 1, generator=gen) * 3 + 0.3)

    for _ in range(300):  # threshold updates only (no optimiser): weights stay fixed
        sae.encode(tokens(256))
    fresh = tokens(4096)
    batch_codes = sae.encode(fresh)[0].detach()  # still training: batch top-k of the whole set
    path = tmp_path / "btk.safetensors"
    save_sae(path, sae, config(kind="batchtopk"), {})
    loaded = load_sae(path)[0]
    assert float(loaded.input_scale) == 1.0 and not loaded.training
    codes = loaded.encode(fresh)[0].detach()
    l0 = float((codes != 0).sum(dim=1).float().mean())
    assert l0 == pytest.approx(4.0, rel=0.1)
    same = ((codes != 0) & (batch_codes != 0)).sum() / (batch_codes != 0).sum()
    assert float(same) > 0.95
    both = (codes != 0) & (batch_codes != 0)  # a kept latent keeps its value, in raw units
    torch.testing.assert_close(codes[both], batch_codes[both], rtol=1e-4, atol=1e-3)


def test_folding_the_input_scale_keeps_codes_and_reconstructions():
    for kind in ("topk", "batchtopk"):
        sae = random_sae(kind)
        folded = sae.folded()
        assert float(folded.input_scale) == 1.0
        x = torch.randn(30, 16) * 2 + 1
        torch.testing.assert_close(folded(x), sae(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded.encode(x)[0], sae.encode(x)[0], rtol=1e-5, atol=1e-5)


def test_decoder_gradient_projection_and_renormalisation():
    sae = random_sae()
    sae.w_dec.grad = torch.randn_like(sae.w_dec)
    sae.remove_parallel_gradient()
    parallel = (sae.w_dec.grad * sae.w_dec).sum(dim=1)
    torch.testing.assert_close(parallel, torch.zeros(64), atol=1e-5, rtol=0)
    with torch.no_grad():
        sae.w_dec.mul_(torch.rand(64, 1) + 0.5)
    sae.normalise_decoder()
    torch.testing.assert_close(sae.w_dec.norm(dim=1), torch.ones(64))


# -- checkpoints --------------------------------------------------------------------------


def test_checkpoint_round_trip_folds_the_scale(tmp_path):
    cfg = config(k=4, expansion=4)
    sae = random_sae()
    path = tmp_path / "sae" / "layer3.safetensors"
    save_sae(path, sae, cfg, {"fvu": 0.05, "dead_fraction": None})
    assert [p.name for p in path.parent.iterdir()] == ["layer3.safetensors"]
    loaded, loaded_cfg, metrics = load_sae(path, expect_model="tiny", expect_layer="layer3")
    assert loaded_cfg == cfg
    assert metrics == {"fvu": 0.05, "dead_fraction": None}
    assert float(loaded.input_scale) == 1.0 and not loaded.training
    x = torch.randn(25, 16) * 3
    torch.testing.assert_close(loaded(x), sae(x), rtol=1e-5, atol=1e-5)


def test_checkpoint_for_another_layer_or_width_is_refused(tmp_path):
    path = tmp_path / "sae.safetensors"
    save_sae(path, random_sae(), config(), {})
    with pytest.raises(
        ValueError,
        match=r"trained on tiny layer3 \(16 channels\); this run uses tiny layer4 \(16\)",
    ):
        load_sae(path, expect_layer="layer4")
    with pytest.raises(ValueError, match=r"this run uses tiny layer3 \(512\)"):
        load_sae(path, expect_d_in=512)
    with pytest.raises(ValueError, match=r"this run uses resnet18 layer3"):
        load_sae(path, expect_model="resnet18")


def test_a_file_that_is_not_an_sae_checkpoint_is_refused(tmp_path):
    from safetensors.torch import save_file

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="is not an SAE checkpoint"):
        load_sae(garbage)
    other = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError, match="is not an SAE checkpoint"):
        load_sae(other)
    with pytest.raises(FileNotFoundError):
        load_sae(tmp_path / "missing.safetensors")


def test_save_refuses_an_sae_that_does_not_match_its_config(tmp_path):
    with pytest.raises(ValueError, match="does not match its config"):
        save_sae(tmp_path / "x.safetensors", random_sae(), config(k=5), {})


# -- replacement --------------------------------------------------------------------------


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1),
            relu1=nn.ReLU(),
            layer3=nn.Conv2d(8, 16, 3, stride=2, padding=1),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(16, 10),
        )
    ).eval()


def identity_sae(d_in: int) -> SparseAutoencoder:
    """Latents relu(x_i) and relu(-x_i): with k = d_in the reconstruction is exactly x."""
    sae = SparseAutoencoder(d_in, 2 * d_in, d_in)
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.w_enc.copy_(torch.cat([eye, -eye]))
        sae.w_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def test_an_exact_reconstruction_keeps_the_prediction():
    model, images = tiny_cnn(), torch.randn(6, 3, 12, 12)
    with torch.inference_mode():
        original = model(images)
        replaced = replaced_forward(model, "layer3", identity_sae(16), images)
    torch.testing.assert_close(replaced, original, rtol=1e-5, atol=1e-5)
    metrics = replacement_metrics(model, "layer3", identity_sae(16), [images[:4], images[4:]])
    assert metrics["top1_agreement"] == 1.0
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["images"] == 6


def test_a_random_sae_changes_the_output_and_the_hook_is_removed():
    model, images = tiny_cnn(), torch.randn(8, 3, 12, 12)
    sae = random_sae(d_in=16, d_sae=32, k=2)
    with torch.inference_mode():
        original = model(images)
        replaced = replaced_forward(model, "layer3", sae, images)
        after = model(images)
    assert not torch.allclose(replaced, original)
    torch.testing.assert_close(after, original)
    metrics = replacement_metrics(model, "layer3", sae, [images])
    assert metrics["kl"] > 0


def test_replacement_refuses_another_width_or_layer():
    model, images = tiny_cnn(), torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="has 16 channels, the SAE takes 8"):
        replaced_forward(model, "layer3", identity_sae(8), images)
    with pytest.raises(ValueError, match="no module 'layer9'"):
        replaced_forward(model, "layer9", identity_sae(16), images)
