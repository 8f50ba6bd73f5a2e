"""LLM agents explain synthetic units the way they explain neurons, and their free-text labels are
read back to formulas by the documented matcher (`coin_scale.eval.matcher`), so `eval synthetic`
scores them like the offline explainer's formulas.

The agents see each unit's strongest probe images (with their ground-truth attributes, as in a
sweep over a rendered probe set) and measure new renders and edits through the synthetic model, so
this needs units computed from pixels (`through` 'model').
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from coin_scale.agent import AgentOutcome, ExperimentTools, UnitSubject
from coin_scale.agent.subject import UnitMeter, exemplars_from_paths
from coin_scale.agent.visualizer import Visualizer
from coin_scale.concepts.formula import evaluate, parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.eval.matcher import text_formula_text
from coin_scale.explain.explanation import Explanation, from_agent
from coin_scale.explain.llm import Gateways, PreparedLLM, explain_subjects
from coin_scale.explain.offline import unit_masks
from coin_scale.models import ModelPayload
from coin_scale.probe import ProbeSet
from unity_pool.tools import RenderTools

AGENT_EXEMPLARS = 12
"""Exemplars each agent can see, as in a sweep (`coin_scale.sweep.agents.AGENT_EXEMPLARS`)."""


@dataclass(frozen=True, kw_only=True)
class LLMUnitsResult:
    """The agents' explanations, read back to formulas, and what they cost."""

    explanations: list[Explanation]
    """One per unit; `formula` is the matcher's reading of the label ("" when it names no
    concept), `label` the agent's own words."""
    outcomes: list[AgentOutcome]
    """The agents' raw outcomes, one per unit."""
    requests: int
    """LLM requests in the ledger (answered from the cache or paid)."""
    cached: int
    """Of those, answered from the request cache."""
    cost_usd: float


def top_exemplars(
    activations: torch.Tensor, probe: ProbeSet, k: int = AGENT_EXEMPLARS
) -> list[list[tuple[str, float]]]:
    """Per unit, its `k` most activating probe images as (path, activation), strongest first."""
    k = min(k, activations.shape[0])
    values, rows = torch.topk(activations.float(), k, dim=0)  # (k, unit)
    return [
        [
            (probe.images[int(r)].path, float(v))
            for r, v in zip(rows[:, u], values[:, u], strict=True)
        ]
        for u in range(activations.shape[1])
    ]


def read_back(
    outcome: AgentOutcome,
    unit: int,
    activations: torch.Tensor,
    concepts: ConceptMatrix,
    quantile: float,
    explainer: str,
) -> Explanation:
    """An agent's answer as an `Explanation`: the matcher's formula for its label (the
    description only when the label names no concept) and that formula's IoU with the mask. An
    agent without a valid label is a `failed` explanation; a label the matcher cannot read as
    concepts stays `ok`, without a formula."""
    masks, thresholds = unit_masks(activations[:, unit : unit + 1], quantile)
    mask = masks[:, 0]
    told = from_agent(unit, outcome, explainer)
    measured = replace(told, mask_size=int(mask.sum()), threshold=float(thresholds[0]))
    if not told.ok:
        return measured
    names = concepts.names
    formula = text_formula_text(told.label, names) or text_formula_text(told.description, names)
    if not formula:
        return measured
    images = evaluate(parse_text(formula, names), concepts.matrix)
    union = int((images | mask).sum())
    iou = int((images & mask).sum()) / union if union else 0.0
    return replace(measured, formula=formula, iou=iou)


def explain_synthetic_with_llm(
    prepared: PreparedLLM,
    instruments: Callable[[int], tuple[UnitMeter, Visualizer]],
    payload: ModelPayload,
    layer: str,
    probe: ProbeSet,
    activations: torch.Tensor,
    concepts: ConceptMatrix,
    quantile: float,
    *,
    run_id: str,
    gateways: Gateways,
    progress: bool = False,
    render_tools: Callable[[], RenderTools] | None = None,
) -> LLMUnitsResult:
    """Explain every unit (column of `activations`) with its own agent, its calls through
    `gateways` (the caller's gateway actors) and its measurements and visualizations through
    `instruments(unit)` (the caller's model replicas, or a module in process), then read each
    label back to a formula over the probe's concepts. `render_tools` makes each agent's image
    tools (the caller's render pool); None renders in process."""
    from unity_pool.render_cache import CachedRenderer
    from unity_pool.tools import LocalRenderer

    shared = CachedRenderer(LocalRenderer())
    make_render_tools = render_tools or (lambda: RenderTools(renderer=shared))

    exemplars = top_exemplars(activations, probe)
    subjects = [
        UnitSubject(
            model=payload.model_id,
            layer=layer,
            unit=u,
            kind="synthetic",
            exemplars=exemplars_from_paths(
                exemplars[u], attributes_path=probe.attributes_path, max_side=256
            ),
        )  # fmt: skip
        for u in range(activations.shape[1])
    ]

    def make_tools(subject: UnitSubject) -> ExperimentTools:
        meter, visualizer = instruments(subject.unit)
        return ExperimentTools(subject, meter, make_render_tools(), visualizer=visualizer)

    result = explain_subjects(
        prepared, subjects, make_tools, run_id=run_id, gateways=gateways, progress=progress
    )
    explanations = [
        read_back(outcome, u, activations, concepts, quantile, prepared.config.provider)
        for u, outcome in enumerate(result.outcomes)
    ]
    return LLMUnitsResult(
        explanations=explanations,
        outcomes=result.outcomes,
        requests=len(result.calls),
        cached=sum(c.status == "cached" for c in result.calls),
        cost_usd=sum(c.cost_usd for c in result.calls),
    )
