"""The text-to-concept matcher: free-text labels read as rendered-attribute concepts and formulas."""

from __future__ import annotations

import random

import pytest

from coin_scale.concepts.formula import And, AndNot, Leaf, Or, canonical_text, parse_text, to_words
from coin_scale.eval.matcher import CONCEPTS, PHRASES, match_concepts, text_formula_text
from coin_scale.eval.metrics import concept_prf, concept_set


def test_every_concept_has_a_phrase_and_every_phrase_a_known_concept():
    assert set(PHRASES.values()) == set(CONCEPTS)


@pytest.mark.parametrize(
    ("text", "positive", "negative"),
    [
        ("red, not dim light, not checkered texture", ["color=red"], ["light=dim", "texture=checker"]),
        ("Fires on striped hexagons in the upper-left, but not on red ones",
         ["texture=stripes", "shape=hexagon", "position=top-left"], ["color=red"]),
        ("non-white rings", ["shape=ring"], ["color=white"]),
        ("circular objects without fur; bright", ["shape=circle", "light=bright"], ["texture=fur"]),
        ("stars that are not red or blue", ["shape=star"], ["color=red", "color=blue"]),
        ("nothing I can name", [], []),
    ],
)  # fmt: skip
def test_concepts_and_their_negations_are_found(text, positive, negative):
    match = match_concepts(text)
    assert list(match.positive) == positive and list(match.negative) == negative


@pytest.mark.parametrize(
    ("text", "formula"),
    [
        ("(cross or red), not position bottom-right", "((shape=cross OR color=red) AND NOT position=bottom-right)"),
        ("red star or a square", "(color=red AND (shape=star OR shape=square))"),
        ("red or blue stars", "((color=red OR color=blue) AND shape=star)"),
        ("a red star", "(color=red AND shape=star)"),
        ("stars, circles", "(shape=star OR shape=circle)"),
    ],
)  # fmt: skip
def test_text_is_read_as_a_formula(text, formula):
    assert text_formula_text(text, CONCEPTS) == formula


def test_a_text_that_affirms_nothing_has_no_formula():
    assert text_formula_text("not red", CONCEPTS) is None
    assert text_formula_text("a cat", CONCEPTS) is None


def test_names_restrict_the_concepts_matched():
    match = match_concepts("red star", names=["shape=star"])
    assert match.positive == ("shape=star",)


def test_the_offline_explainers_words_read_back_as_their_formula():
    """Every random synthetic unit's formula, written in words, reads back to the same concepts,
    and to the same formula for all but a few bracketings."""
    rng = random.Random(3)
    formulas = []
    for _ in range(200):
        a, b, c = (Leaf(CONCEPTS.index(n)) for n in rng.sample(CONCEPTS, 3))
        formulas.append(rng.choice([a, Or(a, b), And(a, b), AndNot(a, b), AndNot(Or(a, b), c)]))
    same_formula = 0
    for formula in formulas:
        words = to_words(formula, CONCEPTS)
        match = match_concepts(words)
        assert concept_prf(match.concepts, concept_set(formula, CONCEPTS))[2] == 1.0, words
        read = text_formula_text(words, CONCEPTS)
        read_formula = parse_text(read, CONCEPTS) if read else None
        if read_formula is not None and canonical_text(read_formula, CONCEPTS) == canonical_text(
            formula, CONCEPTS
        ):
            same_formula += 1
    assert same_formula >= 0.8 * len(formulas), same_formula
