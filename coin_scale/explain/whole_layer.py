"""Every unit of a dissected layer explained at once (`coin-scale dissect --explain offline`): the
offline explainer over the dissection's dense activations, one `explanations` row per unit."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.offline import OfflineExplainerConfig, UnitExplanation, explain_units
from coin_scale.explain.resume import ExplainCheckpoint, clear_run, scope_name
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec

CHUNK_UNITS = 128
"""Units explained (and checkpointed) at a time."""


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
    chunk: int = CHUNK_UNITS,
) -> LayerExplanations:
    """Explain every unit of `evidence` and store the rows under `run_id` (replacing a rerun's).

    Units are explained `chunk` at a time, each chunk checkpointed, so a rerun of a killed run
    explains only the units not yet done (the explainer treats every unit on its own, so the
    result is the same)."""
    config = config or OfflineExplainerConfig()
    n_units = int(evidence.activations.shape[1])
    ckpt = ExplainCheckpoint(warehouse.fs, run_id, scope_name("offline", evidence.dissection_id, repr(config)))
    done = {e.unit: e for piece in ckpt.pieces().values() for e in map(_from_json, piece)}
    if done:
        print(f"resuming run {run_id}: {len(done)}/{n_units} units already explained",
              file=sys.stderr, flush=True)  # fmt: skip
    missing = [u for u in range(n_units) if u not in done]
    for start in range(0, len(missing), chunk):
        units = missing[start : start + chunk]
        found = explain_units(evidence.activations[:, units], evidence.concepts, config)
        explained = [replace(e, unit=u) for u, e in zip(units, found, strict=True)]
        ckpt.put_json(f"units-{units[0]:07d}", [asdict(e) for e in explained])
        done.update((e.unit, e) for e in explained)
    everything = tuple(done[u] for u in range(n_units))
    rows = [_row(e, run_id, model, layer, kind, evidence.dissection_id) for e in everything]
    warehouse.write("explanations", get_spec("explanations").from_dicts(rows), key=run_id)
    clear_run(warehouse.fs, run_id)
    return LayerExplanations(run_id=run_id, explanations=everything)


def _from_json(value: dict[str, Any]) -> UnitExplanation:
    return UnitExplanation(**value)


def _row(
    e: UnitExplanation, run_id: str, model: str, layer: str, kind: str, dissection_id: str
) -> dict[str, Any]:
    """The `explanations` row of one unit."""
    ok = e.status == "explained"
    return {
        "run_id": run_id, "model": model, "layer": layer, "unit": e.unit, "kind": kind,
        "explainer": "offline", "status": "ok" if ok else "empty", "label": e.label or None,
        "description": e.description, "formula": e.formula or None,
        "score": e.iou if ok else None, "score_name": "iou" if ok else None,
        "dissection_id": dissection_id,
    }  # fmt: skip
