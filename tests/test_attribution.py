"""Selecting the units that drive a prediction: exact for a linear head, grad x act otherwise."""

from __future__ import annotations

import torch
import torchvision

from coin_scale.chain.attribution import pooled_linear_head, unit_contributions
from coin_scale.models import describe_layers
from coin_scale.models.layers import last_block


def _seeded(builder, **kwargs):
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = builder(**kwargs).eval()
    torch.random.set_rng_state(gen_state)
    return model


def test_resnet_contributions_plus_bias_sum_to_the_logit():
    model = _seeded(torchvision.models.resnet18)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    c = unit_contributions(model, "layer4", "nchw", x)
    logits = model(x)
    assert c.method == "exact_linear" and c.contributions.shape == (512,)
    assert c.class_index == int(logits.argmax())
    torch.testing.assert_close(
        c.contributions.sum() + c.head_bias, logits[0, c.class_index].double(), rtol=1e-5, atol=1e-5
    )
    top = c.top(3)
    assert [v for _, v in top] == sorted([v for _, v in top], reverse=True) and top[0][1] > 0
    assert all(v < 0 for _, v in c.top(3, negative=True))


def test_other_layers_and_heads_use_gradient_x_activation():
    model = _seeded(torchvision.models.resnet18)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert pooled_linear_head(model, "layer3") is None
    c = unit_contributions(model, "layer3", "nchw", x, class_index=5)
    assert c.method == "grad_x_activation" and c.class_index == 5 and c.contributions.shape == (256,)
    vgg = _seeded(torchvision.models.vgg11, num_classes=4)
    c = unit_contributions(vgg, "features", "nchw", torch.randn(1, 3, 64, 64))
    assert c.contributions.shape == (512,) and c.head_bias is None


def test_last_block_is_the_block_before_the_classifier():
    for builder, want in [(torchvision.models.resnet18, "layer4"), (torchvision.models.vgg11, "features")]:
        model = _seeded(builder)
        assert last_block(model, describe_layers(model, "x", 64)).name == want
