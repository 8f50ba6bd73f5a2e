"""The sweep's LLM step: each selected unit explained by an agent that experiments on it.

Exemplars come from the dissection's `exemplars` table (with ground-truth attributes for a
rendered probe set); activations on new images are measured with the sweep's own module; renders
and edits go through the in-process procedural renderer. The agents' steps and the gateway's
ledger are written as soon as the agents finish (they were paid for), keyed by the run id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from coin_scale.agent import (
    AgentOutcome,
    ExperimentTools,
    TorchUnitMeter,
    UnitSubject,
    exemplars_from_paths,
)
from coin_scale.dissect.activations import SAEUnits, sae_code_maps
from coin_scale.explain.llm import PreparedLLM, explain_subjects
from coin_scale.models import ModelPayload
from coin_scale.models.layers import LayerInfo
from coin_scale.storage import Warehouse, connect
from coin_scale.storage.schemas import experiments, llm_calls
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.evidence import LayerEvidence
from unity_pool.tools import LocalRenderer, RenderTools

log = logging.getLogger(__name__)

AGENT_EXEMPLARS = 12
"""Exemplars each agent can see (the first message shows `AgentConfig.exemplars_shown`)."""


@dataclass
class AgentLedger:
    """The agents' steps and LLM calls of one run, over several layers: each layer's rows are
    written as soon as its agents finish (they were paid for), together with the earlier ones,
    since a write replaces the run's rows."""

    warehouse: Warehouse
    run_id: str
    steps: list[experiments.Row] = field(default_factory=list)
    calls: list[llm_calls.Row] = field(default_factory=list)

    def add(self, steps: list[experiments.Row], calls: list[llm_calls.Row]) -> None:
        self.steps += steps
        self.calls += calls
        self.warehouse.write("experiments", experiments.to_arrow(self.steps), key=self.run_id)
        self.warehouse.write("llm_calls", llm_calls.to_arrow(self.calls), key=self.run_id)


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
    sae: SAEUnits | None = None,
    ledger: AgentLedger | None = None,
) -> dict[int, AgentOutcome]:
    """Each unit's agent outcome (a label or an error, never both); stores `experiments` and
    `llm_calls` (through `ledger`, which keeps the rows of earlier calls in the same run). With
    `sae` the units are its features: agents measure them through it."""
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
            model=payload.model_id, layer=layer.name, unit=unit, kind="sae" if sae else "neuron",
            exemplars=exemplars_from_paths(top.get(unit, []), attributes_path=attributes, max_side=256),
        )  # fmt: skip
        for unit in units
    ]

    transform = sae_code_maps(sae.build()) if sae else None

    def make_tools(subject: UnitSubject) -> ExperimentTools:
        meter = TorchUnitMeter(
            module, payload.preprocess, layer.name, layer.layout, subject.unit, transform=transform
        )
        return ExperimentTools(subject, meter, RenderTools(renderer=LocalRenderer()))

    result = explain_subjects(
        prepared, subjects, make_tools, run_id=run_id, address=config.address,
        progress=config.progress,
    )  # fmt: skip
    ledger = ledger or AgentLedger(Warehouse(config.warehouse), run_id)
    ledger.add([row for outcome in result.outcomes for row in outcome.experiments], result.calls)
    failed = sum(o.status != "ok" for o in result.outcomes)
    log.info(
        "%d units explained by %s:%s in %d calls, $%.4f; %d failed",
        len(units) - failed, prepared.config.provider, prepared.model, len(result.calls),
        sum(c.cost_usd for c in result.calls), failed,
    )  # fmt: skip
    return dict(zip(units, result.outcomes, strict=True))
