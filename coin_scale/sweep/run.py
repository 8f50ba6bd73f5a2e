"""The image sweep: predict, select units by contribution, explain them over a probe set, chain
them into a class-level explanation, store it and write the report."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from coin_scale.chain.attribution import UnitContributions, unit_contributions
from coin_scale.chain.graph import Edge, chain_edges
from coin_scale.chain.sae_attribution import sae_contributions
from coin_scale.chain.units import SAEFeatures, UnitView
from coin_scale.dissect.pipeline import load_sae_units
from coin_scale.errors import UserError
from coin_scale.eval.explanation_scores import UnitScores
from coin_scale.models import ModelSource, build_module, describe_layers, find_layer, resolve_model
from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import LayerInfo, Layout, last_block
from coin_scale.models.loading import ModelPayload
from coin_scale.probe import scan_probe
from coin_scale.probe.rendered import rendered_probe
from coin_scale.sweep import inputs
from coin_scale.sweep.chain import chain_faithfulness, chain_nodes, probe_batches, resolve_chain
from coin_scale.sweep.config import PROBE_MODEL, RENDERED, SweepConfig
from coin_scale.sweep.explaining import explain_layer
from coin_scale.sweep.records import ClassExplanation, SAESummary, UnitFinding
from coin_scale.sweep.text import chain_text, class_paragraph

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """The explanation and where its artefacts went."""

    explanation: ClassExplanation
    report_path: str | None
    warehouse: str
    phases: tuple[tuple[str, float], ...] = ()
    """Wall seconds of each phase, in order (model, attribution, chain, explain, faithfulness,
    scores, report and tables)."""


class PhaseClock:
    """Wall time per named phase: `lap(name)` closes the phase that ran since the last lap."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.phases: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases.append((name, now - self.last))
        self.last = now


Reporter = Callable[[ClassExplanation, Path], Path]
"""Writes a sweep's report into a directory and returns its path (`coin_scale.report.write_report`:
the report stands above the sweep, so the caller hands it in)."""


