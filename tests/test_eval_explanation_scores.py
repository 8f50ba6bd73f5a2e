"""Per-explanation scores on a model: predictive AUC / Cohen's d and InterpScore's S, C, R, on a
hand-built model whose units are known colour detectors and a scoring set of flat colour images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coin_scale.chain.faithfulness import ablated_logits
from coin_scale.chain.units import SAEFeatures
from coin_scale.concepts.formula import parse_text
from coin_scale.eval.explanation_scores import MIN_IMAGES, score_explanations
from coin_scale.eval.interventions import perturbed, scaled_logits, unit_activations
from coin_scale.eval.predictive import attribute_concepts, auc, predictive_score, satisfies
from coin_scale.models.preprocess import Preprocess
from coin_scale.probe.scoring_set import ScoringSet
from tests.test_sae_attribution import _identity_sae, _resnet

RGB = {"red": (220, 38, 38), "blue": (35, 80, 220), "green": (40, 165, 60)}
NAMES = ("color=red", "color=blue", "color=green", "color=pink", "shape=square", "shape=star")


class ColourNet(nn.Module):
    """body: channel 0 = red minus the mean of green and blue, channel 1 = green; the head reads
    class 0 from channel 0 and class 1 from channel 1."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 2, 1, bias=False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        with torch.no_grad():
            self.body.weight.copy_(
                torch.tensor([[1.0, -0.5, -0.5], [0.0, 1.0, 0.0]]).view(2, 3, 1, 1)
            )
            self.head[2].weight.copy_(torch.eye(2))
            self.head[2].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def scoring_set(n: int = 60, seed: int = 0) -> ScoringSet:
    rng = np.random.default_rng(seed)
    colours = [("red", "blue", "green")[i % 3] for i in range(n)]
    shapes = [("square", "star")[int(s)] for s in rng.integers(0, 2, n)]
    pixels = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
    for i, colour in enumerate(colours):
        jitter = rng.integers(-15, 16, 3)
        value = np.clip(np.array(RGB[colour]) + jitter, 0, 255)
        pixels[i] = torch.tensor(value, dtype=torch.uint8).view(3, 1, 1)
    attributes = tuple({"color": c, "shape": s} for c, s in zip(colours, shapes, strict=True))
    return ScoringSet(pixels=pixels, attributes=attributes, names=NAMES, source="test")


PRE = Preprocess(resize=8, crop=8)


def test_auc_counts_ties_half_and_matches_known_values():
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert auc([2.0, 0.0], [1.0]) == 0.5
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_predictive_score_cuts_where_as_many_images_as_satisfy_are_marked():
    score = predictive_score(np.array([5.0, 4.0, 1.0]), np.array([3.0, 0.0, 0.0, 0.0]))
    assert score.auc == pytest.approx(11 / 12)  # 1 > 0, 0, 0 but not 3
    # The top three are 5, 4, 3: two of the three satisfy.
    assert score.detection.f1 == pytest.approx(2 / 3) and score.detection.predicted == 3
    assert (score.n_satisfying, score.n_other) == (3, 4)


def test_formulas_are_evaluated_on_ground_truth_attributes():
    attributes = [{"color": "red", "shape": "star"}, {"color": "blue", "shape": "star"}]
    matrix = attribute_concepts(attributes, NAMES)
    assert matrix.shape == (len(NAMES), 2) and matrix[0].tolist() == [True, False]
    formula = parse_text("(shape=star AND NOT color=red)", NAMES)
    assert satisfies(formula, attributes, NAMES).tolist() == [False, True]


def test_a_true_explanation_scores_high_and_a_false_one_low():
    model, scoring = ColourNet(), scoring_set()
    scores = score_explanations(
        model, "body", "nchw", PRE, [(0, "color=red"), (1, "color=red"), (1, "(color=green OR color=blue)")],
        scoring,
    )  # fmt: skip
    red, wrong, green_or_blue = scores
    assert red.predictive.auc == 1.0 and red.predictive.detection.f1 == 1.0
    assert red.interp.S > 0.99 and red.interp.parts == ("S", "C", "R")
    assert "H not measured" in red.interp.notes[0]
    # Zeroing channel 0 moves the red images' logits, doubling it moves them too: C > 0.
    assert 0.2 < red.interp.C < 1.0
    assert 0.0 < red.interp.R <= 1.0
    assert wrong.predictive.auc < 0.5 and wrong.interp.S < 0.5
    assert green_or_blue.predictive.auc > 0.5
    assert red.interp.score > wrong.interp.score


