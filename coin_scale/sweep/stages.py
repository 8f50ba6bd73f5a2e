"""The sweep's stages, in order: each reads the `SweepState` and fills in its part.

`prepare` checks and loads what every stage needs before the clock starts (a missing API key or
bad ratings stop it before any work); then `attribute`, `trace_chain`, `explain`, `map_units`,
`test_faithfulness`, `score`, `visualize` and `store` run as `coin_scale.sweep.run.STAGES`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from coin_scale.chain.attribution import (
    UnitContributions,
    class_probabilities,
    unit_contributions,
)
from coin_scale.chain.graph import chain_edges
from coin_scale.chain.sae_attribution import sae_contributions
from coin_scale.chain.units import SAEFeatures, UnitView
from coin_scale.dissect.pipeline import load_sae_units
from coin_scale.errors import UserError
from coin_scale.models import ModelSource, find_layer, resolve_model
from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import LayerInfo, Layout, last_block
from coin_scale.models.loading import ModelPayload, traced_structure
from coin_scale.models.module_call import ModuleCall
from coin_scale.probe import scan_probe
from coin_scale.probe.rendered import rendered_probe
from coin_scale.runtime.pools import ReplicaModel, render_opener
from coin_scale.storage import Warehouse
from coin_scale.storage.fs import local_dir
from coin_scale.sweep import inputs
from coin_scale.sweep.chain import chain_faithfulness, chain_nodes, probe_batches, resolve_chain
from coin_scale.sweep.class_concepts import concept_paragraph, concept_shares
from coin_scale.sweep.config import PROBE_CNN, RENDERED, SweepConfig
from coin_scale.sweep.explaining import explain_layer
from coin_scale.sweep.records import ClassExplanation, SAESummary, UnitFinding
from coin_scale.sweep.state import Reporter, SweepInputs, SweepState
from coin_scale.sweep.text import chain_text, class_paragraph

log = logging.getLogger(__name__)


def prepare(config: SweepConfig, run_id: str) -> SweepInputs:
    """The LLM (its key found), the human ratings, the model and the layers, checked: every user
    error is raised here, before any work is stored."""
    prepared = None
    if config.llm is not None:
        from coin_scale.explain.llm import prepare as prepare_llm
        from coin_scale.llm.keys import MissingKey

        try:
            prepared = prepare_llm(config.llm)
        except MissingKey as err:
            if config.probe.probe in (None, RENDERED):
                raise
            raise MissingKey(  # a folder of photographs: the image-text explainer needs no key
                str(err).replace("--explainer offline", "--explainer clip (no key, no labels)")
            ) from None
    clip = None
    if config.clip is not None and config.llm is None:  # the model and vocabulary, loaded now
        from coin_scale.explain.image_text import image_text_explainer
        from coin_scale.runtime.pools import image_text_opener

        try:
            clip = image_text_explainer(
                config.explainer,
                config.clip,
                open_encoders=image_text_opener(address=config.run.address),
            )
        except ValueError as err:
            raise UserError(f"--explainer {config.explainer}: {err}") from None
    ratings = None
    if config.scoring.human_ratings is not None:
        from coin_scale.eval.human_ratings import load_human_ratings

        try:
            ratings = load_human_ratings(config.scoring.human_ratings)
        except ValueError as err:
            raise UserError(f"--human-ratings: {err}") from None
    t, sel = config.target, config.selection
    model = inputs.probe_cnn_checkpoint() if t.model == PROBE_CNN else t.model
    payload = resolve_model(ModelSource(model=model, weights=t.weights, seed=t.seed))
    chain = _chain(payload, config)  # from the architecture alone: the driver holds no model
    sae = load_sae_units(sel.sae, payload, chain[-1]) if sel.units == "sae" else None
    n_units, noun = (sae.config.d_sae, "SAE features") if sae else (chain[-1].units, "units")
    if sel.select is not None:
        try:
            sel.select.check({chain[-1].name: n_units})
        except ValueError as err:
            raise UserError(f"--select: {err}") from None
    elif sel.top_k > n_units:
        raise UserError(
            f"--top-k {sel.top_k} is more than the {n_units} {noun} of {chain[-1].name}"
        )
    from coin_scale.sweep.heldout import prepare_labels

    return SweepInputs(
        config=config, run_id=run_id, warehouse=Warehouse(config.run.warehouse), prepared=prepared, clip=clip,
        labels=prepare_labels(config),
        ratings=ratings, model=model, payload=payload, chain=chain, sae=sae,
        runner=ReplicaModel(payload, address=config.run.address),  # started by its first call
        sae_model=sae.build() if sae else None,
    )  # fmt: skip


def _chain(payload: ModelPayload, config: SweepConfig) -> list[LayerInfo]:
    """The chain's layers (`--layers`), the explained layer (`--layer`) or the last block, from
    the model's structure traced without weights (`models.loading.traced_structure`)."""
    sel = config.selection
    structure, layers = traced_structure(payload)
    if sel.chain_layers:
        return resolve_chain(sel.chain_layers, layers, payload, structure)
    if sel.explained_layer:
        return [find_layer(layers, sel.explained_layer, payload.model_id)]
    return [last_block(structure, layers)]