def run_sweep(config: SweepConfig, *, reporter: Reporter | None = None) -> SweepOutcome:
    """The whole pipeline for one image; user errors are raised before any work is stored.
    `reporter` writes the HTML report (none is written without it)."""
    from datetime import UTC, datetime

    from coin_scale.dissect.pipeline import new_run_id
    from coin_scale.storage import Warehouse

    started_at = datetime.now(UTC)
    prepared = None
    if config.uses_llm:  # a missing key is reported here, before any work
        from coin_scale.explain.llm import prepare

        prepared = prepare(config.llm_explainer())
    ratings = None
    if config.human_ratings is not None:  # bad ratings are reported before any work too
        from coin_scale.eval.human_ratings import load_human_ratings

        try:
            ratings = load_human_ratings(config.human_ratings)
        except ValueError as err:
            raise UserError(f"--human-ratings: {err}") from None
    warehouse = Warehouse(config.warehouse)
    run_id = config.run_id or new_run_id()
    model = inputs.probe_model() if config.model == PROBE_MODEL else config.model
    payload = resolve_model(ModelSource(model=model, weights=config.weights, seed=config.seed))
    module = build_module(payload)
    clock = PhaseClock()
    layers = describe_layers(module, payload.arch, payload.preprocess.crop)
    if config.chain_layers:
        chain = resolve_chain(config.chain_layers, layers, payload, module)
        layer = chain[-1]
    else:
        layer = find_layer(layers, config.layer, payload.model_id) if config.layer else last_block(module, layers)
        chain = [layer]
    sae = load_sae_units(config.sae, payload, layer) if config.units == "sae" else None
    sae_model = sae.build() if sae else None
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
    if sae_model is not None:
        contributions = sae_contributions(module, layer.name, inputs_tensor, sae_model)
    else:
        contributions = unit_contributions(module, layer.name, layer.layout, inputs_tensor)
    notes = _notes(payload, contributions, layer, sae)
    positive = _findings(contributions, layer, config.top_k, negative=False)
    negative = _findings(contributions, layer, config.negatives, negative=True) if config.negatives else []

    clock.lap("model and attribution")
    edges: list[Edge] = []
    if len(chain) > 1:
        views: list[tuple[str, Layout | UnitView]] = [(c.name, c.layout) for c in chain]
        if sae_model is not None:  # the last layer's units are the SAE's features
            views[-1] = (layer.name, SAEFeatures(sae_model))
        edges = chain_edges(
            module, inputs_tensor, views, [f.unit for f in positive],
            config.fanout, method=config.chain_method,
            steps=config.ig_steps,
        )  # fmt: skip
    nodes = chain_nodes(edges)

    clock.lap("chain edges")
    dissection_ids: dict[str, str] = {}
    probe = None
    if config.probe:
        # The probe CNN was trained on one large object per scene: explain it over such scenes.
        probe = scan_probe(_probe_path(config, payload, single_object=payload.arch == "probe_cnn"))
        ledger = None
        if prepared is not None:
            from coin_scale.sweep.agents import AgentLedger

            ledger = AgentLedger(warehouse, run_id)
        dissection_ids[layer.name], explained = explain_layer(
            config, model, payload, probe, layer, positive + negative, notes, module, prepared,
            run_id, sae, ledger,
        )  # fmt: skip
        positive, negative = explained[: len(positive)], explained[len(positive) :]
        for earlier in chain[:-1]:
            mine = [n for n in nodes if n.layer == earlier.name]
            if mine:
                dissection_ids[earlier.name], done = explain_layer(
                    config, model, payload, probe, earlier, mine, notes, module, prepared, run_id,
                    ledger=ledger,
                )  # fmt: skip
                nodes = [n for n in nodes if n.layer != earlier.name] + done
    clock.lap("dissect and explain")
    faithfulness = chain_faithfulness(
        module, inputs_tensor, chain, contributions, nodes, config.top_k,
        sae=sae_model,
        mean_batches=probe_batches(probe, payload) if probe is not None else (),
        draws=config.ablation_draws, seed=config.seed,
    )  # fmt: skip
    clock.lap("faithfulness")
    unit_scores: list[UnitScores] = []
    scoring_images = 0
    if config.unit_scores and probe is not None and probe.attributes_path:
        from coin_scale.probe.scoring_set import load_scoring_set
        from coin_scale.sweep.scoring import score_findings

        scoring = load_scoring_set(
            payload, single_object=payload.arch == "probe_cnn", progress=config.progress
        )
        scoring_images = int(scoring.pixels.shape[0])
        log.info("scoring the explanations on %d held-out rendered images (--no-unit-scores skips)", scoring_images)
        scored: dict[str, Layout | UnitView] = {c.name: c.layout for c in chain}
        if sae_model is not None:
            scored[layer.name] = SAEFeatures(sae_model)
        began = time.perf_counter()
        unit_scores = score_findings(
            module, payload, scored, positive + negative + nodes, scoring, seed=config.seed
        )
        log.info("scored %d explanations in %.1f s", len(unit_scores), time.perf_counter() - began)
        if ratings is not None:
            from coin_scale.eval.human_ratings import with_human_alignment

            unit_scores = with_human_alignment(unit_scores, ratings)
    clock.lap("explanation scores")
    visualizations: list[dict] = []
    if config.visualize:
        from coin_scale.storage.fs import local_dir
        from coin_scale.sweep.visualizing import visualize_findings

        shown = positive + negative + nodes
        drawn, visualizations = visualize_findings(
            module, payload, {c.name: c for c in chain}, shown, steps=config.visualize,
            out_dir=Path(local_dir(config.warehouse, f"reports/{run_id}")) / "visualizations",
            sae_layer=layer.name if sae_model is not None else None, sae_model=sae_model,
        )  # fmt: skip
        positive, negative = drawn[: len(positive)], drawn[len(positive) : len(shown) - len(nodes)]
        nodes = drawn[len(shown) - len(nodes) :]
        clock.lap("visualizations")
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
        ) + chain_text(positive, nodes, edges),
        layers=tuple(c.name for c in chain) if len(chain) > 1 else (),
        chain_nodes=tuple(nodes), chain_edges=tuple(edges), faithfulness=tuple(faithfulness),
        unit_scores=tuple(unit_scores), scoring_images=scoring_images,
    )  # fmt: skip
    from coin_scale.storage.fs import local_dir
    from coin_scale.sweep.persist import store_sweep

    report = reporter(explanation, local_dir(config.warehouse, f"reports/{run_id}")) if reporter else None
    store_sweep(
        warehouse, explanation, config, dissection_ids=dissection_ids, started_at=started_at
    )
    if visualizations:
        from coin_scale.storage import get_spec

        rows = [{"run_id": run_id, **row} for row in visualizations]
        warehouse.write("visualizations", get_spec("visualizations").from_dicts(rows), key=run_id)
    clock.lap("report and tables")
    return SweepOutcome(
        explanation=explanation, report_path=str(report) if report else None, warehouse=config.warehouse,
        phases=tuple(clock.phases),
    )


def dry_run_lines(config: SweepConfig) -> list[str]:
    """What an LLM-explained sweep of `config` would cost; nothing is loaded or sent."""
    from coin_scale.explain.llm import dry_run, limit_lines, prepare

    prepared = prepare(config.llm_explainer(), require_key=False)
    units, targets = config.top_k + config.negatives, config.top_k
    for _ in config.chain_layers[:-1]:  # at most fanout new drivers per unit one layer up
        targets *= config.fanout
        units += targets
    estimate = dry_run(
        prepared, units=units, exemplars=12, layer=config.layer or "last block", model=config.model
    )
    return estimate.lines(config.explainer, prepared.model) + limit_lines(prepared, "sweep")


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
        return rendered_probe(
            config.probe_images, payload.preprocess.crop, progress=config.progress,
            single_object=single_object,
        )  # fmt: skip
    return str(config.probe)
