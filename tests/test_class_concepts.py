"""A class explanation made of concepts: contributions summed per concept, with the remainder."""

from __future__ import annotations

import math

import pytest

from coin_scale.sweep.class_concepts import concept_paragraph, concept_shares, formula_terms
from coin_scale.sweep.records import UnitFinding


def _unit(unit: int, contribution: float, *, label: str | None = None, formula: str | None = None,
          score: float | None = None, score_name: str | None = None, layer: str = "layer4",
          status: str = "ok") -> UnitFinding:  # fmt: skip
    return UnitFinding(
        layer=layer, unit=unit, rank=0, contribution=contribution, share=math.nan,
        status=status if label or status != "ok" else None, label=label, formula=formula,  # type: ignore[arg-type]
        score=score, score_name=score_name,
    )  # fmt: skip


def test_positive_terms_of_a_formula_are_its_concepts() -> None:
    assert formula_terms("((dog AND tall grass) AND NOT indoor)") == (["dog", "tall grass"], ["indoor"])
    assert formula_terms("(color=red OR shape=star)") == (["color=red", "shape=star"], [])
    assert formula_terms("fur") == (["fur"], [])


def test_contributions_are_summed_per_concept_with_the_unexplained_part_and_the_rest() -> None:
    findings = [
        _unit(12, 3.0, label="furry texture", formula="texture=fur", score=0.4, score_name="iou"),
        _unit(407, 2.0, label="cat face", score=0.9, score_name="soft_wpmi"),
        _unit(1733, 1.0, label="furry texture", formula="texture=fur", score=0.2, score_name="iou"),
        _unit(5, 2.0, label="dog and grass, not indoor", formula="((dog AND grass) AND NOT indoor)"),
        _unit(9, 0.5, status="empty"),
        _unit(3, -1.0, label="snow", score=0.5, score_name="soft_wpmi"),
    ]
    rows = concept_shares(layer="layer4", logit=10.0, findings=findings)
    by = {(r.part, r.concept): r for r in rows}
    fur = by[("concept", "furry texture")]
    assert (fur.contribution, fur.share, fur.units) == (4.0, 0.4, (12, 1733))
    assert fur.mean_score == pytest.approx(0.3) and fur.score_name == "iou"
    assert by[("concept", "dog")].contribution == 1.0 and by[("concept", "grass")].units == (5,)
    assert ("concept", "indoor") not in by  # a negated concept gets no credit
    assert by[("concept", "snow")].share == -0.1
    assert by[("unexplained", "")].contribution == 0.5 and by[("unexplained", "")].units == (9,)
    assert by[("rest", "")].contribution == pytest.approx(10.0 - 7.5)
    # every part together is the logit
    assert sum(r.contribution for r in rows) == pytest.approx(10.0)
    assert [r.concept for r in rows if r.part == "concept"] == [
        "furry texture", "cat face", "dog", "grass", "snow",
    ]  # fmt: skip
    text = concept_paragraph(class_name="tabby", probability=0.81, layer="layer4", shares=rows)
    assert text == (
        "Predicted tabby (p=0.81) because of furry texture (40% of the logit, units 12, 1733), "
        "cat face (20%, unit 407), dog (10%, unit 5), grass (10%, unit 5); held back by snow "
        "(-10%, unit 3); selected units without a label: 5%; the rest of layer4 and the bias: 25%."
    )


def test_chain_layers_are_shared_by_their_drive_into_the_chain() -> None:
    findings = [_unit(1, 2.0, label="wheel")]
    nodes = [
        _unit(7, 0.6, label="circle", layer="layer3"),
        _unit(8, 0.2, label="circle", layer="layer3"),
        _unit(9, 0.2, layer="layer3", status="empty"),
    ]
    rows = concept_shares(layer="layer4", logit=4.0, findings=findings, chain_nodes=nodes)
    chain = [r for r in rows if r.layer == "layer3"]
    assert [(r.part, r.concept, r.share, r.units) for r in chain] == [
        ("concept", "circle", pytest.approx(0.8), (7, 8)), ("unexplained", "", pytest.approx(0.2), (9,)),
    ]  # fmt: skip
    text = concept_paragraph(class_name="car", probability=0.5, layer="layer4", shares=rows)
    assert text.endswith(" In layer3, by drive into these units: circle (80%, units 7, 8).")


def test_a_logit_that_is_not_positive_gives_contributions_not_shares() -> None:
    rows = concept_shares(layer="l", logit=-1.0, findings=[_unit(1, 0.5, label="red")])
    assert math.isnan(rows[0].share)
    text = concept_paragraph(class_name="x", probability=0.1, layer="l", shares=rows)
    assert "red (+0.50, unit 1)" in text and "the rest of l and the bias: -1.50" in text
