"""`coin-scale dissect`: statistics and top-k exemplars of every unit of a layer."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coin_scale.cli.common import (
    add_clip_args,
    add_config_arg,
    add_held_out_arg,
    add_llm_args,
    add_model_args,
    add_warehouse_arg,
    clip_config,
    clip_explainer,
    clip_given,
    image_generator_of,
    image_text_encoders,
    llm_settings,
)
from coin_scale.errors import UserError
from coin_scale.explain.registry import explainer_help, explainer_names, get_explainer
from coin_scale.probe.split import check_share
from coin_scale.records import LAYER_UNIT_KINDS

if TYPE_CHECKING:
    from coin_scale.eval.heldout import HeldOutScore
    from coin_scale.explain.whole_layer import LayerExplanations
    from coin_scale.records import UnitSelection


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dissect", help="dissect every unit of a layer over a probe set on Ray")
    add_config_arg(parser)
    add_model_args(parser)
    parser.add_argument("--layer", required=True, help="layer to dissect (`coin-scale layers`)")
    parser.add_argument("--probe", required=True, help="folder of images, searched recursively")
    add_warehouse_arg(parser)
    parser.add_argument("--top-k", type=int, default=16, help="exemplars kept per unit")
    parser.add_argument("--quantile", type=float, default=0.99, help="threshold quantile")
    parser.add_argument("--reduction", choices=["max", "mean"], default="max",
                        help="spatial reduction of a unit's map to one value per image")  # fmt: skip
    parser.add_argument("--units", choices=LAYER_UNIT_KINDS, default="neuron",
                        help="neuron: the layer's channels; sae: the latents of --sae")  # fmt: skip
    parser.add_argument("--sae", default=None, metavar="PATH",
                        help="SAE checkpoint of this layer (train-sae --out); needs --units sae")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=None,
                        help="model replicas (default: one per GPU, else one using all cores)")  # fmt: skip
    parser.add_argument("--address", default=None,
                        help="Ray address: none starts a local Ray; auto or ray://host:10001 joins")  # fmt: skip
    parser.add_argument("--run-id", default=None, help="name of this run in the runs table")
    parser.add_argument("--checkpoint-batches", type=int, default=16, metavar="N",
                        help="save the merged state every N batches so a killed run resumes "
                        "(rerun the same command); 0: never")  # fmt: skip
    parser.add_argument("--checkpoint-seconds", type=float, default=30.0, metavar="S",
                        help="...or every S seconds, whichever comes first")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="recompute even if cached")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--explainer", "--explain", dest="explainer", choices=explainer_names(), default=None,
        help="also explain every unit of the layer into the explanations table ("
        + explainer_help() + "; --dry-run first shows an LLM's calls, tokens and dollars)",
    )  # fmt: skip
    parser.add_argument(
        "--select", default=None, metavar="LAYER=UNITS",
        help="with --explainer, explain only these units of --layer: layer4=12,45 or "
        "layer4=0-7, or @FILE with one LAYER=UNITS a line",
    )  # fmt: skip
    add_clip_args(parser)
    add_held_out_arg(parser)
    add_llm_args(parser, flag="--explainer")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print the work (images, forward passes, batches, explainer calls, expected time) "
        "and stop: nothing is written, Ray is not started",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.runtime.dissect import run_dissection

    try:
        config = DissectConfig(
            model=args.model, weights=args.weights, seed=args.seed, layer=args.layer,
            probe=args.probe, warehouse=args.warehouse, top_k=args.top_k, quantile=args.quantile,
            reduction=args.reduction, batch_size=args.batch_size, replicas=args.replicas,
            address=args.address, force=args.force, run_id=args.run_id, units=args.units,
            sae=args.sae, checkpoint_batches=args.checkpoint_batches,
            checkpoint_seconds=args.checkpoint_seconds,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    entry = get_explainer(args.explainer) if args.explainer else None
    select = _selection(args) if args.select else None
    try:
        check_share(args.held_out)
    except ValueError as err:
        raise UserError(str(err)) from None
    # the image-text model and the vocabulary are loaded now: a bad one stops before any work
    image_text = entry is not None and entry.image_text
    clip = clip_explainer(args) if image_text and not args.dry_run else None
    prepared = None
    if entry is not None and entry.uses_llm:
        from coin_scale.explain.llm import prepare

        # a missing key stops here, before any work (a dry run needs none)
        try:
            prepared = prepare(_llm_settings(args), require_key=not args.dry_run)
        except ValueError as err:
            raise UserError(f"--explainer {args.explainer}: {err}") from None
    generator = image_generator_of(args)  # a model that is not here stops before any work
    if generator.kind != "procedural" and prepared is None:
        raise UserError(
            f"--image-generator {generator.kind}: the image generator serves the LLM agents' "
            "experiments; use it with --explainer openai|anthropic|gemini"
        )
    args.generator = generator
    labels = _held_out_labels(args, entry) if not args.dry_run else None
    if args.dry_run:
        from coin_scale.dissect.dry_run import estimate_dissection

        estimate = estimate_dissection(config, explainer=args.explainer)
        lines = estimate.lines()
        if prepared is not None:
            lines[-1:-1] = _llm_plan(prepared, estimate, args.explainer, args.generator)
        print("\n".join(lines))
        return 0
    from coin_scale.runtime.pools import keep_ray

    explained = heldout = None
    with keep_ray():  # the model replicas, then the image-text ones: one Ray start
        if entry is not None:
            explained, result, payload, heldout = _explain_layer(
                args, config, prepared, select, clip, labels
            )
        else:
            result = run_dissection(config, progress=not args.no_progress)
    summary = {
        "dissection_id": result.dissection_id, "run_id": result.run_id, "cached": result.cached,
        "model": result.model, "layer": result.layer, "units": result.n_units,
        "images": result.n_images, "unreadable": result.n_failed,
        "seconds": round(result.seconds, 2),
        "images_per_s": None if result.cached else round(result.images_per_second, 1),
        "startup_s": round(result.startup_seconds, 2),
        "warehouse": args.warehouse,
    }  # fmt: skip
    if explained is not None:
        summary |= {
            "explained": explained.statuses.get("ok", 0),
            "unexplained": sum(n for s, n in explained.statuses.items() if s != "ok"),
            "statuses": dict(explained.statuses), "reasons": dict(explained.reasons),
            "explanations_run_id": explained.run_id,
        }  # fmt: skip
        if args.explainer in ("offline", "clip-formula"):
            summary["mean_iou"] = round(explained.mean_iou, 4)
        else:
            summary["cost_usd"] = round(explained.cost_usd, 6)
        summary |= _held_out_summary(heldout)
    if args.json:
        print(json.dumps(summary))
        return 0
    if result.cached:
        print(
            f"reused cached dissection {result.dissection_id} (run {result.run_id}); --force recomputes"
        )
    else:
        what = "SAE latents" if args.units == "sae" else "units"
        print(
            f"dissected {result.n_units} {what} of {result.model}/{result.layer} over "
            f"{result.n_images} images ({result.n_failed} unreadable) in {result.seconds:.1f}s "
            f"({result.images_per_second:.1f} img/s)"
        )
    if explained is not None:
        _print_explanations(
            explained, args, offline=prepared is None, random_weights=payload.random_weights
        )
        _print_held_out(heldout, args, explained.run_id)
    print(f"warehouse: {args.warehouse}  (try: coin-scale query --warehouse {args.warehouse} "
          f"\"SELECT * FROM unit_stats ORDER BY threshold DESC LIMIT 5\")")  # fmt: skip
    return 0


def _print_explanations(layer: LayerExplanations, args: argparse.Namespace, *, offline: bool,
                        random_weights: bool) -> None:  # fmt: skip
    statuses = ", ".join(f"{n} {s}" for s, n in layer.statuses.most_common())
    reasons = ", ".join(f"{n} {r}" for r, n in layer.reasons.most_common())
    statuses += f" ({reasons})" if reasons else ""
    clip = args.explainer == "clip"
    if get_explainer(args.explainer).image_text:
        iou = f"; mean IoU {layer.mean_iou:.3f}" if not clip else ""
        print(f"explained {_which(layer)} with {args.explainer} ({clip_config(args).model}, --concepts "
              f"{args.concepts}): {statuses}{iou} (run {layer.run_id})")  # fmt: skip
    elif offline:
        print(
            f"explained {_which(layer)} offline: {statuses}; mean IoU {layer.mean_iou:.3f} (run {layer.run_id})"
        )
    else:
        print(f"explained {_which(layer)} with {args.explainer} agents: {statuses}; {layer.tokens} tokens, "
              f"${layer.cost_usd:.4f} (run {layer.run_id})")  # fmt: skip
        from coin_scale.agent.budget import budget_hint

        hint = budget_hint(e.error for e in layer.explanations)
        if hint:
            print(f"note: {hint}")
    if random_weights:
        print(
            "NOTE: random weights (--weights none): these labels describe noise, not a trained network"
        )
    if get_explainer(args.explainer).image_text and args.clip_weights == "none":
        print("NOTE: random image-text weights (--clip-weights none): the concepts mean nothing")
    if clip:
        ranked = sorted((e for e in layer.explanations if e.ok), key=lambda e: -(e.match or 0.0))
        for e in ranked[:5]:
            print(f"  unit {e.unit:>5}  soft-WPMI {e.match:.2f}  {e.label}")
    for e in layer.best(5) if not clip else ():
        print(f"  unit {e.unit:>5}  IoU {e.iou:.3f}  {e.label}")
    order = "score DESC" if offline else "unit"
    print(
        f'  all of them: coin-scale query --warehouse {args.warehouse} "SELECT unit, status, '
        f"label, score FROM explanations WHERE run_id = '{layer.run_id}' ORDER BY {order}\""
    )


def _which(layer: LayerExplanations) -> str:
    """'every unit', or 'the N units chosen' with --select."""
    return f"the {len(layer.explanations)} units chosen" if layer.selected else "every unit"


def _llm_settings(args: argparse.Namespace) -> Any:
    from coin_scale.explain.llm import llm_request_cache

    return llm_settings(args, args.explainer, llm_request_cache(args.warehouse))


def _llm_plan(prepared: Any, estimate: Any, provider: str, generator: Any) -> list[str]:
    """The LLM part of a dry run: calls, tokens, dollars and minutes for every unit, and what
    the describe model and the image generator would do."""
    from coin_scale.agent.generation import generation_plan_lines
    from coin_scale.explain.llm import (
        describe_plan_lines,
        dry_run,
        limit_lines,
        prepare_describer,
    )
    from coin_scale.sweep.agents import AGENT_EXEMPLARS

    llm = dry_run(prepared, units=estimate.units, exemplars=AGENT_EXEMPLARS,
                  layer=estimate.layer, model=estimate.model, generates=generator.generates,
                  edits_images=generator.edits_images)  # fmt: skip
    rounds = prepared.config.max_rounds
    lines = (
        llm.lines(provider, prepared.model)
        + describe_plan_lines(prepare_describer(prepared), units=estimate.units, max_rounds=rounds)
        + generation_plan_lines(generator, units=estimate.units, max_rounds=rounds)
        + limit_lines(prepared, "run")
    )
    return [f"explain: every one of the {estimate.units} units by an LLM agent:",
            *(f"  {line}" for line in lines)]  # fmt: skip


def _selection(args: argparse.Namespace) -> UnitSelection:
    """`--select`, parsed and checked against `--layer` (its units are checked once the layer is
    known, still before any work)."""
    from coin_scale.records import parse_selection

    if not args.explainer:
        raise UserError("--select chooses the units to explain: add --explainer offline (or an LLM)")
    try:
        select = parse_selection(args.select)
    except ValueError as err:
        raise UserError(f"--select: {err}") from None
    if select.names != (args.layer,):
        raise UserError(f"--select {select} must name the dissected layer only (--layer {args.layer})")
    return select


def _explain_layer(
    args: argparse.Namespace, config: Any, prepared: Any, select: UnitSelection | None,
    clip: Any = None, labels: Any = None,
) -> tuple[LayerExplanations, Any, Any, HeldOut]:  # fmt: skip
    """Every unit of the layer (or those of `select`) explained by `--explainer` (agents when
    `prepared`, the LLM resolved), over a folder probe minus its `--held-out` images, on which
    the explanations are then scored: (the explanations, the dissection's result, the payload,
    the held-out scores)."""
    from dataclasses import replace

    from coin_scale.dissect.pipeline import plan_dissection
    from coin_scale.explain.evidence import held_out_split
    from coin_scale.models import ModelSource, resolve_model
    from coin_scale.models.zoo import SYNTHETIC_UNITS_ARCH
    from coin_scale.storage import Warehouse
    from coin_scale.sweep.evidence import layer_evidence

    payload = resolve_model(ModelSource(model=args.model, weights=args.weights, seed=args.seed))
    plan = plan_dissection(replace(config, keep_activations=True), payload=payload)
    units = None
    if select is not None:
        units = select.units_of(args.layer)
        try:
            select.check({args.layer: plan.n_units})
        except ValueError as err:
            raise UserError(f"--select: {err}") from None
    evidence = layer_evidence(config, payload, progress=not args.no_progress, plan=plan)
    assert evidence.result is not None
    result = evidence.result
    run_id = config.run_id or result.run_id
    kind = "synthetic" if payload.arch == SYNTHETIC_UNITS_ARCH else args.units
    split, note = held_out_split(evidence, args.held_out)
    shown = split.explain if split is not None else evidence
    if prepared is None:
        from coin_scale.explain.whole_layer import explain_whole_layer

        explained = explain_whole_layer(
            shown, Warehouse(args.warehouse), run_id=run_id, model=result.model,
            layer=result.layer, kind=kind, units=units, explainer=clip,
        )  # fmt: skip
        heldout = _score_held_out(args, split, note, explained, clip, labels, run_id, kind)
        return explained, result, payload, heldout
    from coin_scale.dissect.pipeline import load_sae_units
    from coin_scale.models import find_layer
    from coin_scale.models.loading import payload_layers
    from coin_scale.sweep.whole_layer_agents import explain_whole_layer_with_agents

    layer = find_layer(payload_layers(payload), args.layer, payload.model_id)
    sae = load_sae_units(args.sae, payload, layer) if args.units == "sae" else None
    explained = explain_whole_layer_with_agents(
        prepared, shown, payload, layer, args.warehouse, run_id=run_id, kind=kind,
        sae=sae, address=args.address, progress=not args.no_progress, units=units,
        reduction=args.reduction, replicas=args.replicas, generator=args.generator,
    )  # fmt: skip
    heldout = _score_held_out(args, split, note, explained, None, labels, run_id, kind)
    return explained, result, payload, heldout


@dataclass(frozen=True)
class HeldOut:
    """A layer's held-out scores (`--held-out`) and how they went."""

    scores: dict[int, HeldOutScore]
    """By unit, each ok explanation's score or why none."""
    n_images: int
    """Readable held-out images (0: nothing held out)."""
    note: str | None = None
    """Why nothing was held out, when the probe was too small."""


