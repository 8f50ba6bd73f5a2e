"""Evaluation of explainers against ground truth: synthetic units and label accuracy (issue 8)."""

from coin_scale.eval.metrics import KindSummary, UnitScore, concept_prf, summarize
from coin_scale.eval.synthetic import (
    FORMULA_KINDS,
    FormulaKind,
    SyntheticUnit,
    load_spec,
    parse_spec,
    random_units,
    synthetic_activations,
)

__all__ = [
    "FORMULA_KINDS",
    "FormulaKind",
    "KindSummary",
    "SyntheticUnit",
    "UnitScore",
    "concept_prf",
    "load_spec",
    "parse_spec",
    "random_units",
    "summarize",
    "synthetic_activations",
]