RENDERED_WORLD_ARCHS = ("probe_cnn", "attribute_net", "synthetic_units")
"""Models trained on (or built over) coin-scale's rendered scenes, whose classes the rendered
probe's attributes can name."""


def probe_guidance(config: SweepConfig, payload: ModelPayload) -> str | None:
    """A note for a model of photographs explained over the rendered probe: its vocabulary is
    shapes, colours and textures, so say so and give the command for a folder of photographs."""
    if config.probe.probe != RENDERED or payload.arch in RENDERED_WORLD_ARCHS:
        return None
    t = config.target
    image = t.image or "PHOTO.jpg"
    weights = "" if t.weights == "default" else f" --weights {t.weights}"
    return (
        f"The rendered probe only knows shapes, colours, textures, backgrounds, positions and "
        f"lights, so its labels cannot name what {payload.model_id} sees in a photograph. For "
        f"photographs, explain over a folder of them, no labels or key needed: python run_sweep.py "
        f"--image {image} --model {t.model}{weights} --probe PHOTOS/ --explainer clip"
    )


def attribute(state: SweepState) -> None:
    """Predict the target image and rank the layer's units by their contribution to the class."""
    i, config = state.inputs, state.config
    state.image_path = config.target.image or inputs.rendered_target(
        config.run.warehouse, config.target.seed, i.payload.preprocess.crop
    )
    image = inputs.load_image(state.image_path)
    pixels = i.payload.preprocess.normalize(i.payload.preprocess.load(image).unsqueeze(0))
    probs = i.runner(ModuleCall.of(class_probabilities, pixels))[0]
    top = torch.topk(probs, k=min(5, probs.numel()))
    state.top_classes = tuple(
        (i.payload.class_names[int(c)], float(p))
        for p, c in zip(top.values, top.indices, strict=True)
    )
    if i.sae_model is not None:
        contributions = i.runner(
            ModuleCall.of(sae_contributions, i.layer.name, pixels, i.sae_model)
        )
    else:
        contributions = i.runner(
            ModuleCall.of(unit_contributions, i.layer.name, i.layer.layout, pixels)
        )
    state.pixels, state.probabilities, state.contributions = pixels, probs, contributions
    state.notes = _notes(i.payload, contributions, i.layer, i.sae)
    guidance = probe_guidance(config, i.payload)
    if guidance:
        state.notes.append(guidance)
    sel = config.selection
    if sel.select is not None:  # the units chosen by hand, each on its side of the logit
        state.positive, state.negative = _chosen(
            contributions, i.layer, sel.select.units_of(i.layer.name) or ()
        )
        return
    state.positive = _findings(contributions, i.layer, contributions.top(sel.top_k))
    if sel.negatives:
        state.negative = _findings(
            contributions, i.layer, contributions.top(sel.negatives, negative=True)
        )


def trace_chain(state: SweepState) -> None:
    """With `--layers`: the drivers of the selected units in each earlier layer, and their edges."""
    i = state.inputs
    if len(i.chain) > 1:
        pixels, _ = state.attributed()
        views: list[tuple[str, Layout | UnitView]] = [(c.name, c.layout) for c in i.chain]
        if i.sae_model is not None:  # the last layer's units are the SAE's features
            views[-1] = (i.layer.name, SAEFeatures(i.sae_model))
        chain = state.config.chain
        state.edges = i.runner(ModuleCall.of(
            chain_edges, pixels, views, [f.unit for f in state.positive], chain.fanout,
            method=chain.chain_method, steps=chain.ig_steps,
        ))  # fmt: skip
    state.nodes = chain_nodes(state.edges)


