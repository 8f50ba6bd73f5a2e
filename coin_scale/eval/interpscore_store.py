"""Store InterpScore results in the warehouse's `scores` table (test 'interpscore')."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from coin_scale.errors import UserError
from coin_scale.eval.interpscore_batch import InterpBatchConfig, UnitResult
from coin_scale.storage import Warehouse
from coin_scale.storage.runs import RunRecorder, new_run_id
from coin_scale.storage.schemas import get_spec
from coin_scale.storage.spec import check_safe_name


@dataclass
class InterpStore:
    """A writable warehouse and the recorder of the run its rows go under (checked before any work
    is saved): `with store.recorder:` writes 'running', then 'complete' or 'failed'."""

    warehouse: Warehouse
    recorder: RunRecorder

    @property
    def run_id(self) -> str:
        return self.recorder.run_id

    @classmethod
    def open(
        cls, root: str, run_id: str | None, *, config: InterpBatchConfig, source: str
    ) -> InterpStore:
        """The store of a run scoring the trials CSV `source` with `config` (not started yet)."""
        try:
            run_id = check_safe_name(run_id or new_run_id(), "--run-id")
        except ValueError as err:
            raise UserError(str(err)) from None
        warehouse = Warehouse(root)
        warehouse.check_writable()
        recorder = RunRecorder(
            warehouse=warehouse, run_id=run_id, command="interpscore", model="(trials CSV)",
            weights="(trials CSV)", layers=(), probe=source, config=asdict(config),
        )  # fmt: skip
        return cls(warehouse, recorder)

    def write(self, results: Sequence[UnitResult]) -> None:
        """Scores first, then the run row that says they are complete."""
        self.warehouse.write(
            "scores",
            get_spec("scores").from_dicts(csv_score_rows(self.run_id, results)),
            key=self.run_id,
        )
        self.recorder.complete(n_failed=0)


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
