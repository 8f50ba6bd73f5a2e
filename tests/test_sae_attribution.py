"""SAE features' contributions to a class logit: exact through the decoder and a linear head, the
reconstruction error as its own term."""

from __future__ import annotations

import pytest
import torch
import torchvision

from coin_scale.chain.attribution import unit_contributions
from coin_scale.chain.faithfulness import ablated_logits, faithfulness_scores
from coin_scale.chain.sae_attribution import DECODER_BIAS_TERM, ERROR_TERM, sae_contributions
from coin_scale.chain.units import SAEFeatures
from coin_scale.models.sae import SparseAutoencoder, tokens_from_conv
from tests.test_attribution import _seeded


def _resnet() -> torch.nn.Module:
    return _seeded(torchvision.models.resnet18, num_classes=10)


def _identity_sae(d: int) -> SparseAutoencoder:
    """k = d and the identity as encoder and decoder: every feature is one channel."""
    sae = SparseAutoencoder(d, d, d)
    with torch.no_grad():
        sae.w_enc.copy_(torch.eye(d))
        sae.w_dec.copy_(torch.eye(d))
    return sae.eval()


def _sae(d_in: int, d_sae: int, k: int, seed: int = 0) -> SparseAutoencoder:
    gen = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(d_in, d_sae, k, generator=gen)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d_in, generator=gen) * 0.1)
        sae.b_enc.copy_(torch.randn(d_sae, generator=gen) * 0.1)
    return sae.eval()


def test_features_bias_and_error_terms_sum_to_the_logit_exactly():
    model, sae = _resnet(), _sae(512, 1024, 16)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    c = sae_contributions(model, "layer4", x, sae)
    logits = model(x)
    assert c.method == "exact_sae_decoder" and c.exact and c.contributions.shape == (1024,)
    assert c.class_index == int(logits.argmax())
    terms = dict(c.terms)
    assert set(terms) == {DECODER_BIAS_TERM, ERROR_TERM}
    total = c.contributions.sum() + c.head_bias + terms[DECODER_BIAS_TERM] + terms[ERROR_TERM]
    torch.testing.assert_close(total, logits[0, c.class_index].double(), rtol=1e-6, atol=1e-6)
    # a random SAE reconstructs badly: the error term is large and honestly reported
    assert abs(terms[ERROR_TERM]) > 1e-3
    # at most k features are active per position, so at most k * positions are non-zero
    assert int((c.contributions != 0).sum()) <= 16 * 2 * 2


def test_a_perfect_dictionary_leaves_no_error_and_matches_neuron_contributions():
    """With the identity as decoder and k = d_in every feature is one neuron: same contributions."""
    model, sae = _resnet(), _identity_sae(512)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    by_feature = sae_contributions(model, "layer4", x, sae)
    by_neuron = unit_contributions(model, "layer4", "nchw", x)
    # layer4 follows a ReLU: every activation is >= 0, so the identity SAE keeps all of them
    torch.testing.assert_close(by_feature.contributions, by_neuron.contributions)
    assert dict(by_feature.terms)[ERROR_TERM] == pytest.approx(0.0, abs=1e-9)


def test_without_a_linear_head_the_split_uses_the_gradient():
    model, sae = _resnet(), _sae(256, 512, 8)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    c = sae_contributions(model, "layer3", x, sae, class_index=4)
    assert c.method == "grad_x_activation" and not c.exact and c.head_bias is None
    assert c.class_index == 4 and c.contributions.shape == (512,)
    # the three parts add up to the neurons' gradient x activation (same first-order split)
    neurons = unit_contributions(model, "layer3", "nchw", x, class_index=4).contributions.sum()
    total = c.contributions.sum() + sum(v for _, v in c.terms)
    torch.testing.assert_close(total, neurons, rtol=1e-5, atol=1e-5)


def test_an_sae_of_another_width_is_refused():
    with pytest.raises(ValueError, match="takes 256 channels"):
        sae_contributions(_resnet(), "layer4", torch.randn(1, 3, 64, 64), _sae(256, 512, 8))


def test_codes_are_the_ones_a_dissection_ranks_by():
    model, sae = _resnet(), _sae(512, 1024, 16)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    c = sae_contributions(model, "layer4", x, sae)
    acts = {}
    handle = model.layer4.register_forward_hook(lambda _m, _i, out: acts.setdefault("o", out))
    with torch.inference_mode():
        logits = model(x)
    handle.remove()
    codes = sae.encode(tokens_from_conv(acts["o"]))[0].double().mean(dim=0)
    weight = model.fc.weight[int(logits.argmax())].double()
    torch.testing.assert_close(c.contributions, codes * (sae.w_dec.double() @ weight))


def test_zeroing_sae_features_removes_exactly_their_contribution():
    model, sae = _resnet(), _sae(512, 1024, 16)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    c = sae_contributions(model, "layer4", x, sae)
    top = [unit for unit, _ in c.top(5)]
    logits = ablated_logits(model, x, "layer4", SAEFeatures(sae), top)[0]
    want = c.logit - sum(value for _, value in c.top(5))
    assert float(logits[c.class_index]) == pytest.approx(want, abs=1e-4)
    scores = faithfulness_scores(model, x, "layer4", SAEFeatures(sae), c.class_index, top, [5], draws=4)
    chain = next(s for s in scores if s.selection == "chain")
    assert chain.logit_drop == pytest.approx(sum(value for _, value in c.top(5)), abs=1e-4)


def test_with_an_identity_dictionary_feature_ablation_is_channel_ablation():
    model, sae = _resnet(), _identity_sae(512)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    sets = torch.tensor([[1, 2, 3], [10, 20, 30]])
    means = torch.rand(512)
    for values in (None, means):
        by_feature = ablated_logits(model, x, "layer4", SAEFeatures(sae), sets, values)
        by_channel = ablated_logits(model, x, "layer4", "nchw", sets, values)
        torch.testing.assert_close(by_feature, by_channel, rtol=1e-5, atol=1e-5)