def explain(state: SweepState) -> None:
    """Dissect each chain layer over the probe set and explain its selected units."""
    i, config = state.inputs, state.config
    if not config.probe.probe:
        return
    state.probe = probe = scan_probe(_probe_path(config, i.payload, single_object=i.single_object))
    ledger = None
    if i.prepared is not None:
        from coin_scale.sweep.agents import AgentLedger

        ledger = AgentLedger(i.warehouse, i.run_id)
    selected = state.positive + state.negative
    state.dissection_ids[i.layer.name], explained = explain_layer(
        config, i.model, i.payload, probe, i.layer, selected, state.notes, i.prepared,
        i.run_id, i.sae, ledger, clip=i.clip, labels=i.labels,
    )  # fmt: skip
    state.positive, state.negative = (
        explained[: len(state.positive)],
        explained[len(state.positive) :],
    )
    for earlier in i.chain[:-1]:
        mine = [n for n in state.nodes if n.layer == earlier.name]
        if mine:
            state.dissection_ids[earlier.name], done = explain_layer(
                config, i.model, i.payload, probe, earlier, mine, state.notes,
                i.prepared, i.run_id, ledger=ledger, clip=i.clip, labels=i.labels,
            )  # fmt: skip
            state.nodes = [n for n in state.nodes if n.layer != earlier.name] + done


def map_units(state: SweepState) -> None:
    """The explained units' spatial maps on their exemplars and the target (`sweep/maps.py`)."""
    from coin_scale.sweep.maps import map_findings

    map_findings(state)


def test_faithfulness(state: SweepState) -> None:
    """Ablate the chain's units in each chain layer against random and most-active ones."""
    i, config = state.inputs, state.config
    pixels, contributions = state.attributed()
    state.faithfulness = i.runner(ModuleCall.of(
        chain_faithfulness, pixels, i.chain, contributions, state.nodes, config.selection.top_k,
        sae=i.sae_model,
        mean_batches=probe_batches(state.probe, i.payload) if state.probe is not None else (),
        draws=config.chain.ablation_draws, seed=config.target.seed,
    ))  # fmt: skip


def score(state: SweepState) -> None:
    """Score every explanation on a held-out rendered set (a rendered probe set only)."""
    i, config = state.inputs, state.config
    if not (config.scoring.unit_scores and state.probe is not None and state.probe.attributes_path):
        return
    from coin_scale.probe.scoring_set import load_scoring_set
    from coin_scale.sweep.scoring import score_findings

    scoring = load_scoring_set(
        i.payload,
        single_object=i.single_object,
        progress=config.run.progress,
        open_renderer=_probe_renderer(config),  # rendered on the render pool
    )
    state.scoring_images = int(scoring.pixels.shape[0])
    log.info("scoring the explanations on %d held-out rendered images (--no-unit-scores skips)",
             state.scoring_images)  # fmt: skip
    scored: dict[str, Layout | UnitView] = {c.name: c.layout for c in i.chain}
    if i.sae_model is not None:
        scored[i.layer.name] = SAEFeatures(i.sae_model)
    began = time.perf_counter()
    state.unit_scores = i.runner(ModuleCall.of(
        score_findings, i.payload, scored, state.positive + state.negative + state.nodes, scoring,
        seed=config.target.seed,
    ))  # fmt: skip
    log.info(
        "scored %d explanations in %.1f s", len(state.unit_scores), time.perf_counter() - began
    )
    if i.ratings is not None:
        from coin_scale.eval.human_ratings import with_human_alignment

        state.unit_scores = with_human_alignment(state.unit_scores, i.ratings)


