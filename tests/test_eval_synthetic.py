"""Synthetic units with ground truth and the label accuracy of the offline explainer (issue 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from coin_scale.bench.explain_bench import synthetic_concepts
from coin_scale.cli import main
from coin_scale.concepts.formula import And, AndNot, Leaf, Or, evaluate, parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.concepts.synthetic import (
    FORMULA_KINDS,
    SyntheticUnit,
    load_spec,
    parse_formula,
    parse_spec,
    random_units,
    synthetic_activations,
)
from coin_scale.eval.metrics import (
    UnitScore,
    concept_prf,
    concept_set,
    covers_same_images,
    exact_match,
    score_unit,
    summarize,
)


@pytest.fixture(scope="module")
def concepts() -> ConceptMatrix:
    """1000 images with one uniformly drawn value per rendered attribute."""
    return synthetic_concepts(1000, torch.Generator().manual_seed(0))


def _toy() -> ConceptMatrix:
    """6 images; shape in {circle, star}, color in {red, blue}."""
    names = ("shape=circle", "shape=star", "color=red", "color=blue")
    rows = [
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 1, 0],
        [0, 1, 1, 0, 0, 1],
    ]
    return ConceptMatrix(names=names, matrix=torch.tensor(rows, dtype=torch.bool))


# --- Random units ------------------------------------------------------------------------------


def test_random_units_are_reproducible_for_a_seed(concepts: ConceptMatrix) -> None:
    first = random_units(40, 3, concepts)
    assert first == random_units(40, 3, concepts)
    assert first != random_units(40, 4, concepts)
    assert [u.kind for u in first] == [k for k in FORMULA_KINDS for _ in range(10)]
    assert len({u.name for u in first}) == 40


def test_random_units_split_n_by_the_mix_and_cover_the_window(concepts: ConceptMatrix) -> None:
    units = random_units(10, 0, concepts, quantile=0.85, coverage=(0.6, 1.4))
    assert [u.kind for u in units].count("mono") == 3
    assert [u.kind for u in units].count("or") == 3
    assert [u.kind for u in units].count("and_not") == 2
    only = random_units(5, 0, concepts, mix={"or": 1.0, "mono": 0.0})
    assert {u.kind for u in only} == {"or"}
    for unit in random_units(100, 1, concepts):
        formula = parse_text(unit.formula, concepts.names)
        covered = evaluate(formula, concepts.matrix)
        assert 0.6 * 150 <= int(covered.sum()) <= 1.4 * 150, unit
        if unit.kind != "mono":  # no mono unit in disguise (nested or disjoint concepts)
            assert not (concepts.matrix == covered).all(dim=1).any(), unit


def test_random_units_name_a_kind_that_does_not_fit() -> None:
    only_shapes = ConceptMatrix(
        names=("shape=circle", "shape=star", "shape=ring"),
        matrix=torch.tensor([[1, 0, 0] * 4, [0, 1, 0] * 4, [0, 0, 1] * 4], dtype=torch.bool),
    )
    with pytest.raises(ValueError, match="kind 'and'"):
        random_units(4, 0, only_shapes, quantile=0.7, mix={"mono": 1.0, "and": 1.0})
    with pytest.raises(ValueError, match="mix"):
        random_units(4, 0, only_shapes, mix={"xor": 1.0})  # type: ignore[dict-item]


def test_synthetic_activations_are_the_indicator_plus_seeded_noise() -> None:
    concepts = _toy()
    units = (
        SyntheticUnit(name="a", formula="color=red", kind="mono", noise=0.0),
        SyntheticUnit(name="b", formula="(shape=star AND color=blue)", kind="and", noise=0.5),
    )
    acts = synthetic_activations(units, concepts, 7)
    assert acts.dtype == torch.float32 and acts.shape == (6, 2)
    assert acts[:, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert torch.equal(acts, synthetic_activations(units, concepts, 7))
    assert not torch.equal(acts, synthetic_activations(units, concepts, 8))
    noise = acts[:, 1] - torch.tensor([0, 0, 0, 0, 0, 1.0])
    assert 0 < float(noise.abs().max()) < 5 * 0.5


# --- Spec files --------------------------------------------------------------------------------


def test_parse_spec_reads_formulas_with_or_without_parentheses() -> None:
    units = parse_spec(
        [
            {"formula": "color=red"},
            {"name": "red circle", "formula": "shape=circle AND color=red", "noise": 0.1},
            {"formula": "(shape=circle OR shape=star)"},
            {"formula": "shape=star  AND NOT color=red"},
        ],
        _toy(),
        default_noise=0.25,
        source="spec.yaml",
    )
    assert [u.kind for u in units] == ["mono", "and", "or", "and_not"]
    assert [u.name for u in units] == ["unit-000", "red circle", "unit-002", "unit-003"]
    assert units[1].formula == "(shape=circle AND color=red)"
    assert units[3].formula == "(shape=star AND NOT color=red)"
    assert [u.noise for u in units] == [0.25, 0.1, 0.25, 0.25]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"formula": "color=red"}, "expected a non-empty list of units"),
        ([], "expected a non-empty list of units"),
        (["color=red"], "unit 0: expected a mapping"),
        ([{"formula": "color=red", "nois": 1}], r"unit 0 \('unit-000'\): unknown key\(s\) nois"),
        ([{"name": "x"}], r"unit 0 \('x'\): formula: expected a formula text"),
        ([{"formula": "color=red", "noise": -1}], "noise: expected a number >= 0"),
        ([{"formula": "color=red", "noise": "big"}], "noise: expected a number >= 0"),
        (
            [{"formula": "color=red"}, {"name": "s", "formula": "colour=red AND shape=star"}],
            r"unit 1 \('s'\): unknown concept 'colour=red' \(did you mean color=red, color=blue\?\)",
        ),
        ([{"formula": "shape=cube"}], "unknown concept 'shape=cube'"),
        ([{"formula": "color=red AND color=blue"}], "covers none of the 6 probe images"),
        ([{"formula": "color=red AND"}], "unit 0 .*expected"),
        ([{"formula": "color=red"}, {"formula": "shape=star", "name": "unit-000"}], "used by two"),
    ],
)
def test_parse_spec_rejects_bad_specs(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(data, _toy(), source="spec.yaml")


def test_load_spec_from_yaml(tmp_path: Path) -> None:
    spec = tmp_path / "units.yaml"
    spec.write_text("- formula: color=red\n- name: rs\n  formula: shape=star OR color=red\n")
    units = load_spec(spec, _toy(), default_noise=0.0)
    assert [(u.name, u.kind, u.noise) for u in units] == [
        ("unit-000", "mono", 0.0),
        ("rs", "or", 0.0),
    ]
    with pytest.raises(ValueError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml", _toy())
    (tmp_path / "bad.yaml").write_text("- formula: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_spec(tmp_path / "bad.yaml", _toy())


def test_parse_formula_keeps_the_syntax_error_of_the_text() -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_formula("(color=red AND shape=star", _toy().names)
    assert parse_formula("shape=star OR color=red", _toy().names) == Or(Leaf(1), Leaf(2))


# --- Metrics -----------------------------------------------------------------------------------


def test_concept_prf_hand_cases() -> None:
    assert concept_prf({"a"}, {"a"}) == (1.0, 1.0, 1.0)
    assert concept_prf({"a", "b"}, {"a"}) == (0.5, 1.0, pytest.approx(2 / 3))
    assert concept_prf({"a"}, {"a", "b"}) == (1.0, 0.5, pytest.approx(2 / 3))
    assert concept_prf({"c"}, {"a", "b"}) == (0.0, 0.0, 0.0)
    assert concept_prf(set(), {"a"}) == (0.0, 0.0, 0.0)
    assert concept_prf({"a", "b", "c"}, {"a", "b"}) == (
        pytest.approx(2 / 3),
        1.0,
        pytest.approx(0.8),
    )


def test_exact_and_same_images_matches() -> None:
    toy = _toy()
    names, matrix = toy.names, toy.matrix
    red_circle = And(Leaf(0), Leaf(2))
    assert exact_match(And(Leaf(2), Leaf(0)), red_circle, names)  # commutative
    assert not exact_match(AndNot(Leaf(0), Leaf(3)), red_circle, names)
    # on this probe "circle and not blue" is "red circle": same images, not the same formula
    assert covers_same_images(AndNot(Leaf(0), Leaf(3)), red_circle, matrix)
    assert not covers_same_images(Leaf(0), red_circle, matrix)
    assert not exact_match(None, red_circle, names)
    assert not covers_same_images(None, red_circle, matrix)
    assert concept_set(AndNot(Or(Leaf(0), Leaf(1)), Leaf(3)), names) == {
        "shape=circle",
        "shape=star",
        "color=blue",
    }


def test_score_unit_and_summarize() -> None:
    toy = _toy()
    common = {"names": toy.names, "matrix": toy.matrix, "iou": 0.5}
    scores = [
        score_unit(name="m", kind="mono", true=Leaf(2), predicted=Leaf(2), status="ok", **common),
        score_unit(
            name="a",
            kind="and",
            true=And(Leaf(0), Leaf(2)),
            predicted=AndNot(Leaf(0), Leaf(3)),
            status="ok",
            **common,
        ),
        score_unit(
            name="n",
            kind="and",
            true=And(Leaf(1), Leaf(3)),
            predicted=None,
            status="empty",
            reason="constant",
            **common,
        ),
    ]
    assert scores[1].exact is False and scores[1].same_images is True
    assert scores[1].predicted_formula == "(shape=circle AND NOT color=blue)"
    assert (scores[1].precision, scores[1].recall) == (0.5, 0.5)
    assert scores[2] == UnitScore(
        name="n",
        kind="and",
        true_formula="(shape=star AND color=blue)",
        predicted_formula="",
        status="empty",
        reason="constant",
        exact=False,
        same_images=False,
        precision=0.0,
        recall=0.0,
        f1=0.0,
        iou=0.5,
    )
    rows = {row.kind: row for row in summarize(scores)}
    assert list(rows) == ["mono", "and", "all"]
    assert (rows["and"].n, rows["and"].exact, rows["and"].same_images) == (2, 0.0, 0.5)
    assert rows["all"].n == 3 and rows["all"].exact == pytest.approx(1 / 3)
    assert rows["all"].f1 == pytest.approx((1.0 + 0.5 + 0.0) / 3)


# --- CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--explainer", "openai"], "add --through model"),
        (["--explainer", "magic"], "unknown explainer 'magic'; available: offline, clip, clip-formula, openai"),
        (["--n", "5", "--spec", "x.yaml"], "not both"),
        (["--kinds", "mono,xor"], "kinds: expected some of"),
        (["--noise", "-1"], "noise: expected >= 0"),
    ],
)
def test_eval_synthetic_user_errors(argv: list[str], message: str, capsys) -> None:
    assert main(["eval", "synthetic", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def small_rendered_probe(tmp_path_factory) -> Path:
    from unity_pool.probeset import ProbeSetParams, write_probe_set

    root = tmp_path_factory.mktemp("rendered") / "probe"
    write_probe_set(root, ProbeSetParams(n=60, seed=0, size=32), progress=False)
    return root


def test_eval_synthetic_spec_on_a_probe_directory(small_rendered_probe: Path, tmp_path, capsys):
    spec = tmp_path / "units.yaml"
    spec.write_text("- formula: n_objects=1\n- formula: size=large OR size=small\n")
    assert (
        main(
            [
                "eval",
                "synthetic",
                "--spec",
                str(spec),
                "--probe",
                str(small_rendered_probe),
                "--noise",
                "0",
                "--quantile",
                "0.5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 synthetic units (spec ") and "60 probe images" in out[0]
    assert out[1].split() == [
        "kind",
        "n",
        "exact",
        "same-images",
        "precision",
        "recall",
        "F1",
        "mean",
        "IoU",
    ]
    assert [line.split()[0] for line in out[2:]] == ["mono", "or", "all"]
    spec.write_text("- formula: colour=red\n")
    assert (
        main(["eval", "synthetic", "--spec", str(spec), "--probe", str(small_rendered_probe)]) == 2
    )
    err = capsys.readouterr().err
    assert "unit 0 ('unit-000'): unknown concept 'colour=red' (did you mean color=red" in err


@pytest.mark.slow
def test_eval_synthetic_meets_the_issue_targets_on_a_rendered_probe(monkeypatch, tmp_path, capsys):
    """Issue 8's targets for the offline explainer: >= 95% exact on mono units and >= 80% on a
    mix of 100 random units, on the default 1000-image rendered probe set (rendered here once,
    about 10 s). Smaller sets miss them: 600 images give 32-52% exact on ORs and 79-84% overall
    (seeds 0-4); 800 images hold on the mix but 92.5% on all 40 mono concepts (seed 0)."""
    monkeypatch.setenv("COIN_SCALE_CACHE", str(tmp_path.parent / "shared-cache"))
    argv = ["eval", "synthetic", "--n", "100", "--seed", "0", "--json", "--no-progress"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["kind"]: row for row in report["summary"]}
    assert report["images"] == 1000 and rows["all"]["n"] == 100
    assert list(rows) == ["mono", "or", "and", "and_not", "all"]
    assert rows["mono"]["exact"] >= 0.95
    assert rows["all"]["exact"] >= 0.80
    assert len(report["units"]) == 100 and {"exact", "true_formula"} <= set(report["units"][0])
    argv = ["eval", "synthetic", "--n", "40", "--seed", "1", "--kinds", "mono", "--json"]
    assert main([*argv, "--no-progress"]) == 0
    mono = json.loads(capsys.readouterr().out)["summary"]
    assert mono[0]["kind"] == "mono" and mono[0]["n"] == 40 and mono[0]["exact"] >= 0.95
