"""Evaluation of explainers against ground truth: synthetic units and label accuracy, and the
Machine Interpretability Score of units (issue 8)."""

from coin_scale.concepts.synthetic import (
    FORMULA_KINDS,
    FormulaKind,
    SyntheticUnit,
    load_spec,
    parse_spec,
    random_units,
    synthetic_activations,
)
from coin_scale.eval.metrics import KindSummary, UnitScore, concept_prf, summarize
from coin_scale.eval.mis import MISConfig, MISTask, TaskAnswer, UnitMIS, build_tasks, score_tasks

__all__ = [
    "FORMULA_KINDS",
    "FormulaKind",
    "KindSummary",
    "MISConfig",
    "MISTask",
    "SyntheticUnit",
    "TaskAnswer",
    "UnitMIS",
    "UnitScore",
    "build_tasks",
    "concept_prf",
    "load_spec",
    "parse_spec",
    "random_units",
    "score_tasks",
    "summarize",
    "synthetic_activations",
]