def predict_on_generated(state: SweepState) -> None:
    """MAIA's predictive evaluation (`coin_scale.eval.generated`): every labelled unit's activation
    on images generated from its label's prompts against neutral ones, the images made by the
    diffusion workers of a render pool and measured on the sweep's model replica (with
    `--image-generator diffusion`; any explainer's labels)."""
    from coin_scale.agent.generation import PooledGenerator
    from coin_scale.eval.generated import (
        NEUTRAL_PROMPTS,
        SEED,
        GeneratedScore,
        generated_activations,
        generated_score,
        unit_prompts,
    )
    from coin_scale.runtime.pools import agents_render_pool

    i, config = state.inputs, state.config
    groups = (state.positive, state.negative, state.nodes)
    labelled = [f for group in groups for f in group if f.label and f.status == "ok"]
    if not labelled or not config.generator.generates:
        return
    # Each distinct prompt set is generated once (units that share a label share templates).
    prompts_of = {(f.layer, f.unit): unit_prompts(str(f.label), f.test_prompts) for f in labelled}
    began = time.perf_counter()
    with (
        agents_render_pool(config.generator, address=config.run.address) as pool,
        PooledGenerator(pool) as pooled,
    ):
        images = list(pooled.generate(list(NEUTRAL_PROMPTS), SEED))
        rows: dict[tuple[str, ...], list[int]] = {}
        for prompts, _ in sorted(set(prompts_of.values())):
            if prompts not in rows:
                rows[prompts] = list(range(len(images), len(images) + len(prompts)))
                images += pooled.generate(list(prompts), SEED)
    pixels = torch.stack([i.payload.preprocess.load(image) for image in images])
    neutral = list(range(len(NEUTRAL_PROMPTS)))
    pre = i.payload.preprocess
    scored: dict[tuple[str, int], GeneratedScore] = {}
    for layer in {f.layer for f in labelled}:
        units = sorted({f.unit for f in labelled if f.layer == layer})
        units_of: Layout | UnitView = next(c.layout for c in i.chain if c.name == layer)
        if i.sae_model is not None and layer == i.layer.name:
            units_of = SAEFeatures(i.sae_model)
        acts = i.runner(ModuleCall.of(
            generated_activations, tuple(pre.mean), tuple(pre.std), layer, units_of, pixels, units,
        ))  # fmt: skip
        for f in labelled:
            if f.layer == layer:
                col = units.index(f.unit)
                prompts, source = prompts_of[(layer, f.unit)]
                scored[(layer, f.unit)] = generated_score(
                    acts[rows[prompts], col], acts[neutral, col], prompts, NEUTRAL_PROMPTS,
                    prompts_from=source,
                )  # fmt: skip

    def attach(fs: list[UnitFinding]) -> list[UnitFinding]:
        return [
            replace(f, generated=scored.get((f.layer, f.unit)))
            if f.label and f.status == "ok"
            else f
            for f in fs
        ]

    state.positive, state.negative, state.nodes = (attach(g) for g in groups)
    log.info(
        "predictive evaluation: %d units on %d generated images in %.1f s",
        len(prompts_of), len(images), time.perf_counter() - began,
    )  # fmt: skip


def visualize(state: SweepState) -> None:
    """One feature visualization per explained unit (`--visualize STEPS`)."""
    from coin_scale.sweep.visualizing import visualize_findings

    i, config = state.inputs, state.config
    n_pos, n_neg = len(state.positive), len(state.negative)
    shown = state.positive + state.negative + state.nodes
    drawn, state.visualizations = visualize_findings(
        i.payload, {c.name: c for c in i.chain}, shown, steps=config.scoring.visualize,
        out_dir=Path(local_dir(config.run.warehouse, f"reports/{i.run_id}")) / "visualizations",
        sae_layer=i.layer.name if i.sae is not None else None, sae=i.sae,
        address=config.run.address,
    )  # fmt: skip
    state.positive, state.negative = drawn[:n_pos], drawn[n_pos : n_pos + n_neg]
    state.nodes = drawn[n_pos + n_neg :]