def test_causality_through_a_linear_head_equals_the_forward_passes(monkeypatch):
    """A layer read by `avgpool -> fc` (a ResNet's layer4) gets C from the one pass that measures
    the activations: scaling a unit moves the logits by a known vector. The scores equal those of
    the ablation and amplification passes."""
    import coin_scale.eval.explanation_scores as scores_module

    model, scoring = _resnet().eval(), scoring_set(48)
    scoring = ScoringSet(
        pixels=torch.nn.functional.interpolate(scoring.pixels.float(), size=32).to(torch.uint8),
        attributes=scoring.attributes, names=scoring.names, source="test",
    )  # fmt: skip
    pre = Preprocess(resize=32, crop=32)
    explained = [(3, "color=red"), (7, "color=blue"), (100, "(color=green OR color=blue)")]
    calls: list[float] = []
    real = scores_module.scaled_logits
    monkeypatch.setattr(
        scores_module, "scaled_logits", lambda *a: calls.append(a[-1]) or real(*a)
    )  # fmt: skip
    exact = score_explanations(model, "layer4", "nchw", pre, explained, scoring, seed=1)
    assert calls == []  # no ablation or amplification pass
    monkeypatch.setattr(scores_module, "pooled_linear_head", lambda *_: None)
    passes = score_explanations(model, "layer4", "nchw", pre, explained, scoring, seed=1)
    assert calls == [0.0, 2.0] * 3
    for e, p in zip(exact, passes, strict=True):
        c_exact, c_passes = e.interp.C, p.interp.C
        assert c_exact == pytest.approx(c_passes, rel=1e-5, abs=1e-12)
        assert (e.interp.S, e.interp.R, e.predictive) == (p.interp.S, p.interp.R, p.predictive)
    assert sum(0 < e.interp.C < 1 for e in exact) >= 2  # not all dead units


def test_unscorable_explanations_say_why():
    scores = score_explanations(
        ColourNet(), "body", "nchw", PRE,
        [(0, None), (0, "label=tabby"), (0, "color=pink")], scoring_set(),
    )  # fmt: skip
    notes = [s.note for s in scores]
    assert all(s.predictive is None for s in scores)
    assert notes[0] == "no formula to score"
    assert notes[1] == "formula not over rendered attributes"
    assert notes[2].startswith("0 of 60 scoring images satisfy") and str(MIN_IMAGES) in notes[2]


def test_scaling_a_unit_by_zero_is_ablating_it_for_channels_and_sae_features():
    model, sae = _resnet(), _identity_sae(512)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    zeroed = ablated_logits(model, x, "layer4", "nchw", [5])
    torch.testing.assert_close(scaled_logits(model, "layer4", "nchw", x, 5, 0.0), zeroed)
    by_feature = scaled_logits(model, "layer4", SAEFeatures(sae), x, 5, 2.0)
    by_channel = scaled_logits(model, "layer4", "nchw", x, 5, 2.0)
    torch.testing.assert_close(by_feature, by_channel, rtol=1e-5, atol=1e-5)
    acts = unit_activations(model, "layer4", SAEFeatures(sae), x, [5, 9])
    torch.testing.assert_close(acts, unit_activations(model, "layer4", "nchw", x, [5, 9]))


def test_perturbations_are_seeded_clipped_and_grow_in_strength():
    images = torch.full((2, 3, 16, 16), 0.5)
    images[:, :, :8] = 1.0
    a, b = perturbed(images, seed=1), perturbed(images, seed=1)
    assert list(a) == [
        "noise 0.05",
        "noise 0.1",
        "noise 0.2",
        "blur 0.005",
        "blur 0.01",
        "blur 0.02",
    ]
    for name in a:
        torch.testing.assert_close(a[name], b[name])
        assert a[name].min() >= 0.0 and a[name].max() <= 1.0
    change = [float((a[n] - images).abs().mean()) for n in ("noise 0.05", "noise 0.1", "noise 0.2")]
    assert change == sorted(change)


def test_a_narrow_explanation_gets_scenes_rendered_to_satisfy_it():
    from types import SimpleNamespace

    from coin_scale.concepts.formula import parse_text
    from coin_scale.eval.predictive import satisfying_targets
    from coin_scale.sweep.scoring import TOP_UP, _too_narrow, render_satisfying
    from unity_pool import vocab

    names = tuple(f"{a}={v}" for a, values in vocab.ATTRIBUTES.items() for v in values)
    formula = "((color=red AND shape=star) AND NOT light=dim)"
    parsed = parse_text(formula, names)
    values = {k: tuple(v) for k, v in vocab.ATTRIBUTES.items()}
    targets = satisfying_targets(parsed, names, 5, np.random.default_rng(0), values)
    assert len(targets) == 5 and all(satisfies(parsed, [t], names)[0] for t in targets)

    base = ScoringSet(
        pixels=torch.zeros(10, 3, 32, 32, dtype=torch.uint8),
        attributes=tuple({"color": "blue", "shape": "square"} for _ in range(10)),
        names=names, source="test",
    )  # fmt: skip
    assert _too_narrow(formula, base) and not _too_narrow("color=blue", base)
    payload = SimpleNamespace(preprocess=Preprocess(resize=32, crop=32))
    extended = render_satisfying(formula, base, payload, seed=0, single_object=True)  # type: ignore[arg-type]
    added = extended.attributes[10:]
    assert MIN_IMAGES <= len(added) <= TOP_UP and extended.pixels.shape == (10 + len(added), 3, 32, 32)
    assert satisfies(parsed, list(added), names).all()
    assert {a["n_objects"] for a in added} == {1}
