"""Every unit of a dissected layer explained by LLM agents (`coin-scale dissect --explainer openai`):
one agent per unit, as in a sweep (exemplars from the dissection, renders and edits measured
through the model, `visualize(n)`), through the rate-limited gateway actors on Ray; one
`explanations` row per unit. A killed run resumes with `--run-id` (finished units are
checkpointed by the sweep's agent step, and answered requests are in the request cache).
"""

from __future__ import annotations

from collections.abc import Sequence

from coin_scale.agent.generation import ImageGenerator
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.explanation import explanation_rows
from coin_scale.explain.llm import PreparedLLM
from coin_scale.explain.resume import clear_run
from coin_scale.explain.whole_layer import LayerExplanations
from coin_scale.models import ModelPayload
from coin_scale.models.activations import Reduction, SAEUnits
from coin_scale.models.layers import LayerInfo
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec
from coin_scale.sweep.agents import AgentExplainer, AgentRun


def explain_whole_layer_with_agents(
    prepared: PreparedLLM,
    evidence: LayerEvidence,
    payload: ModelPayload,
    layer: LayerInfo,
    warehouse: str,
    *,
    run_id: str,
    kind: str,
    sae: SAEUnits | None = None,
    address: str | None = None,
    progress: bool = True,
    units: Sequence[int] | None = None,
    reduction: Reduction = "max",
    replicas: int | None = None,
    generator: ImageGenerator | None = None,
) -> LayerExplanations:
    """Explain every unit of `evidence` (or only `units`) with its own agent and store the rows
    under `run_id` (with the agents' steps in `experiments` and their requests in `llm_calls`).
    `reduction` is the dissection's; `replicas` the model replicas measuring for the agents."""
    chosen = units
    units = list(units) if units is not None else list(range(int(evidence.activations.shape[1])))
    run = AgentRun(
        prepared=prepared, warehouse=warehouse, run_id=run_id, address=address, progress=progress,
        reduction=reduction, replicas=replicas, generator=generator or ImageGenerator(),
    )  # fmt: skip
    explainer = AgentExplainer(run, payload, layer, sae=sae)
    explanations = explainer.explain(evidence, units)
    rows = explanation_rows(
        explanations, run_id=run_id, model=payload.model_id, layer=layer.name, kind=kind,
        dissection_id=evidence.dissection_id,
    )  # fmt: skip
    wh = Warehouse(warehouse)
    wh.write("explanations", get_spec("explanations").from_dicts(rows), key=run_id)
    clear_run(wh.fs, run_id)
    outcomes = explainer.outcomes.values()
    return LayerExplanations(
        run_id=run_id, explanations=tuple(explanations), selected=chosen is not None,
        cost_usd=sum(o.cost_usd for o in outcomes),
        tokens=sum(o.input_tokens + o.output_tokens for o in outcomes),
    )  # fmt: skip
