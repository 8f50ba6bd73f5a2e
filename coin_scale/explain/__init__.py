"""Explanations of units: the offline explainer (compositional formulas over a probe's concepts,
found by beam search and scored by IoU) and the LLM explainers' agents. Concepts and formulas
themselves are `coin_scale.concepts`."""

from coin_scale.explain.offline import OfflineExplainerConfig, UnitExplanation, explain_units

__all__ = ["OfflineExplainerConfig", "UnitExplanation", "explain_units"]
