"""Explanations of units: concepts of a probe set, formulas over them, offline beam search."""

from coin_scale.explain.concepts import ConceptMatrix, concepts_from_probe
from coin_scale.explain.formula import (
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
from coin_scale.explain.offline import OfflineExplainerConfig, UnitExplanation, explain_units

__all__ = [
    "OPERATORS",
    "And",
    "AndNot",
    "ConceptMatrix",
    "Formula",
    "Leaf",
    "OfflineExplainerConfig",
    "Or",
    "UnitExplanation",
    "canonical_text",
    "concepts_from_probe",
    "evaluate",
    "explain_units",
    "to_text",
    "to_words",
]
