"""Explaining a layer's selected units in a sweep: dissect the layer over the probe set (cached),
then the offline explainer or LLM agents, plus each unit's strongest exemplars."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import LayerInfo
from coin_scale.models.loading import ModelPayload
from coin_scale.probe import ProbeSet
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.records import Exemplar, UnitFinding

if TYPE_CHECKING:
    from coin_scale.explain.llm import PreparedLLM
    from coin_scale.sweep.agents import AgentLedger


def explain_layer(
    config: SweepConfig,
    model: str,
    payload: ModelPayload,
    probe: ProbeSet,
    layer: LayerInfo,
    findings: list[UnitFinding],
    notes: list[str],
    module: torch.nn.Module,
    prepared: PreparedLLM | None,
    run_id: str,
    sae: SAEUnits | None = None,
    ledger: AgentLedger | None = None,
) -> tuple[str, list[UnitFinding]]:
    """Dissect `layer` over the probe set (cached), explain the units of `findings` with the
    sweep's explainer and add their exemplars; returns the dissection id and the findings."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.explain import OfflineExplainerConfig, explain_units
    from coin_scale.storage import connect
    from coin_scale.sweep.evidence import layer_evidence

    evidence = layer_evidence(
        DissectConfig(
            model=model, weights=config.weights, seed=config.seed, layer=layer.name, probe=probe.root,
            warehouse=config.warehouse, top_k=max(config.exemplars, 16), address=config.address,
            units="sae" if sae else "neuron", sae=sae.path if sae else None,
        ),
        payload,
        progress=config.progress,
        probe=probe,
    )  # fmt: skip
    units = list(dict.fromkeys(f.unit for f in findings))
    probe_set = evidence.probe
    no_concepts = "The probe folder has no labels or attributes: units get exemplars but no concepts."
    if probe_set.attributes_path is None and not probe_set.images[0].label and no_concepts not in notes:
        notes.append(no_concepts)

    con = connect(config.warehouse)
    rows = con.execute(
        "SELECT unit, activation, image_path, label FROM exemplars "
        "WHERE dissection_id = ? AND rank < ? ORDER BY unit, rank",
        [evidence.dissection_id, config.exemplars],
    ).fetchall()
    shown: dict[int, list[Exemplar]] = {}
    for unit, activation, path, label in rows:
        if unit in units:
            shown.setdefault(unit, []).append(Exemplar(image_path=path, activation=float(activation), label=label))

    if prepared is not None:
        from coin_scale.sweep.agents import AgentRun, explain_with_agents

        run = AgentRun(
            prepared=prepared, warehouse=config.warehouse, run_id=run_id, address=config.address,
            progress=config.progress,
        )  # fmt: skip
        outcomes = explain_with_agents(
            run, evidence, payload, module, layer, units, sae=sae, ledger=ledger
        )

        def explained_finding(f: UnitFinding) -> UnitFinding:
            o = outcomes[f.unit]
            ok = o.status == "ok"
            return replace(
                f, label=o.label if ok else None, description=o.description if ok else None,
                confidence=o.confidence if ok else None, explainer=config.explainer,
                error=None if ok else f"{o.status}: {o.error or 'no valid answer'}",
                exemplars=tuple(shown.get(f.unit, [])),
            )  # fmt: skip

    else:
        explained = explain_units(
            evidence.activations[:, units], evidence.concepts, OfflineExplainerConfig()
        )
        by_unit = dict(zip(units, explained, strict=True))

        def explained_finding(f: UnitFinding) -> UnitFinding:
            e = by_unit[f.unit]
            return replace(
                f, label=e.label or None, description=e.description, formula=e.formula or None,
                iou=e.iou, explainer="offline", exemplars=tuple(shown.get(f.unit, [])),
            )  # fmt: skip

    return evidence.dissection_id, [explained_finding(f) for f in findings]