def _held_out_labels(args: argparse.Namespace, entry: Any) -> Any:
    """The image-text model that reads an LLM's labels on held-out images (`--clip-model` /
    `--clip-weights` with an LLM explainer), loaded before any work; None otherwise."""
    if entry is None or not entry.uses_llm or not clip_given(args) or args.held_out <= 0:
        return None
    from coin_scale.explain.image_text import label_scorer

    try:
        return label_scorer(clip_config(args), image_text_encoders(args))
    except ValueError as err:
        raise UserError(
            f"--clip-weights (to score the LLM's labels on held-out images): {err}"
        ) from None


def _score_held_out(
    args: argparse.Namespace, split: Any, note: str | None, explained: LayerExplanations,
    explainer: Any, labels: Any, run_id: str, kind: str,
) -> HeldOut:  # fmt: skip
    """Score the explanations on the held-out images and store the rows in `scores` under
    `run_id` (replacing a rerun's; none without a split)."""
    from coin_scale.eval.heldout import score_rows
    from coin_scale.eval.heldout_predictors import held_out_sources, score_held_out
    from coin_scale.storage import Warehouse
    from coin_scale.storage.schemas import get_spec

    if split is None:
        scores: dict[int, HeldOutScore] = {}
        n_images = 0
    else:
        sources = held_out_sources(explainer, labels)
        scores = score_held_out(explained.explanations, split, sources)
        n_images = int(split.held_out.activations.shape[0])
    rows = score_rows(scores, run_id=run_id, layer=args.layer, kind=kind)
    Warehouse(args.warehouse).write("scores", get_spec("scores").from_dicts(rows), key=run_id)
    return HeldOut(scores=scores, n_images=n_images, note=note)


