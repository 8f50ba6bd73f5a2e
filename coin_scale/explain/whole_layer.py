"""Every unit of a dissected layer explained at once (`coin-scale dissect --explain offline`): the
offline explainer over the dissection's dense activations, one `explanations` row per unit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from coin_scale.explain.offline import OfflineExplainerConfig, UnitExplanation, explain_units
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec
from coin_scale.sweep.evidence import LayerEvidence


@dataclass(frozen=True)
class LayerExplanations:
    """A layer's explanations and how they went."""

    run_id: str
    explanations: tuple[UnitExplanation, ...]

    @property
    def statuses(self) -> Counter[str]:
        return Counter(e.status for e in self.explanations)

    @property
    def mean_iou(self) -> float:
        ok = [e.iou for e in self.explanations if e.status == "explained"]
        return sum(ok) / len(ok) if ok else 0.0

    def best(self, n: int) -> list[UnitExplanation]:
        ok = [e for e in self.explanations if e.status == "explained"]
        return sorted(ok, key=lambda e: (-e.iou, e.unit))[:n]


def explain_whole_layer(
    evidence: LayerEvidence,
    warehouse: Warehouse,
    *,
    run_id: str,
    model: str,
    layer: str,
    kind: str,
    config: OfflineExplainerConfig | None = None,
) -> LayerExplanations:
    """Explain every unit of `evidence` and store the rows under `run_id` (replacing a rerun's)."""
    explained = tuple(
        explain_units(evidence.activations, evidence.concepts, config or OfflineExplainerConfig())
    )
    rows = [
        {
            "run_id": run_id, "model": model, "layer": layer, "unit": e.unit, "kind": kind,
            "explainer": "offline", "status": "ok" if e.status == "explained" else "empty",
            "label": e.label or None, "description": e.description, "formula": e.formula or None,
            "score": e.iou if e.status == "explained" else None,
            "score_name": "iou" if e.status == "explained" else None,
            "dissection_id": evidence.dissection_id,
        }
        for e in explained
    ]  # fmt: skip
    warehouse.write("explanations", get_spec("explanations").from_dicts(rows), key=run_id)
    return LayerExplanations(run_id=run_id, explanations=explained)
