"""`clip-formula`: concept scores become per-image pseudo-attributes, and the beam search finds
AND / OR / AND NOT formulas over them; checked on planted scores where the formulas are known."""

from __future__ import annotations

import pytest
import torch

from coin_scale.concepts import evaluate
from coin_scale.concepts.formula import parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.concepts.pseudo import PseudoAttributeConfig, pseudo_attributes
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.image_text import (
    ClipExplainer,
    ClipExplainerConfig,
    ClipFormulaExplainer,
    image_text_explainer,
)
from coin_scale.explain.offline import OfflineExplainerConfig
from coin_scale.probe.folder import ProbeImage, ProbeSet

WORDS = ("dog", "cat", "grass", "indoor", "snow", "car", "tree", "sky") + tuple(
    f"word{i}" for i in range(24)
)
"""Eight words the formulas use and more that fill the vocabulary, as a real one does."""


def _truth(n_images: int, seed: int) -> torch.Tensor:
    """bool (image, concept): each word shown by 10-30% of the images, independently."""
    g = torch.Generator().manual_seed(seed)
    rates = 0.1 + 0.2 * torch.rand(len(WORDS), generator=g)
    return torch.rand(n_images, len(WORDS), generator=g) < rates


def _clip_like(truth: torch.Tensor, seed: int, noise: float = 0.01) -> torch.Tensor:
    """Cosine similarities like an image-text model's: ~0.2, +0.05 where the image shows the word,
    a per-word offset (some words are close to every image), a per-image offset, and noise."""
    g = torch.Generator().manual_seed(seed)
    n, c = truth.shape
    word = 0.05 * torch.rand(1, c, generator=g)
    image = 0.05 * torch.rand(n, 1, generator=g)
    return 0.2 + 0.05 * truth.float() + word + image + noise * torch.randn(n, c, generator=g)


def test_clean_scores_give_back_the_true_concepts_whatever_the_image_and_word_offsets() -> None:
    truth = _truth(1000, seed=0)
    concepts = pseudo_attributes(_clip_like(truth, seed=1, noise=0.004), WORDS)
    assert concepts.names == WORDS
    agreement = (concepts.matrix == truth.T).float().mean(dim=1)
    assert bool((agreement > 0.99).all()), agreement


def test_words_that_one_image_or_no_image_stands_out_on_are_dropped() -> None:
    truth = _truth(200, seed=2)
    truth[:, 0] = False
    truth[7, 0] = True  # one dog: a formula over one image is noise
    scores = _clip_like(truth, seed=3, noise=0.0)
    others = torch.cat([scores[:, :1], scores[:, 2:]], dim=1)
    scores[:, 1] = others.mean(dim=1)  # cat: exactly as close as the image's average word
    concepts = pseudo_attributes(scores, WORDS)
    assert "dog" not in concepts.names and "cat" not in concepts.names
    assert len(concepts.names) == len(WORDS) - 2


def test_bad_scores_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="one per name"):
        pseudo_attributes(torch.zeros(10, 3), WORDS)
    with pytest.raises(ValueError, match="finite"):
        pseudo_attributes(torch.full((10, len(WORDS)), float("nan")), WORDS)
    with pytest.raises(ValueError, match="min_z: expected >= 0"):
        PseudoAttributeConfig(min_z=-1)


class PlantedScorer:
    """A `ConceptScorer` over planted scores (row r of the evidence is image r)."""

    def __init__(self, scores: torch.Tensor) -> None:
        self._scores = scores
        self.names = WORDS
        self.summary = "planted scores"

    def scores(self, evidence: LayerEvidence) -> torch.Tensor:
        return self._scores[list(evidence.image_indices())]


def _evidence(activations: torch.Tensor) -> LayerEvidence:
    n = activations.shape[0]
    images = tuple(ProbeImage(index=i, path=f"/nowhere/{i}.jpg", label=None, bytes=0) for i in range(n))
    probe = ProbeSet(root="/nowhere", images=images, probe_id="planted")
    empty = ConceptMatrix(names=(), matrix=torch.zeros(0, n, dtype=torch.bool))
    return LayerEvidence(dissection_id="d", activations=activations, concepts=empty, probe=probe)