def class_explanation(state: SweepState) -> ClassExplanation:
    """The sweep's record: the prediction, its units, their explanations, chain and scores."""
    i = state.inputs
    _, c = state.attributed()
    assert state.probabilities is not None
    cls, names = c.class_index, i.payload.class_names
    probability = float(state.probabilities[cls])
    positive, negative, nodes = state.positive, state.negative, state.nodes
    shares = concept_shares(
        layer=i.layer.name, logit=c.logit, findings=[*positive, *negative], chain_nodes=nodes
    )
    return ClassExplanation(
        run_id=i.run_id, image_path=str(Path(state.image_path).resolve()),
        model=i.payload.model_id, weights=i.payload.weights_id,
        random_weights=i.payload.random_weights, class_name=names[cls], class_index=cls,
        probability=probability, logit=c.logit, layer=i.layer.name, method=c.method,
        head_bias=c.head_bias, top_classes=state.top_classes, positive=tuple(positive),
        negative=tuple(negative), notes=tuple(state.notes),
        unit_kind="sae" if i.sae else "neuron", sae=_summary(i.sae) if i.sae else None,
        terms=c.terms,
        text=class_paragraph(
            class_name=names[cls], probability=probability, layer=i.layer.name,
            positive=positive, negative=negative, exact=c.exact, sae=i.sae is not None,
            terms=c.terms,
        ) + chain_text(positive, state.nodes, state.edges),
        layers=tuple(x.name for x in i.chain) if len(i.chain) > 1 else (),
        chain_nodes=tuple(nodes), chain_edges=tuple(state.edges),
        faithfulness=tuple(state.faithfulness), unit_scores=tuple(state.unit_scores),
        scoring_images=state.scoring_images, concepts=tuple(shares),
        concept_text=concept_paragraph(
            class_name=names[cls], probability=probability, layer=i.layer.name, shares=shares,
        ),
    )  # fmt: skip


def store(
    state: SweepState, explanation: ClassExplanation, reporter: Reporter | None
) -> Path | None:
    """Write the report (with `reporter`) and every table of the sweep; the report's path."""
    from coin_scale.sweep.persist import store_sweep

    i, config = state.inputs, state.config
    report_dir = local_dir(config.run.warehouse, f"reports/{i.run_id}")
    report = reporter(explanation, report_dir) if reporter else None
    store_sweep(i.warehouse, explanation, config, dissection_ids=state.dissection_ids)
    if state.visualizations:
        from coin_scale.storage import get_spec

        rows = [{"run_id": i.run_id, **row} for row in state.visualizations]
        i.warehouse.write(
            "visualizations", get_spec("visualizations").from_dicts(rows), key=i.run_id
        )
    return report


def _notes(
    payload: ModelPayload, contributions: UnitContributions, layer: LayerInfo, sae: SAEUnits | None
) -> list[str]:
    notes = []
    if payload.random_weights:
        notes.append(
            "Random weights (--weights none): the prediction and every label mean nothing."
        )
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
    return SAESummary(
        path=sae.path, sha256=sae.sha256, d_sae=c.d_sae, k=c.k, kind=c.kind, fvu=sae.fvu
    )


def _findings(
    c: UnitContributions, layer: LayerInfo, ranked: Sequence[tuple[int, float]]
) -> list[UnitFinding]:
    """One finding per (unit, contribution), ranked in the order given."""
    return [
        UnitFinding(
            layer=layer.name,
            unit=unit,
            rank=rank,
            contribution=value,
            share=value / c.logit if c.logit > 0 else math.nan,
        )  # fmt: skip
        for rank, (unit, value) in enumerate(ranked)
    ]


def _chosen(
    c: UnitContributions, layer: LayerInfo, units: Sequence[int]
) -> tuple[list[UnitFinding], list[UnitFinding]]:
    """The findings of the units chosen with `--select`: those that raise the logit ranked by
    contribution, then those that lower it ranked by how much."""
    values = [(u, float(c.contributions[u])) for u in units]
    up = sorted((v for v in values if v[1] >= 0), key=lambda v: -v[1])
    down = sorted((v for v in values if v[1] < 0), key=lambda v: v[1])
    return _findings(c, layer, up), _findings(c, layer, down)


def _probe_renderer(config: SweepConfig):  # type: ignore[no-untyped-def]
    """The render pool that renders the sweep's rendered sets (`--probe-renderer`)."""
    backend = config.generator if config.probe.renderer == "generator" else None
    return render_opener(address=config.run.address, backend=backend)


def _probe_path(config: SweepConfig, payload: ModelPayload, *, single_object: bool) -> str:
    if config.probe.probe == RENDERED:
        return rendered_probe(
            config.probe.probe_images, payload.preprocess.crop, progress=config.run.progress,
            single_object=single_object,
            open_renderer=_probe_renderer(config),
        )  # fmt: skip
    return str(config.probe.probe)
