"""Held-out scores over a folder probe: the split (a hash of each image's path), the evidence
cut in two, the pure scoring core (AUC, Pearson r, F1, AUPRC) on planted predictors, and every
kind of explanation read as a predictor on images its explainer never saw."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from coin_scale.concepts.formula import evaluate, parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.concepts.pseudo import concept_margins, pseudo_attributes
from coin_scale.eval.heldout import (
    HeldOutScore,
    median_auc,
    score_predictor,
    score_rows,
    top_share,
    unit_threshold,
)
from coin_scale.eval.heldout_predictors import (
    NO_TEXT_MODEL,
    HeldOutSources,
    held_out_sources,
    score_held_out,
    soft_evaluate,
)
from coin_scale.explain.evidence import LayerEvidence, held_out_split, split_evidence
from coin_scale.explain.explanation import Explanation
from coin_scale.explain.image_text import ClipFormulaExplainer
from coin_scale.probe import scan_probe
from coin_scale.probe.folder import ProbeImage, ProbeSet
from coin_scale.probe.split import MIN_HELD_OUT, held_out_images, is_held_out
from coin_scale.storage.schemas import get_spec

# -- the split ---------------------------------------------------------------------------------


def _paths(n: int, start: int = 0) -> list[str]:
    return [f"class{i % 3}/img{i:05d}.jpg" for i in range(start, start + n)]


def test_the_split_is_a_stable_share_and_adding_images_moves_no_other():
    paths = _paths(5000)
    held = [is_held_out(p, 0.2) for p in paths]
    assert 0.18 < np.mean(held) < 0.22
    assert held == [is_held_out(p, 0.2) for p in paths]  # the same image, the same side
    more = _paths(500, start=5000) + paths[::-1]  # new images, another order
    assert {p: is_held_out(p, 0.2) for p in more if p in set(paths)} == dict(
        zip(paths, held, strict=True)
    )
    # a larger share only moves images from the explained side to the held-out one
    wider = [is_held_out(p, 0.3) for p in paths]
    assert all(w for h, w in zip(held, wider, strict=True) if h) and sum(wider) > sum(held)
    assert not any(is_held_out(p, 0.0) for p in paths)
    with pytest.raises(ValueError, match="--held-out takes the share"):
        is_held_out(paths[0], 1.0)


def test_the_split_reads_paths_inside_the_folder_wherever_it_lies(tmp_path):
    from coin_scale.bench.images import write_synthetic_images

    write_synthetic_images(tmp_path / "a", 40, size=(48, 48), seed=0, classes=2)
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    first = held_out_images(scan_probe(tmp_path / "a"), 0.25)
    assert first == held_out_images(scan_probe(tmp_path / "elsewhere" / "b"), 0.25)
    listed = sorted(f"class{i % 2}/img{i:05d}.jpg" for i in range(40))  # the probe's order
    assert first == tuple(is_held_out(path, 0.25) for path in listed)


def _probe(n: int, attributes: str | None = None) -> ProbeSet:
    images = tuple(ProbeImage(i, f"/p/{path}", None, 1) for i, path in enumerate(_paths(n)))
    return ProbeSet(root="/p", probe_id="p0", images=images, attributes_path=attributes)


def _evidence(acts: torch.Tensor, probe: ProbeSet, concepts: ConceptMatrix | None = None,
              rows: tuple[int, ...] | None = None) -> LayerEvidence:  # fmt: skip
    if concepts is None:
        concepts = ConceptMatrix(names=(), matrix=torch.zeros(0, acts.shape[0], dtype=torch.bool))
    return LayerEvidence(
        dissection_id="d0", activations=acts, concepts=concepts, probe=probe, rows=rows
    )


def test_the_evidence_splits_rows_and_concepts_alike():
    probe = _probe(120)
    rows = tuple(i for i in range(120) if i != 5)  # image 5 unreadable
    acts = torch.tensor(rows, dtype=torch.float32)[:, None].repeat(1, 3)
    matrix = torch.tensor([[r % 2 == 0 for r in rows]])
    evidence = _evidence(acts, probe, ConceptMatrix(names=("label=even",), matrix=matrix), rows)
    flags = held_out_images(probe, 0.2)
    split = split_evidence(evidence, flags, 0.2)
    held, shown = split.held_out, split.explain
    assert set(held.rows) | set(shown.rows) == set(rows) and not set(held.rows) & set(shown.rows)
    assert all(flags[r] for r in held.rows) and not any(flags[r] for r in shown.rows)
    for part in (held, shown):  # each row keeps its own activation and concepts
        assert part.activations[:, 0].tolist() == [float(r) for r in part.rows]
        assert part.concepts.matrix[0].tolist() == [r % 2 == 0 for r in part.rows]
        assert part.held_out == 0.2
    same, why = held_out_split(evidence, 0.2)
    assert same is not None and why is None and same.held_out.rows == held.rows


def test_too_small_a_probe_says_so_and_a_rendered_one_or_share_0_holds_nothing_out():
    small = _evidence(torch.randn(30, 2), _probe(30))
    split, why = held_out_split(small, 0.2)
    assert split is None and why is not None
    assert f"need {MIN_HELD_OUT} on each side" in why and "--held-out 0" in why
    assert held_out_split(_evidence(torch.randn(200, 2), _probe(200)), 0.0) == (None, None)
    rendered = _evidence(torch.randn(200, 2), _probe(200, attributes="/p/attributes.parquet"))
    assert held_out_split(rendered, 0.2) == (None, None)


def test_an_agents_exemplars_are_its_top_rows_ties_in_probe_order():
    acts = torch.tensor([[2.0], [3.0], [3.0], [1.0]])
    evidence = _evidence(acts, _probe(10), rows=(0, 2, 4, 7))
    assert evidence.top_images(0, 3) == [
        ("/p/class2/img00002.jpg", 3.0), ("/p/class1/img00004.jpg", 3.0),
        ("/p/class0/img00000.jpg", 2.0),
    ]  # fmt: skip


# -- the pure core -----------------------------------------------------------------------------


def test_a_predictor_equal_to_the_activation_scores_perfectly():
    acts = np.arange(50, dtype=np.float64)
    s = score_predictor(acts, acts, 39.5, positive_share=0.2, kind="word_similarity")
    assert (s.n_images, s.n_positive, s.reason) == (50, 10, None)
    assert s.auc == 1.0 and s.f1 == 1.0 and s.auprc == pytest.approx(1.0)
    assert s.pearson == pytest.approx(1.0)
    assert s.summary().startswith("held-out AUC 1.00, r 1.00, F1 1.00, AUPRC 1.00 on 50 images")


def test_a_random_predictor_scores_about_chance():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=4000)
    threshold = unit_threshold(acts, 0.9)
    s = score_predictor(rng.normal(size=4000), acts, threshold, positive_share=0.1, kind="formula")
    assert abs(s.auc - 0.5) < 0.04 and abs(s.pearson) < 0.05
    assert abs(s.auprc - 0.1) < 0.03 and abs(s.f1 - 0.1) < 0.04
    assert s.n_positive == 400


def test_no_positive_or_every_image_positive_gives_a_reason_not_a_score():
    acts = np.linspace(0.0, 1.0, 20)
    none = score_predictor(acts, acts, 5.0, positive_share=0.1, kind="word_similarity")
    assert none.reason == "no_positive" and not none.scored and none.metrics() == []
    assert "no held-out image of 20 is above the unit's threshold 5" in (none.note or "")
    assert none.summary().startswith("held-out: not scored (no held-out image")
    every = score_predictor(acts, acts, -1.0, positive_share=0.1, kind="word_similarity")
    assert every.reason == "all_positive" and every.auc is None


def test_unreadable_images_are_left_out_and_a_constant_predictor_has_no_r():
    acts = np.arange(20, dtype=np.float64)
    values = acts.copy()
    values[:5] = np.nan
    s = score_predictor(values, acts, 16.5, positive_share=0.2, kind="text_similarity")
    assert (s.n_images, s.n_positive, s.auc) == (15, 3, 1.0)
    flat = score_predictor(np.ones(20), acts, 16.5, positive_share=0.2, kind="formula")
    assert flat.pearson is None and flat.auc == 0.5 and ("pearson", 0.0) not in flat.metrics()
    assert [m for m, _ in flat.metrics()] == ["auc", "f1", "auprc"]
    assert "r —" in flat.summary()


def test_a_formulas_own_yes_no_gives_f1_and_a_continuous_one_is_cut_at_the_units_share():
    acts = np.arange(10, dtype=np.float64)  # above 6.5: 7, 8, 9
    said = np.zeros(10, dtype=bool)
    said[[8, 9, 0, 1]] = True  # 2 right, 2 wrong, 1 missed: F1 = 4 / (4 + 2 + 1)
    s = score_predictor(said.astype(float), acts, 6.5, positive_share=0.5, kind="formula",
                        predicted=said)  # fmt: skip
    assert s.f1 == pytest.approx(4 / 7)
    # continuous: yes on the top round(0.3 x 10) = 3 values, ties at the cut say no
    assert top_share(np.arange(10.0), 0.3).nonzero()[0].tolist() == [7, 8, 9]
    assert top_share(np.array([1.0, 2, 2, 2, 3]), 0.4).nonzero()[0].tolist() == [4]
    assert top_share(np.arange(4.0), 0.01).sum() == 1 and top_share(np.arange(4.0), 1.0).all()
    with pytest.raises(ValueError, match="kind: expected one of"):
        score_predictor(acts, acts, 1.0, positive_share=0.1, kind="guess")


def test_rows_are_the_scores_tables_and_name_the_predictor():
    acts = np.arange(30, dtype=np.float64)
    good = score_predictor(acts, acts, 24.5, positive_share=0.2, kind="soft_formula")
    bad = score_predictor(acts, acts, 99.0, positive_share=0.2, kind="soft_formula")
    rows = score_rows({3: good, 4: bad}, run_id="r", layer="layer4", kind="neuron")
    assert [(r["unit"], r["metric"]) for r in rows] == [
        (3, "auc"), (3, "pearson"), (3, "f1"), (3, "auprc")
    ]  # fmt: skip
    assert {r["test"] for r in rows} == {"heldout"}
    details = json.loads(str(rows[0]["details"]))
    assert details["predictor"] == "soft_formula"
    assert (details["n_images"], details["n_positive"]) == (30, 5)
    get_spec("scores").from_dicts(rows)  # the table takes them
    assert median_auc([good, bad]) == 1.0 and median_auc([bad]) is None


# -- explanations read as predictors -----------------------------------------------------------


class TableScorer:
    """A concept scorer reading a fixed (probe image, concept) table."""

    def __init__(self, table: torch.Tensor, names: tuple[str, ...]) -> None:
        self.table, self.names, self.summary = table, names, "a table"

    def scores(self, evidence: LayerEvidence) -> torch.Tensor:
        return self.table[list(evidence.image_indices())]


class TableLabels:
    """A label scorer: a label's similarity is the table's column of the same name."""

    def __init__(self, scorer: TableScorer) -> None:
        self.scorer = scorer

    def scores(self, evidence: LayerEvidence, labels) -> torch.Tensor:
        table = self.scorer.scores(evidence)
        return torch.stack([table[:, self.scorer.names.index(x)] for x in labels], dim=1)


N = 400
WORDS = ("dog", "grass", "sky", "car")


def _planted(seed: int = 0):
    """A probe of N images, clip-like similarities to WORDS, and labels: unit 0 fires on dogs
    (by its similarity), unit 1 on labelled `label=a` images, unit 2 at random."""
    g = torch.Generator().manual_seed(seed)
    shows = torch.rand(N, len(WORDS), generator=g) < 0.25
    sims = 0.2 + 0.05 * shows.float() + 0.01 * torch.randn(N, len(WORDS), generator=g)
    label_a = torch.rand(N, generator=g) < 0.3
    acts = torch.stack([
        sims[:, 0] * 10, label_a.float() + 0.1 * torch.rand(N, generator=g),
        torch.rand(N, generator=g),
    ], dim=1)  # fmt: skip
    concepts = ConceptMatrix(names=("label=a", "label=b"), matrix=torch.stack([label_a, ~label_a]))
    evidence = _evidence(acts, _probe(N), concepts)
    split, why = held_out_split(evidence, 0.2)
    assert split is not None and why is None
    return split, TableScorer(sims, WORDS), shows


def test_each_kind_of_explanation_becomes_its_predictor_and_a_true_one_scores_high():
    split, scorer, _ = _planted()
    explanations = [
        Explanation(unit=0, explainer="clip", label="dog", match=1.0),
        Explanation(
            unit=1, explainer="offline", label="a", formula="label=a", iou=0.9, threshold=0.55
        ),  # fmt: skip
        Explanation(unit=2, explainer="clip", label="sky", match=0.1),
        Explanation(unit=1, explainer="offline", status="empty", reason="constant"),
    ]
    scores = score_held_out(explanations, split, HeldOutSources(concepts=scorer))
    assert set(scores) == {0, 1, 2}  # the unit that is not ok gets nothing
    dog, label, chance = scores[0], scores[1], scores[2]
    assert dog.predictor == "word_similarity" and dog.auc > 0.95 and dog.pearson > 0.9
    assert label.predictor == "formula" and label.auc == 1.0 and label.f1 == 1.0
    assert label.threshold == 0.55  # the explanation's own threshold
    assert 0.3 < chance.auc < 0.7
    n_held = int(split.held_out.activations.shape[0])
    assert {s.n_images for s in scores.values()} == {n_held}
    # clip draws no threshold: the 0.9 quantile over the explained images, its share ~10%
    explained = split.explain.activations[:, 0].double().numpy()
    assert dog.threshold == pytest.approx(np.quantile(explained, 0.9))
    assert dog.positive_share == pytest.approx(0.1, abs=0.01)


def test_a_clip_formula_is_read_softly_on_attributes_of_every_image():
    split, scorer, _ = _planted(seed=1)
    e = Explanation(unit=0, explainer="clip-formula", label="dog, not sky",
                    formula="(dog AND NOT sky)", iou=0.5, threshold=2.2)  # fmt: skip
    explainer = ClipFormulaExplainer(scorer=scorer)
    sources = held_out_sources(explainer, None)
    assert sources.concepts is scorer and sources.attributes == explainer.config.attributes
    s = score_held_out([e], split, sources)[0]
    assert s.predictor == "soft_formula" and s.scored
    # its yes/no is the 0/1 formula over pseudo-attributes computed on all rows together
    rows = list(split.explain.image_indices()) + list(split.held_out.image_indices())
    attributes = pseudo_attributes(scorer.table[rows].double(), WORDS)
    truth = evaluate(parse_text(e.formula, attributes.names), attributes.matrix)
    held_truth = truth[-split.held_out.activations.shape[0] :].numpy()
    acts = split.held_out.activations[:, 0].double().numpy()
    expected = score_predictor(held_truth.astype(float), acts, 2.2, positive_share=s.positive_share,
                               kind="formula", predicted=held_truth)  # fmt: skip
    assert s.f1 == pytest.approx(expected.f1)


def test_soft_formulas_hold_exactly_where_the_0_1_ones_do():
    g = torch.Generator().manual_seed(4)
    margins = torch.randn(3, 500, generator=g, dtype=torch.float64)
    names = ("a", "b", "c")
    for text in ("a", "(a AND b)", "(a OR b)", "(a AND NOT b)", "((a OR b) AND NOT c)"):
        formula = parse_text(text, names)
        soft = soft_evaluate(formula, margins)
        assert torch.equal(soft > 0, evaluate(formula, margins > 0)), text


def test_concept_margins_are_positive_exactly_where_an_image_shows_a_concept():
    g = torch.Generator().manual_seed(5)
    scores = (
        0.2
        + 0.05 * (torch.rand(300, 6, generator=g) < 0.3)
        + 0.01 * torch.randn(300, 6, generator=g)
    )
    names = tuple("abcdef")
    shown = pseudo_attributes(scores, names)
    margins = concept_margins(scores)
    keep = [names.index(n) for n in shown.names]
    assert torch.equal(margins[:, keep].T > 0, shown.matrix)


def test_an_llms_label_is_read_by_the_image_text_model_or_not_scored_with_the_reason():
    split, scorer, _ = _planted(seed=2)
    e = Explanation(unit=0, explainer="openai", label="dog", confidence=0.8)
    missing = score_held_out([e], split, HeldOutSources())[0]
    assert missing.reason == "no_text_model" and missing.note == NO_TEXT_MODEL
    assert missing.auc is None and "--clip-model" in missing.summary()
    read = score_held_out([e], split, HeldOutSources(labels=TableLabels(scorer)))[0]  # type: ignore[arg-type]
    assert read.predictor == "text_similarity" and read.auc > 0.95


def test_a_unit_without_held_out_positives_is_not_scored_and_nothing_fails():
    split, scorer, _ = _planted(seed=3)
    high = float(split.held_out.activations[:, 1].max()) + 1.0
    e = Explanation(unit=1, explainer="offline", label="a", formula="label=a", iou=0.9,
                    threshold=high)  # fmt: skip
    s = score_held_out([e], split, HeldOutSources())[1]
    assert isinstance(s, HeldOutScore) and s.reason == "no_positive" and s.metrics() == []


def test_an_agent_never_sees_a_held_out_image_among_its_exemplars(tmp_path):
    from types import SimpleNamespace

    from coin_scale.bench.images import write_synthetic_images
    from coin_scale.sweep.agents import _subjects

    write_synthetic_images(tmp_path, 60, size=(48, 48), seed=0, classes=2)
    probe = scan_probe(tmp_path)
    flags = held_out_images(probe, 0.2)
    # the held-out images are the unit's strongest: an agent shown every image would see them
    acts = torch.tensor([[100.0 + i if held else float(i)] for i, held in enumerate(flags)])
    split, why = held_out_split(_evidence(acts, probe), 0.2)
    assert split is not None and why is None
    model, layer = SimpleNamespace(model_id="m"), SimpleNamespace(name="l")
    (subject,) = _subjects(split.explain, model, layer, [0], None)  # type: ignore[arg-type]
    shown = [x.activation for x in subject.exemplars]
    explained = sorted(split.explain.activations[:, 0].tolist(), reverse=True)
    assert shown == explained[: len(shown)] and max(shown) < 100.0


def test_the_sweeps_flags_hold_out_a_share_and_give_an_llm_the_image_text_model_when_asked():
    import run_sweep
    from coin_scale.cli.common import CLIP_MODEL
    from coin_scale.models.image_text import DEFAULT_MODEL

    parser = run_sweep.build_parser()

    def config(*argv: str):
        return run_sweep.sweep_config(parser.parse_args(list(argv)))

    llm = ("--explainer", "openai", "--probe", "photos/")
    assert config(*llm).clip is None and config(*llm).scoring.held_out == 0.2
    given = config(*llm, "--clip-weights", "none").clip
    assert given is not None and (given.model, given.weights) == (CLIP_MODEL, "none")
    assert CLIP_MODEL == DEFAULT_MODEL
    clip = config("--explainer", "clip", "--probe", "photos/").clip
    assert clip is not None and (clip.model, clip.weights) == (DEFAULT_MODEL, "default")
    assert config("--held-out", "0").scoring.held_out == 0.0
    with pytest.raises(ValueError, match="--held-out takes the share"):
        config("--held-out", "1")


def test_every_formula_operator_has_a_soft_form():
    from coin_scale.concepts.formula import OPERATORS
    from coin_scale.eval.heldout_predictors import _SOFT

    assert set(_SOFT) == set(OPERATORS)