FORMULAS = (
    "dog",
    "(dog AND grass)",
    "(cat OR snow)",
    "(car AND NOT indoor)",
    "((dog AND grass) AND NOT indoor)",
)


def _explain_each(scores: torch.Tensor, activations: torch.Tensor, truth: torch.Tensor, formulas):
    """Each unit explained with its mask as large as its formula's share of the probe (as
    `eval synthetic` draws formulas that fit the mask)."""
    names = list(WORDS)
    found = []
    for unit, formula in enumerate(formulas):
        share = float(evaluate(parse_text(formula, names), truth.T).float().mean())
        config = ClipExplainerConfig(search=OfflineExplainerConfig(quantile=1.0 - share))
        explainer = ClipFormulaExplainer(config, PlantedScorer(scores))
        found += explainer.explain(_evidence(activations), [unit])
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_units_firing_on_formulas_of_words_get_those_formulas_back(seed: int) -> None:
    truth = _truth(1500, seed=seed)
    names = list(WORDS)
    signal = torch.stack([evaluate(parse_text(f, names), truth.T) for f in FORMULAS], dim=1)
    g = torch.Generator().manual_seed(100 + seed)
    activations = signal.float() + 0.2 * torch.randn(signal.shape, generator=g)
    found = _explain_each(_clip_like(truth, seed=seed + 50), activations, truth, FORMULAS)
    assert [(e.unit, e.explainer) for e in found] == [(u, "clip-formula") for u in range(5)]
    assert all(e.ok and e.iou is not None and e.iou > 0.5 for e in found), found
    from coin_scale.concepts.formula import canonical_text

    want = [canonical_text(parse_text(f, names), names) for f in FORMULAS]
    got = [canonical_text(parse_text(e.formula, names), names) for e in found]
    assert sum(w == g for w, g in zip(want, got, strict=True)) >= len(FORMULAS) - 1, got
    assert got[0] == "dog" and "planted scores" in found[0].description


def test_units_are_explained_in_the_order_asked_and_a_constant_unit_is_empty() -> None:
    truth = _truth(400, seed=4)
    g = torch.Generator().manual_seed(0)
    noisy = truth.float() + 0.1 * torch.randn(truth.shape, generator=g)
    activations = torch.stack([noisy[:, 2], torch.ones(400), noisy[:, 5]], dim=1)
    scorer = PlantedScorer(_clip_like(truth, seed=5))
    config = ClipExplainerConfig(search=OfflineExplainerConfig(quantile=0.95, max_length=1))
    found = ClipFormulaExplainer(config, scorer).explain(_evidence(activations), [2, 1, 0])
    assert [(e.unit, e.status, e.formula) for e in found] == [
        (2, "ok", "car"), (1, "empty", ""), (0, "ok", "grass"),
    ]  # fmt: skip
    assert found[1].reason == "constant"


def test_no_concept_that_tells_images_apart_is_an_empty_explanation() -> None:
    activations = torch.rand(50, 2)
    scorer = PlantedScorer(torch.full((50, len(WORDS)), 0.25))
    found = ClipFormulaExplainer(scorer=scorer).explain(_evidence(activations), [0, 1])
    assert {(e.status, e.reason) for e in found} == {("empty", "no_concepts")}


def test_both_image_text_explainers_come_from_one_factory_and_read_unreadable_rows_as_missing() -> None:
    truth = _truth(600, seed=6)
    scores = _clip_like(truth, seed=7)
    scores[5] = float("nan")  # an image the scorer could not read
    g = torch.Generator().manual_seed(1)
    activations = truth[:, [0, 3]].float() + 0.1 * torch.randn(600, 2, generator=g)
    config = ClipExplainerConfig(search=OfflineExplainerConfig(quantile=0.95, max_length=1))
    for name, kind in (("clip", ClipExplainer), ("clip-formula", ClipFormulaExplainer)):
        explainer = image_text_explainer(name, config, scorer=PlantedScorer(scores))
        assert isinstance(explainer, kind) and explainer.name == name
        found = explainer.explain(_evidence(activations), [0, 1])
        assert [e.label for e in found] == ["dog", "indoor"], (name, found)
    with pytest.raises(ValueError, match="expected one of clip, clip-formula"):
        image_text_explainer("offline", scorer=PlantedScorer(scores))
