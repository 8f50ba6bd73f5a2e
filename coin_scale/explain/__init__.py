"""Explanations of units behind one protocol (`coin_scale.explain.registry`): the offline explainer
(compositional formulas over a probe's concepts, found by beam search and scored by IoU) and the
LLM explainers' agents, each returning one `Explanation` per unit. Concepts and formulas
themselves are `coin_scale.concepts`.

The names below are imported on first use, so the command line can read the registry without
loading torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coin_scale.explain.explanation import Explanation
    from coin_scale.explain.offline import OfflineExplainer, OfflineExplainerConfig, explain_units

__all__ = ["Explanation", "OfflineExplainer", "OfflineExplainerConfig", "explain_units"]
_HOMES = {"Explanation": "explanation", "OfflineExplainer": "offline",
          "OfflineExplainerConfig": "offline", "explain_units": "offline"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"coin_scale.explain.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'coin_scale.explain' has no attribute {name!r}")
