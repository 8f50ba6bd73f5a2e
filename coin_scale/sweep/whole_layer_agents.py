"""Every unit of a dissected layer explained by LLM agents (`coin-scale dissect --explain openai`):
one agent per unit, as in a sweep (exemplars from the dissection, renders and edits measured
through the model, `visualize(n)`), through the rate-limited gateway actors on Ray; one
`explanations` row per unit. A killed run resumes with `--run-id` (finished units are
checkpointed by the sweep's agent step, and answered requests are in the request cache).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from coin_scale.agent import AgentOutcome
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.llm import PreparedLLM
from coin_scale.explain.resume import clear_run
from coin_scale.models import ModelPayload
from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import LayerInfo
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec
from coin_scale.sweep.agents import AgentRun, explain_with_agents


@dataclass(frozen=True)
class LayerAgentExplanations:
    """The agents' outcomes for every unit of a layer, and what they cost."""

    run_id: str
    outcomes: dict[int, AgentOutcome]

    @property
    def statuses(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes.values())

    @property
    def cost_usd(self) -> float:
        return sum(o.cost_usd for o in self.outcomes.values())

    @property
    def tokens(self) -> int:
        return sum(o.input_tokens + o.output_tokens for o in self.outcomes.values())


def explain_whole_layer_with_agents(
    prepared: PreparedLLM,
    evidence: LayerEvidence,
    payload: ModelPayload,
    module: torch.nn.Module,
    layer: LayerInfo,
    warehouse: str,
    *,
    run_id: str,
    kind: str,
    sae: SAEUnits | None = None,
    address: str | None = None,
    progress: bool = True,
) -> LayerAgentExplanations:
    """Explain every unit of `evidence` with its own agent and store the rows under `run_id`
    (with the agents' steps in `experiments` and their requests in `llm_calls`)."""
    units = list(range(int(evidence.activations.shape[1])))
    run = AgentRun(
        prepared=prepared, warehouse=warehouse, run_id=run_id, address=address, progress=progress
    )
    outcomes = explain_with_agents(run, evidence, payload, module, layer, units, sae=sae)
    rows = [
        _row(outcomes[u], u, run_id, payload.model_id, layer.name, kind, prepared, evidence)
        for u in units
    ]
    wh = Warehouse(warehouse)
    wh.write("explanations", get_spec("explanations").from_dicts(rows), key=run_id)
    clear_run(wh.fs, run_id)
    return LayerAgentExplanations(run_id=run_id, outcomes=outcomes)


def _row(
    o: AgentOutcome,
    unit: int,
    run_id: str,
    model: str,
    layer: str,
    kind: str,
    prepared: PreparedLLM,
    evidence: LayerEvidence,
) -> dict[str, Any]:
    """The `explanations` row of one unit: the agent's label and confidence, or its error."""
    ok = o.status == "ok" and bool(o.label)
    return {
        "run_id": run_id, "model": model, "layer": layer, "unit": unit, "kind": kind,
        "explainer": prepared.config.provider, "status": "ok" if ok else "failed",
        "label": o.label if ok else None, "description": o.description if ok else None,
        "formula": None, "score": o.confidence if ok else None,
        "score_name": "confidence" if ok and o.confidence is not None else None,
        "error": None if ok else (o.error or o.status), "dissection_id": evidence.dissection_id,
    }  # fmt: skip
