"""Concepts of probe images and formulas over them: the (image x concept) matrix a concept source
produces, the AND / OR / AND NOT formulas explainers search, and ground-truth synthetic units
defined by such formulas. Pure code over tensors: models, explainers and evaluation all use it."""

from coin_scale.concepts.formula import (
    OPERATORS,
    And,
    AndNot,
    Formula,
    Leaf,
    Or,
    canonical_text,
    evaluate,
    to_text,
    to_words,
)
from coin_scale.concepts.matrix import ConceptMatrix, filter_concepts

__all__ = [
    "OPERATORS",
    "And",
    "AndNot",
    "ConceptMatrix",
    "Formula",
    "Leaf",
    "Or",
    "canonical_text",
    "filter_concepts",
    "evaluate",
    "to_text",
    "to_words",
]