def _held_out_summary(heldout: HeldOut | None) -> dict[str, Any]:
    """The `--json` fields of the held-out scores."""
    from coin_scale.eval.heldout import median_auc

    if heldout is None:
        return {}
    median = median_auc(heldout.scores.values())
    return {
        "heldout_images": heldout.n_images,
        "heldout_scored": sum(s.scored for s in heldout.scores.values()),
        "heldout_median_auc": None if median is None else round(median, 4),
        "heldout_note": heldout.note,
    }


def _print_held_out(heldout: HeldOut | None, args: argparse.Namespace, run_id: str) -> None:
    """One line: the median held-out AUC over the scored units (or why there is none), and
    the query that lists every unit's scores."""
    from collections import Counter

    from coin_scale.eval.heldout import REASONS, median_auc

    if heldout is None or (not heldout.scores and heldout.note is None):
        return
    if heldout.note is not None:
        print(f"NOTE: {heldout.note}")
        return
    scores = heldout.scores.values()
    scored = [s for s in scores if s.scored]
    why = Counter(REASONS[s.reason] for s in scores if s.reason)
    unscored = "; ".join(f"{n} {r}" for r, n in why.most_common())
    median = median_auc(scored)
    head = (
        f"median AUC {median:.2f} over {len(scored)} of {len(heldout.scores)} explained units"
        if median is not None else f"none of the {len(heldout.scores)} explained units scored"
    )  # fmt: skip
    print(f"held-out scores on {heldout.n_images} images the explainer never saw: {head}"
          + (f" (not scored: {unscored})" if unscored else ""))  # fmt: skip
    print(
        f'  every unit: coin-scale query --warehouse {args.warehouse} "SELECT unit, metric, value '
        f"FROM scores WHERE run_id = '{run_id}' AND test = 'heldout' ORDER BY unit, metric\""
    )
