"""The sweep's LLM step: each selected unit explained by an agent that experiments on it.

Exemplars come from the dissection's `exemplars` table (with ground-truth attributes for a
rendered probe set); activations on new images are measured with the sweep's own module; renders
and edits go through the in-process procedural renderer. The agents' steps and the gateway's
ledger are written as soon as the agents finish (they were paid for), keyed by the run id.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import torch

from coin_scale.agent import ExperimentTools, TorchUnitMeter, UnitSubject, exemplars_from_paths
from coin_scale.explain.llm import PreparedLLM, explain_subjects
from coin_scale.models import ModelPayload
from coin_scale.models.layers import LayerInfo
from coin_scale.storage import Warehouse, connect
from coin_scale.storage.schemas import experiments, get_spec, llm_calls
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.evidence import LayerEvidence
from coin_scale.sweep.records import UnitFinding
from unity_pool.tools import LocalRenderer, RenderTools

log = logging.getLogger(__name__)

AGENT_EXEMPLARS = 12
"""Exemplars each agent can see (the first message shows `AgentConfig.exemplars_shown`)."""


def explain_with_agents(
    config: SweepConfig,
    prepared: PreparedLLM,
    evidence: LayerEvidence,
    payload: ModelPayload,
    module: torch.nn.Module,
    layer: LayerInfo,
    units: list[int],
    *,
    run_id: str,
) -> dict[int, UnitFinding]:
    """A finding (label or error, never both) per unit; stores `experiments` and `llm_calls`."""
    rows = (
        connect(config.warehouse)
        .execute(
            "SELECT unit, image_path, activation FROM exemplars "
            "WHERE dissection_id = ? AND rank < ? ORDER BY unit, rank",
            [evidence.dissection_id, AGENT_EXEMPLARS],
        )
        .fetchall()
    )
    top: dict[int, list[tuple[str, float]]] = {}
    for unit, path, activation in rows:
        top.setdefault(int(unit), []).append((str(path), float(activation)))
    attributes = evidence.probe.attributes_path
    subjects = [
        UnitSubject(
            model=payload.model_id, layer=layer.name, unit=unit,
            exemplars=exemplars_from_paths(top.get(unit, []), attributes_path=attributes, max_side=256),
        )  # fmt: skip
        for unit in units
    ]

    def make_tools(subject: UnitSubject) -> ExperimentTools:
        meter = TorchUnitMeter(module, payload.preprocess, layer.name, layer.layout, subject.unit)
        return ExperimentTools(subject, meter, RenderTools(renderer=LocalRenderer()))

    result = explain_subjects(
        prepared, subjects, make_tools, run_id=run_id, address=config.address,
        progress=config.progress,
    )  # fmt: skip
    warehouse = Warehouse(config.warehouse)
    steps = [row for outcome in result.outcomes for row in outcome.experiments]
    warehouse.write("experiments", _table(experiments.to_arrow(steps), "experiments"), key=run_id)
    warehouse.write("llm_calls", _table(llm_calls.to_arrow(result.calls), "llm_calls"), key=run_id)
    spent = sum(c.cost_usd for c in result.calls)
    failed = [o for o in result.outcomes if o.status != "ok"]
    log.info(
        "%d units explained by %s:%s in %d calls, $%.4f; %d failed",
        len(units) - len(failed), prepared.config.provider, prepared.model, len(result.calls),
        spent, len(failed),
    )  # fmt: skip
    findings = {}
    for unit, outcome in zip(units, result.outcomes, strict=True):
        ok = outcome.status == "ok"
        findings[unit] = UnitFinding(
            layer=layer.name, unit=unit, rank=0, contribution=0.0, share=0.0,
            label=outcome.label if ok else None, description=outcome.description if ok else None,
            confidence=outcome.confidence if ok else None, explainer=prepared.config.provider,
            error=None if ok else f"{outcome.status}: {outcome.error or 'no valid answer'}",
        )  # fmt: skip
    return findings


def _table(table: pa.Table, name: str) -> pa.Table:
    return table if table.num_rows else get_spec(name).empty()
