"""The chain's core without Ray: which layers may form a chain, how a unit's drivers are ranked,
and what ablating the chain's units costs the prediction."""

from __future__ import annotations

import pytest
import torch
import torchvision

from coin_scale.chain.attribution import unit_contributions
from coin_scale.chain.faithfulness import (
    ablated_logits,
    deletion_ks,
    faithfulness_scores,
    margin_ratio,
    predicted_outcome,
    unit_means,
)
from coin_scale.chain.graph import LayerPathError, chain_edges, check_layer_path, unit_drivers
from tests.test_attribution import _seeded


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _seeded(torchvision.models.resnet18, num_classes=10)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _pooled(model: torch.nn.Module, x: torch.Tensor, layer: str, edit=None) -> torch.Tensor:
    """Mean over space of `layer`'s output, with `edit` applied to layer3's output first."""
    out = {}
    hooks = [getattr(model, layer).register_forward_hook(lambda _m, _i, o: out.setdefault("o", o))]
    if edit is not None:
        hooks.append(model.layer3.register_forward_hook(lambda _m, _i, o: edit(o)))
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return out["o"].mean(dim=(2, 3))[0].double()


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (["layer3", "layer2"], "must go from the input towards the output"),
        (["layer2", "layer3", "layer2"], "appears twice"),
        (["layer4.0.conv1", "layer4.0.downsample"], "does not feed layer layer4.0.downsample"),
    ],
)
def test_layers_that_cannot_form_a_chain_are_refused(model, image, layers, message):
    with pytest.raises(LayerPathError, match=message):
        check_layer_path(model, image, layers)


def test_consecutive_blocks_form_a_chain(model, image):
    check_layer_path(model, image, ["layer1", "layer2", "layer3", "layer4"])
    check_layer_path(model, image, ["layer2", "layer4"])  # skipping a block is still a path


def test_integrated_gradients_are_complete(model, image):
    """IG from a zero baseline sums to pooled(x) - pooled(layer3 zeroed), per target unit."""
    units = [3, 9]
    ig = unit_drivers(model, image, ("layer3", "nchw"), ("layer4", "nchw"), units,
                      "integrated_gradients", steps=32)  # fmt: skip
    want = _pooled(model, image, "layer4") - _pooled(model, image, "layer4", edit=lambda o: o * 0)
    torch.testing.assert_close(ig.sum(dim=1), want[units], rtol=2e-3, atol=2e-3)


def test_gradient_x_activation_matches_a_direct_computation(model, image):
    got = unit_drivers(model, image, ("layer3", "nchw"), ("layer4", "nchw"), [5])[0]
    acts = {}
    h3 = model.layer3.register_forward_hook(lambda _m, _i, o: acts.setdefault("3", o))
    h4 = model.layer4.register_forward_hook(lambda _m, _i, o: acts.setdefault("4", o))
    model(image)
    h3.remove()
    h4.remove()
    (grad,) = torch.autograd.grad(acts["4"].mean(dim=(2, 3))[0, 5], acts["3"])
    torch.testing.assert_close(got, (grad * acts["3"])[0].sum(dim=(1, 2)).double())


def test_chain_edges_walk_down_from_the_selected_units(model, image):
    layers = [("layer2", "nchw"), ("layer3", "nchw"), ("layer4", "nchw")]
    edges = chain_edges(model, image, layers, [7, 11], fanout=2)
    top = [e for e in edges if e.target_layer == "layer4"]
    assert {e.target_unit for e in top} == {7, 11} and all(e.source_layer == "layer3" for e in top)
    assert len(top) <= 4 and all(e.weight > 0 for e in edges)
    middle = {e.source_unit for e in top}
    lower = [e for e in edges if e.target_layer == "layer3"]
    assert {e.target_unit for e in lower} <= middle and all(e.source_layer == "layer2" for e in lower)
    # each target keeps its strongest drivers, in order
    drivers = unit_drivers(model, image, ("layer3", "nchw"), ("layer4", "nchw"), [7])[0]
    assert [e.source_unit for e in top if e.target_unit == 7] == drivers.argsort(descending=True)[:2].tolist()


def test_zeroing_the_chain_units_removes_exactly_their_contribution(model, image):
    c = unit_contributions(model, "layer4", "nchw", image)
    chain = [unit for unit, _ in c.top(8)]
    logits = ablated_logits(model, image, "layer4", "nchw", chain)[0]
    want = c.logit - sum(value for _, value in c.top(8))
    assert float(logits[c.class_index]) == pytest.approx(want, abs=1e-4)


