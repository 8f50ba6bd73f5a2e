#!/usr/bin/env python
"""One image -> the units that drive its prediction -> their explanations -> a class explanation.

With no flags it runs on the embedded defaults: the CNN coin-scale trains on its rendered scenes
(trained on first use, cached), a rendered target image and probe set, the offline explainer,
a local Ray and ./warehouse. Nothing is downloaded and no API key is needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from typing import TYPE_CHECKING

from coin_scale.cli.common import (
    add_clip_args,
    add_held_out_arg,
    add_llm_args,
    image_generator_of,
)
from coin_scale.errors import UserError
from coin_scale.explain.registry import explainer_help
from coin_scale.records import LAYER_UNIT_KINDS

if TYPE_CHECKING:
    from coin_scale.sweep.config import SweepConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_sweep.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="YAML file whose keys are these flags")
    p.add_argument("--image", default=None, help="target image (default: a rendered scene)")
    p.add_argument("--model", default="probe",
                   help="torchvision model name, timm:NAME (a timm classifier), a coin-scale "
                   "checkpoint, or probe (default)")  # fmt: skip
    p.add_argument("--weights", default="default", help="default | none | enum name | PATH")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of random weights and of the default target"
    )
    p.add_argument(
        "--layer", default=None, help="layer (default: last block before the classifier)"
    )
    chain = p.add_argument_group("chains across layers")
    chain.add_argument("--layers", default=None,
                       help="a chain of layers, input side first: layer2,layer3,layer4 (replaces --layer)")  # fmt: skip
    chain.add_argument(
        "--fanout", type=int, default=3, help="drivers kept per chain unit (default 3)"
    )
    chain.add_argument("--chain-method", default="grad_x_activation",
                       choices=("grad_x_activation", "integrated_gradients"),
                       help="how a unit's drivers in the layer before are ranked")  # fmt: skip
    chain.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients steps")
    chain.add_argument("--ablation-draws", type=int, default=20,
                       help="random unit sets averaged in the faithfulness test")  # fmt: skip
    p.add_argument("--no-unit-scores", dest="unit_scores", action="store_false",
                   help="skip the per-explanation scores (predictive AUC, InterpScore)")  # fmt: skip
    add_held_out_arg(p)
    p.add_argument("--units", default="neuron", choices=LAYER_UNIT_KINDS,
                   help="the layer's channels (neuron, default) or the features of an SAE (sae)")  # fmt: skip
    p.add_argument("--sae", default=None,
                   help="SAE checkpoint of the layer (coin-scale train-sae --out); with --units sae")  # fmt: skip
    p.add_argument("--top-k", type=int, default=8, help="positive contributors to explain")
    p.add_argument("--negatives", type=int, default=3, help="negative contributors to list")
    p.add_argument("--select", default=None, metavar="LAYER=UNITS",
                   help="explain exactly these units instead of the top contributors: "
                   "layer4=12,45 or layer4=0-7, or @FILE with one LAYER=UNITS a line")  # fmt: skip
    p.add_argument("--probe", default="rendered",
                   help="rendered (default, cached), a folder of images, or none")  # fmt: skip
    p.add_argument("--probe-images", type=int, default=1000, help="size of the rendered probe set")
    p.add_argument("--probe-renderer", default="procedural", choices=("procedural", "generator"),
                   help="what renders the rendered probe and scoring sets: the render pool's "
                   "procedural workers (default) or the --image-generator backend's (unity or "
                   "diffusion; cached apart)")  # fmt: skip
    p.add_argument("--explainer", default="offline",
                   help=f"how units are explained (default offline). {explainer_help()}")  # fmt: skip
    add_clip_args(p)
    add_llm_args(p, flag="--explainer")
    p.add_argument("--dry-run", action="store_true",
                   help="print expected calls, tokens, dollars and minutes; spend nothing")  # fmt: skip
    p.add_argument("--visualize", type=int, default=0, metavar="STEPS",
                   help="also render one feature visualization per explained unit with this many "
                   "steps (e.g. 256), shown in the report beside its exemplars (default: none)")  # fmt: skip
    p.add_argument("--human-ratings", default=None, metavar="CSV",
                   help="human judgments of the explanations (columns layer, unit, soft_correct): "
                   "InterpScore's H for the units rated (default: H null)")  # fmt: skip
    p.add_argument("--warehouse", default="warehouse", help="Parquet warehouse directory")
    p.add_argument("--exemplars", type=int, default=6, help="exemplars shown per unit")
    p.add_argument("--address", default=None, help="Ray address (default: a local Ray)")
    p.add_argument("--run-id", default=None, help="name of this run (default: generated)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
    p.add_argument("--json", action="store_true",
                   help="print the sweep's outcome as one JSON object (the prediction, each "
                   "explained unit, the explanation, phases, where the model's forward passes "
                   "ran, where images were rendered) instead of the text")  # fmt: skip
    return p


def sweep_config(args: argparse.Namespace) -> SweepConfig:
    """The flags (and YAML keys) grouped into the sweep stages' configs."""
    from coin_scale.cli.common import clip_config, clip_given, llm_settings
    from coin_scale.explain.llm import llm_request_cache
    from coin_scale.explain.registry import get_explainer
    from coin_scale.records import parse_selection
    from coin_scale.sweep import config as c

    flags = vars(args)

    def group(cls: type, **given: object) -> object:
        """`cls` from the flags of its fields' names (`given` values replace flags)."""
        return cls(**{f.name: given[f.name] if f.name in given else flags[f.name]
                      for f in dataclasses.fields(cls)})  # fmt: skip

    probe = None if str(args.probe).lower() == "none" else args.probe
    try:
        select = parse_selection(args.select) if args.select else None
    except ValueError as err:
        raise ValueError(f"--select: {err}") from None
    entry = get_explainer(args.explainer)
    llm = (
        llm_settings(args, args.explainer, llm_request_cache(args.warehouse))
        if entry.uses_llm
        else None
    )
    return c.SweepConfig(
        target=group(c.TargetConfig),  # type: ignore[arg-type]
        selection=group(c.SelectionConfig, select=select),  # type: ignore[arg-type]
        chain=group(c.ChainConfig),  # type: ignore[arg-type]
        probe=c.ProbeConfig(probe=probe, probe_images=args.probe_images, exemplars=args.exemplars,
                            renderer=args.probe_renderer),  # fmt: skip
        explainer=args.explainer, llm=llm, scoring=group(c.ScoringConfig),  # type: ignore[arg-type]
        clip=clip_config(args) if entry.image_text or (entry.uses_llm and clip_given(args)) else None,
        run=group(c.RunConfig), dry_run=args.dry_run,  # type: ignore[arg-type]
        generator=image_generator_of(args),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from coin_scale.cli.common import load_config
    from coin_scale.sweep.run import run_sweep

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        if "--config" in argv:
            values = load_config(argv[argv.index("--config") + 1], parser)
            parser.set_defaults(**values)
        args = parser.parse_args(argv)
        try:
            config = sweep_config(args)
        except ValueError as err:
            raise UserError(str(err)) from None
        if config.dry_run:
            from coin_scale.sweep.run import dry_run_lines

            print("\n".join(dry_run_lines(config)))
            return 0
        from coin_scale.report import write_report

        outcome = run_sweep(config, reporter=write_report)
    except UserError as err:
        print(f"run_sweep.py: error: {err}", file=sys.stderr)
        return err.exit_code
    if args.json:
        print(json.dumps(_finite(outcome_json(outcome)), indent=2, allow_nan=False))
    else:
        print_outcome(outcome)
    return 0


def _finite(value):  # type: ignore[no-untyped-def]
    """`value` with every NaN or infinite float as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def outcome_json(outcome) -> dict:  # type: ignore[no-untyped-def]
    """The sweep's outcome as one JSON-able object (`--json`)."""
    e = outcome.explanation

    def unit(f) -> dict:  # type: ignore[no-untyped-def]
        return {
            "layer": f.layer, "unit": f.unit, "contribution": f.contribution, "share": f.share,
            "status": f.status, "explainer": f.explainer, "label": f.label, "formula": f.formula,
            "score_name": f.score_name, "score": f.score,
            "heldout": dataclasses.asdict(f.heldout) if f.heldout is not None else None,
            "generated": dataclasses.asdict(f.generated) if f.generated is not None else None,
        }  # fmt: skip

    return {
        "run_id": e.run_id, "image": e.image_path, "model": e.model, "weights": e.weights,
        "random_weights": e.random_weights, "notes": list(e.notes),
        "predicted": {"class": e.class_name, "index": e.class_index, "probability": e.probability,
                      "logit": e.logit},
        "runners_up": [{"class": n, "probability": p} for n, p in e.top_classes[1:]],
        "layer": e.layer, "unit_kind": e.unit_kind, "method": e.method,
        "positive": [unit(f) for f in e.positive], "negative": [unit(f) for f in e.negative],
        "chain": [unit(f) for f in e.chain_nodes],
        "text": e.text, "concept_text": e.concept_text or None,
        "phases_s": dict(outcome.phases),
        "forward_passes": outcome.forward_passes.to_dict(),
        "rendered_images": outcome.rendered_images.to_dict(),
        "report": outcome.report_path, "warehouse": outcome.warehouse,
    }  # fmt: skip


def print_outcome(outcome) -> None:  # type: ignore[no-untyped-def]
    from coin_scale.agent.budget import budget_hint
    from coin_scale.sweep.text import TERM_WORDS

    e = outcome.explanation
    for note in e.notes:
        print(f"NOTE: {note}")
    print(f"image: {e.image_path}")
    print(f"predicted: {e.class_name} (p={e.probability:.3f}); runners-up: "
          + ", ".join(f"{n} ({p:.3f})" for n, p in e.top_classes[1:]))  # fmt: skip
    how = {
        "exact_linear": "exact: fc weight x pooled activation",
        "exact_sae_decoder": "exact: fc weight . decoder direction x mean code",
    }.get(e.method, "gradient x activation")
    noun = "SAE features" if e.unit_kind == "sae" else "units"
    print(f"{noun} of {e.layer} driving logit {e.logit:.3f} ({how}):")
    for sign, findings in (("+", e.positive), ("-", e.negative)):
        for f in findings:
            label = (
                f"{f.label!r} (IoU {f.iou:.2f})"
                if f.label and f.iou is not None
                else (f.label or "-")
            )
            if f.label and f.confidence is not None:
                label = f"{f.label!r} ({f.explainer}, confidence {f.confidence:.2f})"
            if f.label and f.score_name == "soft_wpmi" and f.score is not None:
                label = f"{f.label!r} (clip, soft-WPMI {f.score:.2f})"
            if f.status == "failed":
                label = f"- ({f.reason}: {(f.error or '')[:100]})"
            print(f"  {sign} {e.unit_noun.split()[-1]} {f.unit:>5}  {f.contribution:+.4f}  {label}")
            if f.heldout is not None:
                print(f"      {f.heldout.summary()}")
            if f.generated is not None:
                print(f"      {f.generated.summary()}")
    hint = budget_hint(f.error for f in (*e.positive, *e.negative, *e.chain_nodes))
    if hint:
        print(f"  note: {hint}")
    for name, value in e.terms:
        print(f"  = {TERM_WORDS.get(name, name)}: {value:+.4f}  (in no {e.unit_noun})")
    if e.head_bias is not None:
        total = sum(f.contribution for f in e.positive + e.negative)
        parts = "".join(f" + {TERM_WORDS.get(n, n)}" for n, _ in e.terms)
        print(f"  ({noun} shown sum to {total:+.3f}; with the other {noun}{parts} and bias "
              f"{e.head_bias:+.3f}: {e.logit:.3f})")  # fmt: skip
    _print_chain(e)
    _print_scores(e)
    if any(f.heldout is not None for f in (*e.positive, *e.negative, *e.chain_nodes)):
        print(f"  held-out scores: coin-scale query --warehouse {outcome.warehouse} \"SELECT layer, "
              f"unit, metric, value FROM scores WHERE run_id = '{e.run_id}' AND test = 'heldout'\"")  # fmt: skip
    print()
    print(e.text)
    if e.concept_text:
        print()
        print(e.concept_text)
    print()
    if outcome.phases:
        total = sum(seconds for _, seconds in outcome.phases)
        print("time: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in outcome.phases)
              + f" (after loading the model; {total:.1f} s)")  # fmt: skip
    print(f"{outcome.forward_passes.words()}; {outcome.rendered_images.words()}")
    print(f"report: {outcome.report_path}")
    print(f"warehouse: {outcome.warehouse}  run_id: {e.run_id}  "
          f"(coin-scale query --warehouse {outcome.warehouse} \"SELECT * FROM class_explanations\")")  # fmt: skip


def _print_chain(e) -> None:  # type: ignore[no-untyped-def]
    from coin_scale.chain.faithfulness import margin_ratio

    by_layer: dict[str, list] = {}
    for node in e.chain_nodes:
        by_layer.setdefault(node.layer, []).append(node)
    for layer in reversed(e.layers[:-1]):
        nodes = sorted(by_layer.get(layer, []), key=lambda n: n.rank)
        print(f"  drivers in {layer} ({len(nodes)} units, {len(e.chain_edges)} edges in all):")
        for n in nodes[:8]:
            label = f"{n.label!r}" if n.label else "-"
            print(f"    unit {n.unit:>5}  {n.contribution:+.4f}  {label}")
        if len(nodes) > 8:
            print(f"    ... and {len(nodes) - 8} more")
    for layer in e.layers or (e.layer,):
        scores = [s for s in e.faithfulness if s.layer == layer and s.ablation == "zero"]
        if not scores:
            continue
        k = max(s.k for s in scores if s.layer == layer)
        if layer == e.layer and any(s.k == len(e.positive) for s in scores):
            k = len(e.positive)
        at = {s.selection: s for s in scores if s.k == k}
        print(
            f"  faithfulness, {layer}: zeroing the chain's top {k} drops the margin by "
            f"{at['chain'].margin_drop:.3f}; {k} random units {at['random'].margin_drop:.3f} "
            f"(+-{at['random'].margin_drop_std:.3f}, {at['random'].draws} draws); the {k} most "
            f"active {at['activation'].margin_drop:.3f}: {margin_ratio(scores, k):.1f}x random"
        )


def _print_scores(e) -> None:  # type: ignore[no-untyped-def]
    scored = [s for s in e.unit_scores if s.predictive is not None]
    if not e.unit_scores:
        return
    print(f"  explanation scores on {e.scoring_images} held-out rendered images "
          f"({len(scored)} of {len(e.unit_scores)} explanations scorable):")  # fmt: skip
    for s in scored:
        p, i = s.predictive, s.interp
        print(f"    {s.layer} #{s.unit:<5} AUC {p.auc:.2f}  d {p.cohens_d:+.2f}  F1 {p.detection.f1:.2f}"
              f"  AUPRC {p.detection.auprc:.2f}   S {i.S:.2f} C {i.C:.2f} R {i.R:.2f}"
              + (f" H {i.H:.2f}" if i.H is not None else "")
              + f"  InterpScore({'+'.join(i.parts)}) {i.score:.2f}")  # fmt: skip
    for s in e.unit_scores:
        if s.predictive is None:
            print(f"    {s.layer} #{s.unit:<5} not scored: {s.note}")


if __name__ == "__main__":
    sys.exit(main())
