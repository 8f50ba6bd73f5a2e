"""Soft-WPMI matching of units to concepts, checked on planted similarity matrices."""

from __future__ import annotations

import pytest
import torch

from coin_scale.concepts.matching import MatchConfig, match_concepts, soft_wpmi


def _similarity(images: int, concepts: int, seed: int) -> torch.Tensor:
    """Cosine similarities like an image-text model's: around 0.2, a few hundredths apart."""
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.03 * torch.randn(images, concepts, generator=g)


def _units_from(similarity: torch.Tensor, concepts: list[int], noise: float, seed: int) -> torch.Tensor:
    """Units whose activation is a concept's similarity profile plus noise (and a ReLU)."""
    g = torch.Generator().manual_seed(seed)
    profiles = similarity[:, concepts]
    scale = profiles.std(dim=0, keepdim=True)
    return torch.relu(profiles - 0.2 + noise * scale * torch.randn(profiles.shape, generator=g))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_unit_built_from_a_concepts_profile_gets_that_concept_back(seed):
    similarity = _similarity(600, 80, seed)
    planted = list(range(0, 80, 2))  # 40 units, each from its own concept
    activations = _units_from(similarity, planted, noise=0.5, seed=seed + 10)
    found = [m.concepts[0] for m in match_concepts(similarity, activations)]
    hits = sum(f == p for f, p in zip(found, planted, strict=True))
    assert hits / len(planted) >= 0.95, (hits, len(planted))


def test_the_prior_keeps_a_concept_true_of_every_image_from_winning_every_unit():
    similarity = _similarity(600, 40, seed=3)
    similarity[:, 0] += 0.08  # "a photo": more similar to every image than anything else
    planted = list(range(1, 40))
    activations = _units_from(similarity, planted, noise=0.5, seed=4)
    with_prior = [m.concepts[0] for m in match_concepts(similarity, activations)]
    without = [m.concepts[0] for m in match_concepts(similarity, activations, config=MatchConfig(lam=0.0))]
    assert sum(f == p for f, p in zip(with_prior, planted, strict=True)) >= 0.95 * len(planted)
    assert without.count(0) > len(planted) // 2  # plain likelihood: the generic concept wins


def test_only_the_ranking_of_a_units_images_matters():
    similarity = _similarity(300, 30, seed=5)
    activations = _units_from(similarity, list(range(30)), noise=1.0, seed=6)
    before = soft_wpmi(similarity, activations)
    after = soft_wpmi(similarity, torch.exp(3 * activations) + 7)  # any increasing map
    torch.testing.assert_close(before, after)


def test_a_few_units_are_matched_against_the_whole_layers_prior():
    similarity = _similarity(300, 30, seed=7)
    activations = _units_from(similarity, list(range(30)), noise=1.0, seed=8)
    every = match_concepts(similarity, activations, keep=3)
    some = match_concepts(similarity, activations, [4, 17], keep=3)
    assert some == [every[4], every[17]]
    assert all(len(m.concepts) == 3 and m.scores == tuple(sorted(m.scores, reverse=True)) for m in every)
    assert all(m.margin >= 0 for m in every)


def test_fewer_probe_images_than_top_k_and_chunks_give_the_same_scores():
    similarity = _similarity(40, 12, seed=9)  # 40 images < top_k 100
    activations = _units_from(similarity, list(range(12)) * 10, noise=1.0, seed=10)  # 120 units
    torch.testing.assert_close(
        soft_wpmi(similarity, activations, MatchConfig(chunk_units=7)),
        soft_wpmi(similarity, activations, MatchConfig(chunk_units=500)),
    )


@pytest.mark.parametrize(
    ("similarity", "activations", "message"),
    [
        (torch.zeros(5, 3), torch.zeros(4, 2), "5 images and activations 4"),
        (torch.zeros(5), torch.zeros(5, 2), "expected \\(image, concept\\)"),
        (torch.zeros(5, 0), torch.zeros(5, 2), "no concepts"),
        (torch.full((5, 3), float("nan")), torch.zeros(5, 2), "similarity: expected finite"),
    ],
)
def test_bad_matrices_say_what_is_wrong(similarity, activations, message):
    with pytest.raises(ValueError, match=message):
        soft_wpmi(similarity, activations)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="weight_last <= weight_first"):
        MatchConfig(weight_first=0.9, weight_last=0.95)
    with pytest.raises(ValueError, match="top_k and chunk_units"):
        MatchConfig(top_k=0)