def test_mean_ablation_sets_each_unit_to_its_mean(model, image):
    batches = [torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(s)) for s in (2, 3)]
    means = unit_means(model, batches, {"layer4": "nchw"})["layer4"]
    direct = torch.stack([_pooled(model, b[i : i + 1], "layer4") for b in batches for i in range(4)])
    torch.testing.assert_close(means.double(), direct.mean(dim=0), rtol=1e-5, atol=1e-5)
    # through the linear head, setting unit u to its mean moves the logit by w_u (mean_u - act_u)
    c = unit_contributions(model, "layer4", "nchw", image)
    act = _pooled(model, image, "layer4")
    logits = ablated_logits(model, image, "layer4", "nchw", [4], means)[0]
    w = model.fc.weight[c.class_index, 4].detach().double()
    assert float(logits[c.class_index]) == pytest.approx(c.logit + float(w * (means[4] - act[4])), abs=1e-4)


def test_faithfulness_compares_the_chain_with_random_and_most_active_units(model, image):
    c = unit_contributions(model, "layer4", "nchw", image)
    chain = [unit for unit, _ in c.top(16)]
    means = unit_means(model, [torch.randn(4, 3, 64, 64)], {"layer4": "nchw"})["layer4"]
    scores = faithfulness_scores(model, image, "layer4", "nchw", c.class_index, chain, [1, 8],
                                 means=means, draws=5, seed=0)  # fmt: skip
    assert len(scores) == 2 * 2 * 3  # k x ablation x selection
    random = [s for s in scores if s.selection == "random"]
    assert all(s.draws == 5 and s.margin_drop_std >= 0 for s in random)
    chain8 = next(s for s in scores if (s.selection, s.k, s.ablation) == ("chain", 8, "zero"))
    assert chain8.logit_drop == pytest.approx(sum(v for _, v in c.top(8)), abs=1e-4)
    assert margin_ratio(scores, 8) == pytest.approx(
        chain8.margin_drop / next(s for s in random if (s.k, s.ablation) == (8, "zero")).margin_drop
    )
    # the same seed draws the same random sets
    again = faithfulness_scores(model, image, "layer4", "nchw", c.class_index, chain, [1, 8],
                                means=means, draws=5, seed=0)  # fmt: skip
    assert again == scores


def test_a_linear_head_gives_the_ablations_of_the_forward_passes_without_them(
    model, image, monkeypatch
):
    """layer4 feeds avgpool -> fc: the faithfulness scores come from one pass, and equal the
    scores of one ablated pass per selection (the path of every other layer)."""
    import coin_scale.chain.faithfulness as faithfulness

    c = unit_contributions(model, "layer4", "nchw", image)
    chain = [unit for unit, _ in c.top(16)]
    means = unit_means(model, [torch.randn(4, 3, 64, 64)], {"layer4": "nchw"})["layer4"]
    passes: list[int] = []
    real = faithfulness.ablated_logits
    monkeypatch.setattr(
        faithfulness, "ablated_logits", lambda m, x, *a: passes.append(len(x)) or real(m, x, *a)
    )  # fmt: skip

    def scores():
        return faithfulness_scores(model, image, "layer4", "nchw", c.class_index, chain, [1, 8],
                                   means=means, draws=5, seed=0)  # fmt: skip

    exact = scores()
    assert passes == []
    monkeypatch.setattr(faithfulness, "pooled_linear_head", lambda *_: None)
    forward = scores()
    assert passes == [1, 1, 5] * 4  # chain, activation, random draws; per k and ablation
    for e, f in zip(exact, forward, strict=True):
        assert (e.layer, e.ablation, e.selection, e.k, e.draws) == (
            f.layer, f.ablation, f.selection, f.k, f.draws
        )  # fmt: skip
        for name in ("logit_drop", "probability_drop", "margin_drop", "margin_drop_std"):
            assert getattr(e, name) == pytest.approx(getattr(f, name), rel=1e-4, abs=1e-4)


def test_outcome_and_deletion_ks():
    out = predicted_outcome(torch.tensor([1.0, 3.0, 2.0]), 1)
    assert out.logit == 3.0 and out.margin == 1.0 and 0.5 < out.probability < 1
    assert deletion_ks(16, also=[8]) == [1, 2, 4, 8, 16]
    assert deletion_ks(12, also=[3]) == [1, 2, 3, 4, 8, 12]
    assert deletion_ks(1) == [1]


def test_a_layer_whose_output_the_model_drops_cannot_end_a_chain():
    class SideBranch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Conv2d(3, 4, 3)
            self.side = torch.nn.Conv2d(4, 4, 1)  # computed, then thrown away
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            self.side(h)
            return self.head(h.mean(dim=(2, 3)))

    model = SideBranch().eval()
    x = torch.randn(1, 3, 16, 16)
    check_layer_path(model, x, ["body"])
    with pytest.raises(LayerPathError, match="layer side does not feed the model's output"):
        check_layer_path(model, x, ["body", "side"])
