"""MAIA's predictive evaluation on generated images, its pure part: the prompts of a label, and
the score of a unit's activations on the label's images against neutral ones."""

from __future__ import annotations

import math

import pytest
import torch

from coin_scale.eval.generated import (
    NEUTRAL_PROMPTS,
    generated_activations,
    generated_score,
    predictive_prompts,
    unit_prompts,
)


def test_every_prompt_depicts_the_label_and_none_of_the_neutral_ones_do() -> None:
    prompts = predictive_prompts("  striped   cat ")
    assert len(prompts) == 5 and all("striped cat" in p for p in prompts)
    assert not any("cat" in p for p in NEUTRAL_PROMPTS)
    with pytest.raises(ValueError, match="empty label"):
        predictive_prompts("   ")


def test_the_agents_own_test_prompts_come_first() -> None:
    agent = ("a dog on a lawn", "a puppy in the grass")
    assert unit_prompts("dog", agent) == (agent, "agent")
    assert unit_prompts("dog", ()) == (predictive_prompts("dog"), "template")
    s = generated_score([2.0, 3.0], [1.0] * 5, agent, NEUTRAL_PROMPTS, prompts_from="agent")
    assert s.prompts_from == "agent" and "the agent's 2 prompts" in s.summary()


def test_finish_takes_test_prompts_only_with_a_generator() -> None:
    import jsonschema

    from coin_scale.agent.tools import answer_from_arguments, finish_parameters

    answer = {"label": "dog", "description": "dogs", "confidence": 0.5, "evidence": []}
    with_prompts = dict(answer, test_prompts=["a  dog on\ta lawn"])
    jsonschema.validate(with_prompts, finish_parameters(test_prompts=True))
    assert answer_from_arguments(with_prompts).test_prompts == ("a dog on a lawn",)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_prompts, finish_parameters(test_prompts=False))
    with pytest.raises(jsonschema.ValidationError):  # at most five
        jsonschema.validate(dict(answer, test_prompts=["a dog"] * 6), finish_parameters(test_prompts=True))
    assert answer_from_arguments(answer).test_prompts == ()


def test_a_label_that_drives_the_unit_scores_above_chance() -> None:
    s = generated_score([5.0, 6.0, 7.0], [1.0, 2.0, 6.0], ["p"] * 3, ["n"] * 3)
    assert s.mean_positive == 6.0 and s.mean_neutral == 3.0 and s.delta == 3.0
    assert s.auc == pytest.approx((2 + 2.5 + 3) / 9)  # 6 vs 6 counts half
    assert s.cohens_d == pytest.approx(3.0 / math.sqrt((1.0 + 7.0) / 2))
    assert "AUC 0.83" in s.summary()
    flat = generated_score([1.0, 1.0], [1.0, 1.0], ["p"] * 2, ["n"] * 2)
    assert flat.auc == 0.5 and math.isnan(flat.cohens_d) and "d —" in flat.summary()
    with pytest.raises(ValueError, match="positive and neutral"):
        generated_score([], [1.0], [], ["n"])


def test_activations_of_generated_images_are_the_units_reduced_as_dissected() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    pixels = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    got = generated_activations(model, mean, std, "2", "nchw", pixels, [1, 0])
    normed = (pixels.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        out = model(normed).amax(dim=(2, 3))
    assert got.shape == (5, 2)
    assert torch.allclose(torch.from_numpy(got).float(), out[:, [1, 0]], atol=1e-5)
