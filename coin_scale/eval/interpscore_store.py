"""Store InterpScore results in the warehouse's `scores` table (test 'interpscore')."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import coin_scale
from coin_scale.eval.interpscore_batch import InterpBatchConfig, UnitResult
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec


@dataclass
class InterpStore:
    """A writable warehouse and the run id its rows go under (checked before any work is saved)."""

    warehouse: Warehouse
    run_id: str
    started_at: datetime

    @classmethod
    def open(cls, root: str, run_id: str | None) -> InterpStore:
        from coin_scale.dissect.pipeline import new_run_id

        warehouse = Warehouse(root)
        warehouse.check_writable()
        return cls(warehouse, run_id or new_run_id(), datetime.now(UTC))

    def write(
        self, results: Sequence[UnitResult], config: InterpBatchConfig, *, source: str
    ) -> None:
        """Scores first, then the run row that says they are complete."""
        self.warehouse.write(
            "scores",
            get_spec("scores").from_dicts(csv_score_rows(self.run_id, results)),
            key=self.run_id,
        )
        settings = asdict(config)
        self.warehouse.write("runs", get_spec("runs").from_dicts([{
            "run_id": self.run_id, "command": "interpscore", "status": "complete",
            "model": "(trials CSV)", "weights": "(trials CSV)", "layers": [], "probe": source,
            "config_json": json.dumps(settings, sort_keys=True, default=str),
            "coin_scale_version": coin_scale.__version__, "started_at": self.started_at,
            "finished_at": datetime.now(UTC), "n_images": None, "n_failed": 0, "message": None,
        }]), key=self.run_id)  # fmt: skip


def csv_score_rows(run_id: str, results: Sequence[UnitResult]) -> list[dict]:
    """One row per measured number: S, C, R, H, interpscore, and the detector's f1, iou, auprc."""
    rows = []
    for r in results:
        i, d = r.interp, r.clean_detection
        details = json.dumps({
            "unit_id": r.unit, "concept": r.concept, "parts": list(i.parts), "notes": list(i.notes),
            "threshold": r.threshold, "n_clean_concept": r.n_clean_concept,
            "n_clean_other": r.n_clean_other, "n_high": r.n_high,
        })  # fmt: skip
        values = {"S": i.S, "C": i.C, "R": i.R, "H": i.H, "interpscore": i.score,
                  "f1": d.f1, "iou": d.iou, "auprc": d.auprc}  # fmt: skip
        for metric, value in values.items():
            if value is None:
                continue
            rows.append({
                "run_id": run_id, "test": "interpscore", "metric": metric, "value": float(value),
                "layer": None, "unit": int(r.unit),
                "kind": None, "details": details,
            })  # fmt: skip
    return rows
