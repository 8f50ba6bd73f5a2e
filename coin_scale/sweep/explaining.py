"""Explaining a layer's selected units in a sweep: dissect the layer over the probe set (cached),
then the sweep's explainer (over a folder probe, minus its held-out images, on which each
explanation is then scored), plus each unit's strongest exemplars."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from coin_scale.eval.heldout import HeldOutScore
from coin_scale.explain import Explanation, OfflineExplainer
from coin_scale.explain.registry import Explainer
from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import LayerInfo
from coin_scale.models.loading import ModelPayload
from coin_scale.probe import ProbeSet
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.records import Exemplar, TrajectoryStep, UnitFinding

if TYPE_CHECKING:
    from coin_scale.agent.loop import AgentOutcome
    from coin_scale.explain.image_text import LabelScorer
    from coin_scale.explain.llm import PreparedLLM
    from coin_scale.storage.schemas import agent_images
    from coin_scale.sweep.agents import AgentExplainer, AgentLedger


def explain_layer(
    config: SweepConfig,
    model: str,
    payload: ModelPayload,
    probe: ProbeSet,
    layer: LayerInfo,
    findings: list[UnitFinding],
    notes: list[str],
    prepared: PreparedLLM | None,
    run_id: str,
    sae: SAEUnits | None = None,
    ledger: AgentLedger | None = None,
    *,
    clip: Explainer | None = None,
    labels: LabelScorer | None = None,
) -> tuple[str, list[UnitFinding]]:
    """Dissect `layer` over the probe set (cached), explain the units of `findings` with the
    sweep's explainer and add their exemplars; returns the dissection id and the findings.
    Over a folder probe the explainer reads it minus its held-out images, on which each
    explanation is then scored (`sweep/heldout.py`; `labels` reads an LLM's labels there)."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.storage import connect
    from coin_scale.sweep.evidence import layer_evidence
    from coin_scale.sweep.heldout import explained_rows, held_out_scores

    evidence = layer_evidence(
        DissectConfig(
            model=model, weights=config.target.weights, seed=config.target.seed, layer=layer.name, probe=probe.root,
            warehouse=config.run.warehouse, top_k=max(config.probe.exemplars, 16), address=config.run.address,
            units="sae" if sae else "neuron", sae=sae.path if sae else None,
        ),
        payload,
        progress=config.run.progress,
        probe=probe,
    )  # fmt: skip
    units = list(dict.fromkeys(f.unit for f in findings))
    probe_set = evidence.probe
    shown_evidence, split = explained_rows(config, evidence, notes)
    no_concepts = (
        "The probe folder has no labels or attributes: units get exemplars but no concepts."
    )
    if (
        probe_set.attributes_path is None
        and not probe_set.images[0].label
        and no_concepts not in notes
    ):
        notes.append(no_concepts)

    con = connect(config.run.warehouse)
    rows = con.execute(
        "SELECT unit, activation, image_path, label FROM exemplars "
        "WHERE dissection_id = ? AND rank < ? ORDER BY unit, rank",
        [evidence.dissection_id, config.probe.exemplars],
    ).fetchall()
    shown: dict[int, list[Exemplar]] = {}
    for unit, activation, path, label in rows:
        if unit in units:
            shown.setdefault(unit, []).append(
                Exemplar(image_path=path, activation=float(activation), label=label)
            )

    explainer: Explainer
    agents: AgentExplainer | None = None
    if prepared is not None:
        from coin_scale.sweep.agents import AgentExplainer, AgentRun

        run = AgentRun(
            prepared=prepared, warehouse=config.run.warehouse, run_id=run_id, address=config.run.address,
            progress=config.run.progress, generator=config.generator,
        )  # fmt: skip
        explainer = agents = AgentExplainer(run, payload, layer, sae=sae, ledger=ledger)
    elif clip is not None:
        explainer = clip
    else:
        explainer = OfflineExplainer()
    explained = dict(zip(units, explainer.explain(shown_evidence, units), strict=True))
    heldout = held_out_scores(split, list(explained.values()), explainer, labels)
    out = [
        with_explanation(f, explained[f.unit], tuple(shown.get(f.unit, [])), heldout.get(f.unit))
        for f in findings
    ]
    if agents is not None:  # the report shows each agent's experiments
        out = [with_trajectory(f, agents.outcomes.get(f.unit), agents.images) for f in out]
    return evidence.dissection_id, out


def with_trajectory(
    f: UnitFinding, outcome: AgentOutcome | None, images: Mapping[int, Sequence[agent_images.Row]]
) -> UnitFinding:
    """`f` with its agent's experiment log (steps in order, each with the images it showed the
    agent)."""
    if outcome is None:
        return f
    shown: dict[tuple[int, int], list[Exemplar]] = {}
    for row in sorted(images.get(f.unit, ()), key=lambda r: (r.round, r.step, r.position)):
        value = row.activation if row.activation is not None else math.nan
        shown.setdefault((row.round, row.step), []).append(
            Exemplar(image_path=row.image_path, activation=value, label=row.image_id)
        )
    steps = tuple(
        TrajectoryStep(
            round=r.round, step=r.step, tool=r.tool, arguments=r.arguments_json,
            status=r.status, summary=r.result_summary, hypothesis=r.assistant_text,
            images=tuple(shown.get((r.round, r.step), ())),
        )  # fmt: skip
        for r in sorted(outcome.experiments, key=lambda r: (r.round, r.step))
    )
    return replace(f, trajectory=steps, test_prompts=outcome.test_prompts)


def with_explanation(
    f: UnitFinding,
    e: Explanation,
    exemplars: tuple[Exemplar, ...],
    heldout: HeldOutScore | None = None,
) -> UnitFinding:
    """`f` with its unit's explanation, exemplars and held-out score (no label unless the
    explanation is ok)."""
    score, score_name = e.score()
    return replace(
        f, status=e.status, reason=e.reason, label=e.label or None, score=score,
        score_name=score_name,
        description=e.description or None, formula=e.formula or None, iou=e.iou,
        confidence=e.confidence, explainer=e.explainer, error=e.error, exemplars=exemplars,
        heldout=heldout,
    )  # fmt: skip
