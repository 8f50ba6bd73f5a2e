"""Offline explainer: concepts, formulas and their words, vectorised beam search vs reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from coin_scale.concepts import (
    And,
    AndNot,
    ConceptMatrix,
    Formula,
    Leaf,
    Or,
    canonical_text,
    evaluate,
    to_text,
    to_words,
)
from coin_scale.concepts.formula import OPERATORS, parse_text
from coin_scale.explain import OfflineExplainerConfig, explain_units
from coin_scale.explain.offline import search_formulas, unit_masks
from coin_scale.probe.concepts import concepts_from_probe
from coin_scale.probe.folder import scan_probe


def random_concepts(n_images: int, n_concepts: int, p: float, seed: int) -> ConceptMatrix:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.rand(n_concepts, n_images, generator=generator) < p
    return ConceptMatrix(names=tuple(f"c={i}" for i in range(n_concepts)), matrix=matrix)


def exact_quantile(mask: torch.Tensor) -> float:
    """A quantile whose threshold falls between the off and the on images of `mask`."""
    n, off = mask.numel(), int((~mask).sum())
    return (off - 0.5) / (n - 1)


def planted_activations(mask: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (mask.float() + 0.05 * torch.rand(mask.numel(), generator=generator))[:, None]


# --- Recovery of planted formulas ------------------------------------------------------------

PLANTED: list[Formula] = [
    Leaf(2),
    And(Leaf(0), Leaf(1)),
    Or(Leaf(3), Leaf(4)),
    AndNot(Leaf(5), Leaf(6)),
    AndNot(And(Leaf(7), Leaf(8)), Leaf(9)),
]


@pytest.mark.parametrize(
    "planted", PLANTED, ids=lambda f: to_text(f, [f"c={i}" for i in range(12)])
)
def test_planted_formula_is_recovered_exactly(planted: Formula) -> None:
    concepts = random_concepts(400, 12, 0.3, seed=1)
    mask = evaluate(planted, concepts.matrix)
    config = OfflineExplainerConfig(quantile=exact_quantile(mask))
    (result,) = explain_units(planted_activations(mask, seed=2), concepts, config)
    assert result.status == "ok" and result.reason is None
    assert result.mask_size == int(mask.sum())
    assert result.iou == 1.0
    found = parse_text(result.formula, concepts.names)
    assert canonical_text(found, concepts.names) == canonical_text(planted, concepts.names)


def test_iou_matches_direct_computation() -> None:
    concepts = random_concepts(300, 10, 0.25, seed=3)
    generator = torch.Generator().manual_seed(4)
    activations = torch.randn(300, 16, generator=generator)
    activations[:, :8] += concepts.matrix[:8].T.float() * 0.8
    activations[:, 8:] += concepts.matrix[2:10].T.float() * 0.5
    config = OfflineExplainerConfig(quantile=0.8)
    masks, thresholds = unit_masks(activations, config.quantile)
    for result in explain_units(activations, concepts, config):
        mask = masks[:, result.unit]
        covered = evaluate(parse_text(result.formula, concepts.names), concepts.matrix)
        iou = (mask & covered).sum().item() / (mask | covered).sum().item()
        assert result.iou == pytest.approx(iou, abs=1e-12)
        assert result.mask_size == int(mask.sum())
        assert result.threshold == pytest.approx(float(thresholds[result.unit]))
        assert result.label == to_words(parse_text(result.formula, concepts.names), concepts.names)
        assert f"IoU {result.iou:.2f}" in result.description
        assert f"{result.mask_size} of 300 probe images" in result.description


# --- Vectorised beam search vs a slow reference ---------------------------------------------


def reference_search(
    mask: torch.Tensor, concepts: ConceptMatrix, config: OfflineExplainerConfig
) -> tuple[Formula, float]:
    """Beam search for one unit, one candidate at a time (the documented semantics)."""

    def iou(covered: torch.Tensor) -> float:
        union = int((mask | covered).sum())
        return int((mask & covered).sum()) / union if union else 0.0

    def select(candidates: list[tuple[Formula, torch.Tensor, float]]):
        ranked = sorted(enumerate(candidates), key=lambda item: (-item[1][2], item[0]))
        beam: list[tuple[Formula, torch.Tensor, float]] = []
        for _, candidate in ranked:
            if not any(torch.equal(candidate[1], kept[1]) for kept in beam):
                beam.append(candidate)
            if len(beam) == config.beam_size:
                break
        return beam

    matrix = concepts.matrix
    beam = select([(Leaf(k), matrix[k], iou(matrix[k])) for k in range(concepts.n_concepts)])
    for _ in range(config.max_length - 1):
        candidates = list(beam)
        for formula, covered, score in beam:
            for name in config.operators:
                op = OPERATORS[name]
                for k in range(concepts.n_concepts):
                    new = op.combine(covered, matrix[k])
                    new_iou = iou(new)
                    if new_iou > score + config.min_iou_gain:
                        candidates.append((op.node(formula, Leaf(k)), new, new_iou))
        beam = select(candidates)
    return beam[0][0], beam[0][2]


@pytest.mark.parametrize(
    "config",
    [
        OfflineExplainerConfig(beam_size=3, max_length=3, quantile=0.7),
        OfflineExplainerConfig(beam_size=1, max_length=2, quantile=0.8),
        OfflineExplainerConfig(beam_size=4, max_length=4, quantile=0.6, min_iou_gain=0.02),
        OfflineExplainerConfig(beam_size=2, max_length=3, quantile=0.75, operators=("or", "and")),
    ],
)
def test_vectorised_search_equals_reference(config: OfflineExplainerConfig) -> None:
    concepts = random_concepts(60, 8, 0.35, seed=5)
    generator = torch.Generator().manual_seed(6)
    activations = torch.randn(60, 12, generator=generator)
    activations[:, :8] += concepts.matrix.T.float()
    masks, _ = unit_masks(activations, config.quantile)
    formulas, ious = search_formulas(masks.T.contiguous(), concepts, config)
    for unit in range(12):
        formula, score = reference_search(masks[:, unit], concepts, config)
        assert to_text(formulas[unit], concepts.names) == to_text(formula, concepts.names)
        torch.testing.assert_close(ious[unit].item(), score)


# --- Units without an explanation -----------------------------------------------------------


def test_constant_and_empty_units_are_reported_not_labelled() -> None:
    concepts = random_concepts(100, 6, 0.3, seed=7)
    activations = torch.zeros(100, 3)
    activations[:, 0] = 2.5  # constant
    activations[:, 1] = 1.0  # ties at the top: the 0.9 quantile is the maximum
    activations[:5, 1] = 0.0
    activations[:, 2] = concepts.matrix[0].float() + torch.linspace(0, 0.1, 100)
    results = explain_units(activations, concepts, OfflineExplainerConfig())
    assert [r.status for r in results] == ["empty", "empty", "ok"]
    assert [r.reason for r in results] == ["constant", "empty_mask", None]
    for result in results[:2]:
        assert (result.formula, result.label, result.iou, result.mask_size) == ("", "", None, 0)
        assert result.description.startswith("Not explained")
    assert "same on all 100 probe images" in results[0].description
    assert "no probe image" in results[1].description


def test_bad_input_raises_value_error() -> None:
    concepts = random_concepts(10, 3, 0.5, seed=0)
    with pytest.raises(ValueError, match="expected \\(image, unit\\) with 10 images"):
        explain_units(torch.zeros(9, 2), concepts, OfflineExplainerConfig())
    with pytest.raises(ValueError, match="finite"):
        explain_units(torch.full((10, 2), float("nan")), concepts, OfflineExplainerConfig())
    with pytest.raises(ValueError, match="operator: expected one of and, or, and_not"):
        OfflineExplainerConfig(operators=("xor",))
    with pytest.raises(ValueError, match="quantile"):
        OfflineExplainerConfig(quantile=1.0)
    with pytest.raises(ValueError, match="unique"):
        ConceptMatrix(names=("a", "a"), matrix=torch.zeros(2, 3, dtype=torch.bool))


# --- Formula text and words -----------------------------------------------------------------

NAMES = (
    "shape=star", "color=red", "shape=heart", "texture=stripes", "size=large", "light=dim",
    "n_objects=2", "position=top-left", "color=blue", "background=sky", "n_objects=1",
    "label=tabby",
)  # fmt: skip
STAR, RED, HEART, STRIPES, LARGE, DIM, TWO, TOP_LEFT, BLUE, SKY, ONE, TABBY = (
    Leaf(i) for i in range(len(NAMES))
)

WORDS = [
    (And(RED, STAR), "red star"),
    (And(STAR, RED), "red star"),
    (Or(And(STAR, RED), HEART), "red star or heart"),
    (AndNot(STAR, RED), "star, not red"),
    (STRIPES, "striped texture"),
    (DIM, "dim light"),
    (TWO, "2 objects"),
    (ONE, "1 object"),
    (LARGE, "large size"),
    (TOP_LEFT, "position top-left"),
    (SKY, "sky background"),
    (TABBY, "tabby"),
    (And(And(STAR, STRIPES), LARGE), "large striped star"),
    (And(And(STAR, RED), LARGE), "large red star"),
    (And(RED, STRIPES), "red striped object"),
    (And(STAR, SKY), "star and sky background"),
    (And(Or(RED, BLUE), STAR), "star and (red or blue)"),
    (Or(AndNot(STAR, RED), HEART), "(star, not red) or heart"),
    (AndNot(STAR, Or(RED, BLUE)), "star, not (red or blue)"),
    (AndNot(AndNot(STAR, RED), BLUE), "star, not red, not blue"),
    (Or(Or(RED, BLUE), HEART), "red or blue or heart"),
    (Or(And(RED, SKY), DIM), "(red and sky background) or dim light"),
    (And(TWO, DIM), "2 objects and dim light"),
]


@pytest.mark.parametrize(("formula", "words"), WORDS, ids=[w for _, w in WORDS])
def test_to_words(formula: Formula, words: str) -> None:
    assert to_words(formula, NAMES) == words


def test_to_text_parse_and_canonical() -> None:
    formula = Or(And(STAR, RED), HEART)
    text = to_text(formula, NAMES)
    assert text == "((shape=star AND color=red) OR shape=heart)"
    assert parse_text(text, NAMES) == formula
    assert to_text(AndNot(STAR, RED), NAMES) == "(shape=star AND NOT color=red)"
    assert parse_text("(shape=star AND NOT color=red)", NAMES) == AndNot(STAR, RED)
    assert canonical_text(Or(HEART, And(RED, STAR)), NAMES) == canonical_text(formula, NAMES)
    assert canonical_text(AndNot(STAR, RED), NAMES) != canonical_text(AndNot(RED, STAR), NAMES)
    with pytest.raises(ValueError, match="a concept name"):
        parse_text("(shape=star AND color=green)", NAMES)


def test_evaluate() -> None:
    matrix = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    a, b = Leaf(0), Leaf(1)
    assert evaluate(And(a, b), matrix).tolist() == [True, False, False, False]
    assert evaluate(Or(a, b), matrix).tolist() == [True, True, True, False]
    assert evaluate(AndNot(a, b), matrix).tolist() == [False, True, False, False]


# --- Concepts of probe sets -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered_probe(tmp_path_factory) -> Path:
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    root = tmp_path_factory.mktemp("rendered")
    write_probe_set(root, ProbeSetParams(n=24, seed=0, size=32), progress=False)
    return root


def test_concepts_from_rendered_probe_set(rendered_probe: Path) -> None:
    import pyarrow.parquet as pq

    probe = scan_probe(rendered_probe)
    concepts = concepts_from_probe(probe)
    assert concepts.n_images == 24
    table = pq.read_table(rendered_probe / "attributes.parquet").to_pylist()
    row_of = {str((rendered_probe / r["image_path"]).resolve()): r for r in table}
    for name, row in zip(concepts.names, concepts.matrix, strict=True):
        attribute, value = name.split("=")
        expected = [str(row_of[image.path][attribute]) == value for image in probe.images]
        assert row.tolist() == expected
        assert 0 < int(row.sum()) < 24
    assert {n.split("=")[0] for n in concepts.names} >= {"shape", "color", "n_objects"}
    rare = concepts_from_probe(probe, min_count=5)
    assert set(rare.names) < set(concepts.names)
    assert int(rare.matrix.sum(1).min()) >= 5


def test_concepts_from_rendered_probe_set_missing_rows(rendered_probe: Path, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(rendered_probe, copy)
    shutil.copy(copy / "images" / "00000.png", copy / "images" / "99999.png")
    with pytest.raises(ValueError, match="got none for 1 of 25"):
        concepts_from_probe(scan_probe(copy))


def test_concepts_from_labelled_folder(tmp_path: Path) -> None:
    for label, count in (("cats", 3), ("dogs", 2), ("everywhere_not", 0)):
        for i in range(count):
            (tmp_path / label).mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "n02123045_tabby.png")
    probe = scan_probe(tmp_path)
    concepts = concepts_from_probe(probe)
    assert concepts.names == ("label=cats", "label=dogs", "label=tabby")
    labels = [image.label for image in probe.images]
    for name, row in zip(concepts.names, concepts.matrix, strict=True):
        assert row.tolist() == [f"label={label}" == name for label in labels]
    assert concepts_from_probe(probe, min_count=2).names == ("label=cats", "label=dogs")
    with pytest.raises(ValueError, match="expected at least one concept"):
        concepts_from_probe(probe, min_count=10)


def test_explain_bench_small() -> None:
    from coin_scale.bench.explain_bench import ExplainBenchConfig, run_explain_bench

    report = run_explain_bench(ExplainBenchConfig(units=16, images=1000, repeats=1))
    assert report["units"] == 16 and report["concepts"] == 49
    assert report["recovered_fraction"] >= 0.6
    assert 0.0 < report["mean_iou"] <= 1.0
