"""The image sweep: predict, select units by contribution, explain them over a probe set, chain
them into a class-level explanation, store it and write the report."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from coin_scale.chain.attribution import UnitContributions, unit_contributions
from coin_scale.chain.sae_attribution import sae_contributions
from coin_scale.dissect.activations import SAEUnits
from coin_scale.dissect.pipeline import load_sae_units
from coin_scale.errors import UserError
from coin_scale.models import ModelSource, build_module, describe_layers, find_layer, resolve_model
from coin_scale.models.layers import LayerInfo, last_block
from coin_scale.models.loading import ModelPayload
from coin_scale.sweep import inputs
from coin_scale.sweep.config import PROBE_MODEL, RENDERED, SweepConfig
from coin_scale.sweep.records import ClassExplanation, Exemplar, SAESummary, UnitFinding
from coin_scale.sweep.text import class_paragraph

if TYPE_CHECKING:
    from coin_scale.explain.llm import PreparedLLM

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """The explanation and where its artefacts went."""

    explanation: ClassExplanation
    report_path: str | None
    warehouse: str


def run_sweep(config: SweepConfig) -> SweepOutcome:
    """The whole pipeline for one image; user errors are raised before any work is stored."""
    from datetime import UTC, datetime

    from coin_scale.dissect.pipeline import new_run_id
    from coin_scale.storage import Warehouse

    started_at = datetime.now(UTC)
    prepared = None
    if config.uses_llm:  # a missing key is reported here, before any work
        from coin_scale.explain.llm import prepare

        prepared = prepare(config.llm_explainer())
    warehouse = Warehouse(config.warehouse)
    run_id = config.run_id or new_run_id()
    model = inputs.probe_model() if config.model == PROBE_MODEL else config.model
    payload = resolve_model(ModelSource(model=model, weights=config.weights, seed=config.seed))
    module = build_module(payload)
    layers = describe_layers(module, payload.arch, payload.preprocess.crop)
    layer = find_layer(layers, config.layer, payload.model_id) if config.layer else last_block(module, layers)
    sae = load_sae_units(config.sae, payload, layer) if config.units == "sae" else None
    n_units, noun = (sae.config.d_sae, "SAE features") if sae else (layer.units, "units")
    if config.top_k > n_units:
        raise UserError(f"--top-k {config.top_k} is more than the {n_units} {noun} of {layer.name}")
    image_path = config.image or inputs.rendered_target(config.warehouse, config.seed, payload.preprocess.crop)
    image = inputs.load_image(image_path)

    inputs_tensor = payload.preprocess.normalize(payload.preprocess.load(image).unsqueeze(0))
    with torch.inference_mode():
        probs = module(inputs_tensor).softmax(dim=1)[0]
    top = torch.topk(probs, k=min(5, probs.numel()))
    top_classes = tuple(
        (payload.class_names[int(i)], float(p)) for p, i in zip(top.values, top.indices, strict=True)
    )
    if sae is not None:
        contributions = sae_contributions(module, layer.name, inputs_tensor, sae.build())
    else:
        contributions = unit_contributions(module, layer.name, layer.layout, inputs_tensor)
    notes = _notes(payload, contributions, layer, sae)
    positive = _findings(contributions, layer, config.top_k, negative=False)
    negative = _findings(contributions, layer, config.negatives, negative=True) if config.negatives else []

    dissection_id = None
    if config.probe:
        # The probe CNN was trained on one large object per scene: explain it over such scenes.
        probe = _probe_path(config, payload, single_object=payload.arch == "probe_cnn")
        dissection_id, positive, negative = _explain(
            config, model, payload, probe, layer, positive, negative, notes, module, prepared, run_id,
            sae,
        )  # fmt: skip
    cls = contributions.class_index
    explanation = ClassExplanation(
        run_id=run_id, image_path=str(Path(image_path).resolve()), model=payload.model_id,
        weights=payload.weights_id, random_weights=payload.random_weights,
        class_name=payload.class_names[cls], class_index=cls, probability=float(probs[cls]),
        logit=contributions.logit, layer=layer.name, method=contributions.method,
        bias=contributions.bias, top_classes=top_classes, positive=tuple(positive),
        negative=tuple(negative), notes=tuple(notes), unit_kind="sae" if sae else "neuron",
        sae=_summary(sae) if sae else None, terms=contributions.terms,
        text=class_paragraph(
            class_name=payload.class_names[cls], probability=float(probs[cls]), layer=layer.name,
            positive=positive, negative=negative, exact=contributions.exact, sae=sae is not None,
            terms=contributions.terms,
        ),
    )  # fmt: skip
    from coin_scale.report import write_report
    from coin_scale.sweep.persist import store_sweep

    report = write_report(explanation, Path(config.warehouse) / "reports" / run_id)
    store_sweep(warehouse, explanation, config, dissection_id=dissection_id, started_at=started_at)
    return SweepOutcome(explanation=explanation, report_path=str(report), warehouse=config.warehouse)


def dry_run_lines(config: SweepConfig) -> list[str]:
    """What an LLM-explained sweep of `config` would cost; nothing is loaded or sent."""
    from coin_scale.explain.llm import dry_run, prepare

    prepared = prepare(config.llm_explainer(), require_key=False)
    units = config.top_k + config.negatives
    estimate = dry_run(
        prepared, units=units, exemplars=12, layer=config.layer or "last block", model=config.model
    )
    lines = estimate.lines(config.explainer, prepared.model)
    limits = prepared.limits
    lines.append(
        f"  limits         {limits.requests_per_minute:g} requests/min"
        + (f", {limits.tokens_per_minute:g} tokens/min" if limits.tokens_per_minute else "")
        + f"; budgets ${config.unit_budget_usd} per unit, ${config.budget_usd} per sweep"
    )
    key = "found" if prepared.api_key else "MISSING (the real run will stop before any work)"
    lines.append(f"  API key        {' or '.join(prepared.key_env)}: {key}")
    return lines


def _notes(
    payload: ModelPayload, contributions: UnitContributions, layer: LayerInfo, sae: SAEUnits | None
) -> list[str]:
    notes = []
    if payload.random_weights:
        notes.append("Random weights (--weights none): the prediction and every label mean nothing.")
    if sae is not None:
        c = sae.config
        fvu = f"; training FVU {sae.fvu:.3f}" if sae.fvu is not None else ""
        notes.append(
            f"Units are the {c.d_sae} features of the SAE {sae.path} ({c.kind}, k {c.k}{fvu}), "
            f"not the channels of {layer.name}."
        )
    if not contributions.exact:
        notes.append(
            f"{layer.name} does not feed a linear head directly, so there is no exact attribution: "
            "contributions are gradient x activation."
        )
    return notes


def _summary(sae: SAEUnits) -> SAESummary:
    c = sae.config
    return SAESummary(path=sae.path, sha256=sae.sha256, d_sae=c.d_sae, k=c.k, kind=c.kind, fvu=sae.fvu)


def _findings(c: UnitContributions, layer: LayerInfo, k: int, *, negative: bool) -> list[UnitFinding]:
    logit = c.logit
    return [
        UnitFinding(
            layer=layer.name, unit=unit, rank=rank, contribution=value,
            share=value / logit if logit > 0 else math.nan,
        )  # fmt: skip
        for rank, (unit, value) in enumerate(c.top(k, negative=negative))
    ]


def _probe_path(config: SweepConfig, payload: ModelPayload, *, single_object: bool) -> str:
    if config.probe == RENDERED:
        return inputs.rendered_probe(
            config.probe_images, payload.preprocess.crop, progress=config.progress,
            single_object=single_object,
        )  # fmt: skip
    return str(config.probe)


def _explain(
    config: SweepConfig,
    model: str,
    payload: ModelPayload,
    probe: str,
    layer: LayerInfo,
    positive: list[UnitFinding],
    negative: list[UnitFinding],
    notes: list[str],
    module: torch.nn.Module,
    prepared: PreparedLLM | None,
    run_id: str,
    sae: SAEUnits | None,
) -> tuple[str, list[UnitFinding], list[UnitFinding]]:
    """Dissect the layer over the probe set (cached), explain the selected units, add exemplars."""
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.explain import OfflineExplainerConfig, explain_units
    from coin_scale.storage import connect
    from coin_scale.sweep.evidence import layer_evidence

    evidence = layer_evidence(
        DissectConfig(
            model=model, weights=config.weights, seed=config.seed, layer=layer.name, probe=probe,
            warehouse=config.warehouse, top_k=max(config.exemplars, 16), address=config.address,
            units=config.units, sae=config.sae,
        ),
        payload,
        progress=config.progress,
    )  # fmt: skip
    units = [f.unit for f in positive + negative]
    probe_set = evidence.probe
    if probe_set.attributes_path is None and not probe_set.images[0].label:
        notes.append("The probe folder has no labels or attributes: units get exemplars but no concepts.")

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
        from coin_scale.sweep.agents import explain_with_agents

        outcomes = explain_with_agents(
            config, prepared, evidence, payload, module, layer, units, run_id=run_id, sae=sae
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

    return (
        evidence.dissection_id,
        [explained_finding(f) for f in positive],
        [explained_finding(f) for f in negative],
    )
